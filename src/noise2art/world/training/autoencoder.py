"""Training of the embedded model's autoencoder (diffusers `AutoencoderKL`).

Loss: L1 on pixels plus an L1 on image gradients (keeps edges crisp: the plain L1
autoencoder blurred shape outlines), plus a tiny KL term so the latent space stays
smooth enough for diffusion, as in Stable Diffusion's KL-f8 autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from noise2art.world.training.common import RunLog, StageConfig, open_run, run_steps, training_device


@dataclass
class AutoencoderConfig(StageConfig):
    run_dir: str = "runs/autoencoder"
    channels: tuple = (32, 32, 64)  # 3 blocks: 4 pixels per latent cell
    norm_groups: int = 16
    # Self-attention in the 16x16 mid block doubled the step time on CPU for no visible
    # gain on this world (its images have no long-range structure the convs miss).
    mid_attention: bool = False
    latent_channels: int = 4
    steps: int = 2600
    batch_size: int = 32
    # Train on random crops: the autoencoder is fully convolutional, so crops teach it the
    # same local reconstruction at a quarter of the cost per sample (32 of 64 px).
    crop: int = 32
    # GroupNorm statistics of a crop differ from those of a whole image (colours came out
    # shifted on whole images), so the steps after `crop_steps` see whole images at half
    # the batch size.
    crop_steps: int = 2000
    lr: float = 1e-3
    edge_weight: float = 1.0
    kl_weight: float = 1e-6


def build_autoencoder(cfg: AutoencoderConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=1, sample_size=cfg.size,
        norm_num_groups=cfg.norm_groups, mid_block_add_attention=cfg.mid_attention,
    )


def random_crops(x: torch.Tensor, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """One random `crop` x `crop` window per image, on a multiple of 8 so latent cells stay aligned."""
    size = x.shape[-1]
    if crop >= size:
        return x
    offsets = rng.integers(0, (size - crop) // 8 + 1, (x.shape[0], 2)) * 8
    return torch.stack([img[:, i:i + crop, j:j + crop] for img, (i, j) in zip(x, offsets)])


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, edge_weight: float) -> torch.Tensor:
    loss = F.l1_loss(recon, x)
    for gr, gx in zip(image_gradients(recon), image_gradients(x)):
        loss = loss + edge_weight * F.l1_loss(gr, gx)
    return loss


def train(cfg: AutoencoderConfig, progress: bool = True):
    device = training_device()
    torch.manual_seed(cfg.seed)
    data = cfg.load_data()
    vae = build_autoencoder(cfg).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    modules = {"vae": vae}
    state = open_run(cfg.run_dir, cfg, modules, opt)
    rng = np.random.default_rng([cfg.seed, state.step])
    log = RunLog(state.run_dir, cfg.steps, state.step, "autoencoder", progress)
    vae.train()

    def step_loss(step: int):
        if step < cfg.crop_steps:
            x = random_crops(data.batch(rng.integers(0, len(data), cfg.batch_size), device), cfg.crop, rng)
        else:
            x = data.batch(rng.integers(0, len(data), max(1, cfg.batch_size // 2)), device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean()
        loss = reconstruction_loss(recon, x, cfg.edge_weight) + cfg.kl_weight * kl
        return loss, {"l1": F.l1_loss(recon.detach(), x).item(), "kl": kl.item() / x[0].numel()}

    run_steps(state, cfg, modules, opt, log, step_loss, clip=1.0)
    vae.eval()
    return vae


@torch.no_grad()
def latent_scale(vae, data, device, n: int = 2000, batch: int = 100) -> float:
    """1 / std of the latents, so scaled latents have unit variance (SD's `scaling_factor`)."""
    vals = []
    n = min(n, len(data))
    for start in range(0, n, batch):
        x = data.batch(np.arange(start, min(start + batch, n)), device)
        vals.append(vae.encode(x).latent_dist.mean.flatten())
    return float(1.0 / torch.cat(vals).std())

