"""noise2art: user-controlled image generation beyond prompt engineering.

The public entry points are re-exported here::

    import noise2art
    model = noise2art.load_model()            # the embedded model, offline
    emb = model.encode(["a red ball"])
    images = model.generate(emb, seeds=[0, 1, 2])
"""

from __future__ import annotations

__version__ = "0.1.0"

from noise2art.errors import Cancelled, InvalidArgument, ModelLoadError, Noise2ArtError

# The engine pulls in torch and diffusers; import it on first use so that light
# modules (the world renderer, the CLI's --help) start fast.
_LAZY = {
    "PromptEmbedding": "noise2art.engine.embedding",
    "load_model": "noise2art.engine.loading",
    "Model": "noise2art.engine.model",
    "SampleSettings": "noise2art.engine.settings",
    "SamplingOverrides": "noise2art.engine.settings",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'noise2art' has no attribute {name!r}")


__all__ = [
    "__version__",
    "Cancelled",
    "InvalidArgument",
    "Model",
    "ModelLoadError",
    "Noise2ArtError",
    "PromptEmbedding",
    "SampleSettings",
    "SamplingOverrides",
    "load_model",
]
