"""The words a feedback session draws on: the model's own (`Model.vocabulary`), else generic art terms.

The embedded model ships its world's words in `vocabulary.json` (term groups to steer
with, caption style phrases, caption vocabulary); a Stable Diffusion checkpoint has no
such file and gets the generic list. Calls without a model take the embedded model's
file, which is what every default meant before the vocabulary moved to the model.
"""

from __future__ import annotations

import json
from functools import lru_cache

__all__ = ["GENERIC_STYLE_TERMS", "default_style_terms", "default_term_groups", "default_vocabulary"]

GENERIC_STYLE_TERMS: tuple[str, ...] = (
    "digital art", "concept art", "matte painting", "illustration", "cinematic lighting", "studio lighting",
    "dramatic lighting", "soft light", "volumetric light", "trending on artstation", "octane render",
    "unreal engine", "4k", "8k", "award-winning", "bokeh", "film grain", "impressionism", "expressionism",
    "surrealism", "minimalism", "art nouveau", "baroque", "ukiyo-e", "cyberpunk", "steampunk", "fantasy art",
    "low poly", "isometric", "charcoal drawing", "ink drawing", "pastel colors", "monochrome", "high contrast",
    "wide angle", "macro", "symmetrical", "long exposure",
)

_UNSET = object()


@lru_cache(maxsize=1)
def _embedded_vocabulary() -> dict | None:
    from noise2art.engine.registry import DEFAULT_MODEL, embedded_path

    path = embedded_path(DEFAULT_MODEL) / "vocabulary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _vocabulary(model) -> dict | None:
    return _embedded_vocabulary() if model is _UNSET else getattr(model, "vocabulary", None)


def default_style_terms(model=_UNSET) -> list[str]:
    """The model's style and modifier phrases + generic art terms (generic only without a vocabulary)."""
    vocab = _vocabulary(model) or {}
    return list(dict.fromkeys([*vocab.get("style_terms", []), *GENERIC_STYLE_TERMS]))


def default_vocabulary(model=_UNSET) -> list[str] | None:
    """Words for random prompts: the model's caption vocabulary, or None (random letters) without one."""
    vocab = _vocabulary(model)
    return list(vocab["words"]) if vocab and vocab.get("words") else None


def default_term_groups(model=_UNSET) -> dict[str, list[str]]:
    """Terms to steer with, by group: the model's groups, else every generic term in a group of its own
    (they combine freely)."""
    vocab = _vocabulary(model)
    if vocab and vocab.get("groups"):
        return {group: list(terms) for group, terms in vocab["groups"].items()}
    return {term: [term] for term in GENERIC_STYLE_TERMS}
