"""Models that ship inside the package, by name.

The embedded model is the default: `load_model()` with no name loads it. Its folder has
the diffusers layout (`model_index.json`, `unet/`, `vae/`, `scheduler/`) plus
`noise2art.json`, which names the text encoder (a Python package that carries its
weights) and the prompt length.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

# name -> folder under src/noise2art/models
EMBEDDED: dict[str, str] = {"world-64": "world-64", "world-64-fast": "world-64-fast"}
ALIASES: dict[str, str] = {"embedded": "world-64", "default": "world-64"}
DEFAULT_MODEL = "world-64"


def canonical_name(name: str) -> str | None:
    """The registry name for `name` (resolving aliases), or None if it is not an embedded model."""
    name = ALIASES.get(name, name)
    return name if name in EMBEDDED else None


def embedded_path(name: str) -> Path:
    return MODELS_DIR / EMBEDDED[name]


def local_folder(name_or_path: str) -> Path:
    """The folder of embedded model `name_or_path` (aliases resolved), else the path itself."""
    name = canonical_name(str(name_or_path))
    return embedded_path(name) if name else Path(name_or_path).expanduser()


def known_names() -> list[str]:
    return sorted(set(EMBEDDED) | set(ALIASES))
