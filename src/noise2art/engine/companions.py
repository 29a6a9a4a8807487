"""Companion networks that ship beside a model (world CLIP, aesthetic head, attribute classifiers).

`noise2art.json` lists them under "companions" (name -> subfolder); each is loaded into
`Model.extras`. A model without companions (any Stable Diffusion checkpoint) simply has
none, and metrics that need one say what to load.
"""

from __future__ import annotations

from pathlib import Path

from noise2art.engine.companion_nets import load_aesthetic_head, load_attribute_classifier, load_world_clip

LOADERS = {
    "world_clip": load_world_clip,
    "aesthetic": load_aesthetic_head,
    "attributes": load_attribute_classifier,
}


def attach(model, folder: Path, spec: dict) -> None:
    """Load the companions named in `spec["companions"]` into `model.extras`."""
    for name, sub in spec.get("companions", {}).items():
        loader = LOADERS.get(name)
        if loader is not None and (folder / sub).is_dir():
            model.extras[name] = loader(folder / sub, model.device)


def world_clip_text(model, texts: list[str]):
    """Unit world-CLIP text embeddings `[B, E]` of `texts` (MiniLM mean-pooled, then projected)."""
    import torch

    from noise2art.engine.companion_nets import mean_pool

    clip = model.extras["world_clip"]
    with torch.no_grad():
        enc = model.text_encoder(list(texts), model.device, torch.float32)
        return clip.encode_text(mean_pool(enc.states.float(), enc.mask))


def aesthetic_scorer(model):
    """`images [B,3,H,W] in [0,1] -> [B]` from the shipped aesthetic head, or a loaded LAION scorer; else None."""
    if "laion_aesthetic" in model.extras:
        return model.extras["laion_aesthetic"]
    if "world_clip" in model.extras and "aesthetic" in model.extras:
        clip, head = model.extras["world_clip"], model.extras["aesthetic"]
        return lambda images: head(clip.encode_image(images.float()))
    return None


def image_text_scorer(model):
    """`(images, text) -> [B]` cosine similarity in world-CLIP space; None without world CLIP."""
    if "world_clip" not in model.extras:
        return None
    clip = model.extras["world_clip"]

    def score(images, text: str):
        return clip.encode_image(images.float()) @ world_clip_text(model, [text])[0]

    return score
