"""Companion networks of the embedded model: world CLIP, the aesthetic head, attribute classifiers.

World CLIP plays the role CLIP plays for Stable Diffusion (text similarity, search,
image distances): a small CNN image encoder trained contrastively against a projection
of the MiniLM sentence embedding. The aesthetic head plays the role of LAION's
aesthetic predictor: an MLP on the L2-normalised world-CLIP image embedding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


@dataclass
class EncoderConfig:
    widths: tuple = (32, 64, 128, 256)
    input_size: int = 64


class ImageEncoder(nn.Module):
    """CNN: images `[B, 3, H, W]` in [0, 1] -> features `[B, widths[-1]]`.

    Inputs of another size are resized to `input_size` first (bilinear, differentiable),
    so metrics work on any resolution.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for w in cfg.widths:
            layers += [
                nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
                nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            ]
            c_in = w
        self.body = nn.Sequential(*layers)
        self.dim = c_in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.cfg.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        h = self.body(images * 2 - 1)
        return h.mean(dim=(2, 3))


@dataclass
class WorldClipConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_dim: int = 384
    embed_dim: int = 128


class WorldClip(nn.Module):
    """Image and text towers into one `embed_dim` space; cosine similarity compares them."""

    def __init__(self, cfg: WorldClipConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg.encoder)
        self.image_proj = nn.Linear(self.image_encoder.dim, cfg.embed_dim)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.text_dim), nn.GELU(), nn.Linear(cfg.text_dim, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), as CLIP starts

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` in [0, 1] -> unit vectors `[B, embed_dim]`."""
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mean-pooled MiniLM states `[B, 384]` -> unit vectors `[B, embed_dim]`."""
        return F.normalize(self.text_proj(pooled), dim=-1)


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as MiniLM's sentence-transformers head forms it: masked mean `[B, L, D] -> [B, D]`."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1)


class AestheticHead(nn.Module):
    """MLP on the unit world-CLIP image embedding -> score `[B]` (the rubric's 0..10 scale)."""

    def __init__(self, embed_dim: int = 128, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, 16), nn.GELU(), nn.Linear(16, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding).squeeze(-1)


@dataclass
class ClassifierConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    families: dict = field(default_factory=dict)  # family -> list of values


class AttributeClassifier(nn.Module):
    """One CNN trunk, one linear head per attribute family: images -> {family: logits `[B, n_values]`}."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg.encoder)
        self.heads = nn.ModuleDict({f: nn.Linear(self.encoder.dim, len(v)) for f, v in cfg.families.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encoder(images)
        return {f: head(h) for f, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict[str, str]]:
        """Most likely value of every family for each image."""
        logits = self(images)
        out = [dict() for _ in range(images.shape[0])]
        for fam, lg in logits.items():
            for i, k in enumerate(lg.argmax(-1).tolist()):
                out[i][fam] = self.cfg.families[fam][k]
        return out


def _config_from_dict(cls, data: dict):
    if cls is WorldClipConfig:
        return WorldClipConfig(encoder=EncoderConfig(**{**data["encoder"], "widths": tuple(data["encoder"]["widths"])}),
                               text_dim=data["text_dim"], embed_dim=data["embed_dim"])
    if cls is ClassifierConfig:
        return ClassifierConfig(encoder=EncoderConfig(**{**data["encoder"], "widths": tuple(data["encoder"]["widths"])}),
                                families=data["families"])
    return cls(**data)


def save_module(module: nn.Module, config, folder: str | Path) -> None:
    """`folder/config.json` + `folder/model.safetensors` (fp16 to keep the package small)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = config if isinstance(config, dict) else asdict(config)
    (folder / "config.json").write_text(json.dumps(data, indent=2))
    tensors = {k: v.detach().cpu().half().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
               for k, v in module.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"))


def load_world_clip(folder: str | Path, device="cpu") -> WorldClip:
    folder = Path(folder)
    cfg = _config_from_dict(WorldClipConfig, json.loads((folder / "config.json").read_text()))
    model = WorldClip(cfg)
    model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    return model.to(device).eval().requires_grad_(False)


def load_aesthetic_head(folder: str | Path, device="cpu") -> AestheticHead:
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    head = AestheticHead(**cfg)
    head.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    return head.to(device).eval().requires_grad_(False)


def load_attribute_classifier(folder: str | Path, device="cpu") -> AttributeClassifier:
    folder = Path(folder)
    cfg = _config_from_dict(ClassifierConfig, json.loads((folder / "config.json").read_text()))
    model = AttributeClassifier(cfg)
    model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    return model.to(device).eval().requires_grad_(False)
