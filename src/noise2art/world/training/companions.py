"""Training of the companion networks: world CLIP, the aesthetic head, the attribute classifiers.

All three train on rendered images with simple augmentation-free supervised or
contrastive losses; each is small enough to train on a 2-core CPU in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noise2art.world.attributes import FAMILIES, is_defined
from noise2art.engine.companion_nets import (AestheticHead, AttributeClassifier, ClassifierConfig, WorldClip, WorldClipConfig,
                                  mean_pool)
from noise2art.world.training.common import RunLog, StageConfig, open_run, run_steps, training_device
from noise2art.world.training.data import prepare_data


def _images01(data, idx, device) -> torch.Tensor:
    return (data.batch(idx, device) + 1) / 2


# -- world CLIP -------------------------------------------------------------------------


@dataclass
class ClipConfig(StageConfig):
    run_dir: str = "runs/clip"
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    model: WorldClipConfig = field(default_factory=WorldClipConfig)
    # The UNet stage's cache of caption states (same captions, same order): pooling them
    # saves encoding every caption a second time.
    text_states: str | None = None


@torch.no_grad()
def pooled_caption_embeddings(captions: list[str], device, batch: int = 256,
                              states_cache: str | None = None) -> torch.Tensor:
    """Mean-pooled MiniLM sentence embeddings `[N, 384]` of the captions.

    With `states_cache` (a safetensors file whose "states" `[N(+1), L, 384]` are these
    captions' states), only the masks are recomputed by the tokenizer.
    """
    from noise2art.engine.loading import package_text_encoder
    from noise2art.world.training.unet import TEXT_SPEC

    encoder = package_text_encoder(TEXT_SPEC, device, torch.float32)
    if states_cache is not None and Path(states_cache).is_file():
        from safetensors.torch import load_file

        states = load_file(states_cache)["states"][: len(captions)]
        mask = encoder.tokenizer(captions, padding="max_length", max_length=encoder.max_length, truncation=True,
                                 return_tensors="pt")["attention_mask"]
        return torch.cat([mean_pool(states[s:s + 4096].float(), mask[s:s + 4096]) for s in range(0, len(captions), 4096)])
    out = []
    for start in range(0, len(captions), batch):
        enc = encoder(captions[start:start + batch], device, torch.float32)
        out.append(mean_pool(enc.states, enc.mask).cpu())
    return torch.cat(out)


def train_clip(cfg: ClipConfig, progress: bool = True) -> WorldClip:
    from safetensors.torch import load_file, save_file

    device = training_device()
    torch.manual_seed(cfg.seed)
    data = cfg.load_data()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = run_dir / "pooled.safetensors"
    k = len(data.captions[0])
    if cache.is_file():
        pooled = load_file(str(cache))["pooled"]
    else:
        pooled = pooled_caption_embeddings([c for caps in data.captions for c in caps], device,
                                           states_cache=cfg.text_states)
        save_file({"pooled": pooled}, str(cache))
    model = WorldClip(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    modules = {"clip": model}
    state = open_run(run_dir, cfg, modules, opt)
    rng = np.random.default_rng([cfg.seed, state.step])
    log = RunLog(run_dir, cfg.steps, state.step, "world clip", progress)
    model.train()

    def step_loss(step: int):
        idx = rng.choice(len(data), min(cfg.batch_size, len(data)), replace=False)
        cap = idx * k + rng.integers(0, k, len(idx))
        img = model.encode_image(_images01(data, idx, device))
        txt = model.encode_text(pooled[cap].to(device))
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        # Captions are underspecified, so several images in a batch can match one caption
        # equally well: targets are spread over every pair whose captions coincide.
        same = torch.tensor([[a == b for b in cap] for a in cap], device=device, dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        return loss, {}

    run_steps(state, cfg, modules, opt, log, step_loss)
    return model.eval()


# -- aesthetic head ---------------------------------------------------------------------


@dataclass
class AestheticConfig(StageConfig):
    run_dir: str = "runs/aesthetic"
    clip_run: str = "runs/clip"
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    checkpoint_every: int = 500


def train_aesthetic(cfg: AestheticConfig, clip: WorldClip, progress: bool = True) -> AestheticHead:
    from noise2art.world.rubric import rubric_score

    device = training_device()
    torch.manual_seed(cfg.seed)
    data = cfg.load_data()
    scores = torch.tensor([rubric_score(im, a) for im, a in zip(data.images, data.attributes)], dtype=torch.float32)
    with torch.no_grad():
        emb = torch.cat([clip.encode_image(_images01(data, np.arange(s, min(s + 500, len(data))), device)).cpu()
                         for s in range(0, len(data), 500)])
    n_val = len(data) // 10
    head = AestheticHead(clip.cfg.embed_dim).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
    modules = {"head": head}
    state = open_run(cfg.run_dir, cfg, modules, opt)
    rng = np.random.default_rng([cfg.seed, state.step])
    log = RunLog(state.run_dir, cfg.steps, state.step, "aesthetic", progress)
    def step_loss(step: int):
        idx = rng.integers(n_val, len(data), cfg.batch_size)
        loss = F.mse_loss(head(emb[idx].to(device)), scores[idx].to(device))
        values = {}
        if step % 100 == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                pred = head(emb[:n_val].to(device)).cpu()
            values["val_corr"] = float(torch.corrcoef(torch.stack([pred, scores[:n_val]]))[0, 1])
        return loss, values

    run_steps(state, cfg, modules, opt, log, step_loss, log_every=100)
    return head.eval()


# -- attribute classifiers --------------------------------------------------------------


@dataclass
class AttributesConfig(StageConfig):
    run_dir: str = "runs/attributes"
    val_images: int = 2000
    val_seed: int = 1
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3


def attribute_labels(attributes: list[dict]) -> dict[str, torch.Tensor]:
    """family -> `[N]` value indices, -100 where the family is absent or not visible."""
    out = {}
    for fam, values in FAMILIES.items():
        out[fam] = torch.tensor([values.index(a[fam]) if is_defined(fam, a) else -100 for a in attributes])
    return out


def train_attributes(cfg: AttributesConfig, progress: bool = True) -> tuple[AttributeClassifier, dict]:
    """Train the classifiers; returns them and their held-out accuracy per family."""
    device = training_device()
    torch.manual_seed(cfg.seed)
    data = cfg.load_data()
    val = prepare_data(cfg.data_dir, cfg.val_images, cfg.size, cfg.val_seed)
    labels, val_labels = attribute_labels(data.attributes), attribute_labels(val.attributes)
    model = AttributeClassifier(ClassifierConfig(families={f: list(v) for f, v in FAMILIES.items()})).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    modules = {"classifier": model}
    state = open_run(cfg.run_dir, cfg, modules, opt)
    rng = np.random.default_rng([cfg.seed, state.step])
    log = RunLog(state.run_dir, cfg.steps, state.step, "attributes", progress)
    model.train()

    def step_loss(step: int):
        idx = rng.integers(0, len(data), cfg.batch_size)
        logits = model(_images01(data, idx, device))
        loss = sum(F.cross_entropy(lg, labels[f][idx].to(device), ignore_index=-100) for f, lg in logits.items()
                   if (labels[f][idx] >= 0).any())
        return loss, {}

    run_steps(state, cfg, modules, opt, log, step_loss)
    model.eval()
    accuracy = classifier_accuracy(model, val, val_labels, device)
    log.log(cfg.steps, **{f"acc_{f}": a for f, a in accuracy.items()})
    return model, accuracy


@torch.no_grad()
def classifier_accuracy(model: AttributeClassifier, data, labels: dict, device) -> dict[str, float]:
    correct = {f: 0 for f in labels}
    count = {f: 0 for f in labels}
    for start in range(0, len(data), 500):
        idx = np.arange(start, min(start + 500, len(data)))
        logits = model(_images01(data, idx, device))
        for f, lg in logits.items():
            y = labels[f][idx].to(device)
            ok = y >= 0
            correct[f] += int((lg.argmax(-1)[ok] == y[ok]).sum())
            count[f] += int(ok.sum())
    return {f: correct[f] / count[f] for f in labels if count[f]}
