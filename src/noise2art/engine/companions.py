"""Companion networks that ship beside a model (world CLIP, aesthetic head, attribute classifiers).

`noise2art.json` lists them under "companions" (name -> subfolder); each is loaded into
`Model.companions`, a `Companions` with one typed field per kind. A model without
companions (any Stable Diffusion checkpoint) simply has none, and metrics that need one
say what to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from noise2art.engine.companion_nets import (
    AestheticHead,
    AttributeClassifier,
    WorldClip,
    load_aesthetic_head,
    load_attribute_classifier,
    load_world_clip,
)

LOADERS = {
    "world_clip": load_world_clip,
    "aesthetic": load_aesthetic_head,
    "attributes": load_attribute_classifier,
}


@dataclass
class Companions:
    """The networks a model carries besides its denoiser; each None when it has none.

    Attributes:
        world_clip: the embedded model's image-text encoder (`WorldClip`).
        aesthetic: the embedded model's aesthetic head over world-CLIP image features.
        attributes: the embedded model's attribute classifiers (`predict(images)`).
        laion_aesthetic: `images [B, 3, H, W] in [0, 1] -> [B]`, a LAION aesthetic scorer
            for Stable Diffusion (`metrics.load_laion_aesthetic`); set it to score with it.
        clip_vision: `images -> [B, E]` features of a CLIP vision model; set it to measure
            image distances with it (it takes precedence over world CLIP).
    """

    world_clip: WorldClip | None = None
    aesthetic: AestheticHead | None = None
    attributes: AttributeClassifier | None = None
    laion_aesthetic: Callable | None = None
    clip_vision: Callable | None = None

    def loaded(self) -> list[str]:
        """The names of the companions present."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def attach(model, folder: Path, spec: dict) -> None:
    """Load the companions named in `spec["companions"]` into `model.companions`."""
    for name, sub in spec.get("companions", {}).items():
        loader = LOADERS.get(name)
        if loader is not None and (folder / sub).is_dir():
            setattr(model.companions, name, loader(folder / sub, model.device))


def world_clip_text(model, texts: list[str]):
    """Unit world-CLIP text embeddings `[B, E]` of `texts` (MiniLM mean-pooled, then projected)."""
    import torch

    from noise2art.engine.companion_nets import mean_pool

    clip = model.companions.world_clip
    with torch.no_grad():
        enc = model.text_encoder(list(texts), model.device, torch.float32)
        return clip.encode_text(mean_pool(enc.states.float(), enc.mask))


def aesthetic_scorer(model):
    """`images [B,3,H,W] in [0,1] -> [B]` from the shipped aesthetic head, or a loaded LAION scorer; else None."""
    c = model.companions
    if c.laion_aesthetic is not None:
        return c.laion_aesthetic
    if c.world_clip is not None and c.aesthetic is not None:
        clip, head = c.world_clip, c.aesthetic
        return lambda images: head(clip.encode_image(images.float()))
    return None


def image_text_scorer(model):
    """`(images, text) -> [B]` cosine similarity in world-CLIP space; None without world CLIP."""
    clip = model.companions.world_clip
    if clip is None:
        return None

    def score(images, text: str):
        return clip.encode_image(images.float()) @ world_clip_text(model, [text])[0]

    return score
