"""Companion networks that ship beside a model (world CLIP, aesthetic head, attribute classifiers).

`noise2art.json` may list them under "companions"; each is loaded into `Model.extras`.
A model without companions (any Stable Diffusion checkpoint) simply has none, and
metrics that need one say what to load.
"""

from __future__ import annotations

from pathlib import Path


def attach(model, folder: Path, spec: dict) -> None:
    """Load the companions named in `spec["companions"]` (name -> subfolder) into `model.extras`."""
    for name, sub in spec.get("companions", {}).items():
        loader = LOADERS.get(name)
        if loader is not None and (folder / sub).is_dir():
            model.extras[name] = loader(folder / sub, model.device)


# name -> callable(folder, device) -> module; filled by the modules that define companions.
LOADERS: dict = {}
