"""The attribute schema of the procedural world, as data.

Every rendered image is fully described by a flat ``dict[str, str]`` that maps a
*family* (``"time"``, ``"shape"``, ...) to one of its *values*. Which families a
dict holds depends on its scene: landscapes and still lifes have their own
families, ``style`` and ``modifier`` apply to both.

The priors are those of the training set: scenes about 50/50, sketch rare (colour
is undefined in a grayscale sketch), half of the images without a modifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from noise2art.errors import InvalidArgument

Attributes = dict[str, str]


@dataclass(frozen=True)
class Family:
    """One attribute family: its values, the prior over them, and its scenes."""

    name: str
    values: tuple[str, ...]
    prior: tuple[float, ...]
    scenes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.prior) or abs(sum(self.prior) - 1.0) > 1e-9:
            raise ValueError(f"family {self.name}: prior must match values and sum to 1")


LANDSCAPE = "landscape"
STILL_LIFE = "still_life"
SCENES = (LANDSCAPE, STILL_LIFE)
_BOTH = SCENES

# Order matters: sampling draws families in this order, so keep it fixed for
# reproducibility of `sample_attributes` across versions.
SCHEMA: tuple[Family, ...] = (
    Family("scene", SCENES, (0.5, 0.5), _BOTH),
    Family(
        "time",
        ("day", "sunrise", "sunset", "night", "overcast"),
        (0.24, 0.19, 0.19, 0.19, 0.19),
        (LANDSCAPE,),
    ),
    Family("mountains", ("none", "one", "range"), (0.3, 0.35, 0.35), (LANDSCAPE,)),
    Family("snow", ("yes", "no"), (0.5, 0.5), (LANDSCAPE,)),
    Family("water", ("none", "lake", "river", "sea"), (0.28, 0.24, 0.24, 0.24), (LANDSCAPE,)),
    Family("ground", ("meadow", "desert", "snow"), (0.45, 0.27, 0.28), (LANDSCAPE,)),
    Family("trees", ("none", "few", "forest"), (0.34, 0.33, 0.33), (LANDSCAPE,)),
    Family("clouds", ("none", "some"), (0.5, 0.5), (LANDSCAPE,)),
    Family("shape", ("ball", "cube", "pyramid"), (1 / 3, 1 / 3, 1 / 3), (STILL_LIFE,)),
    Family(
        "color",
        ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "black"),
        (0.1,) * 10,
        (STILL_LIFE,),
    ),
    Family("background", ("plain", "gradient"), (0.5, 0.5), (STILL_LIFE,)),
    Family(
        "style",
        ("photo", "flat", "oil", "watercolor", "pixel", "sketch"),
        (0.28, 0.16, 0.16, 0.16, 0.16, 0.08),
        _BOTH,
    ),
    Family(
        "modifier",
        ("none", "detailed", "blurry", "vibrant", "muted", "dark"),
        (0.5, 0.1, 0.1, 0.1, 0.1, 0.1),
        _BOTH,
    ),
)

FAMILY: dict[str, Family] = {f.name: f for f in SCHEMA}
"""Family name -> `Family` record."""

FAMILIES: dict[str, tuple[str, ...]] = {f.name: f.values for f in SCHEMA}
"""Family name -> its values, in schema order."""

COMMON_FAMILIES: tuple[str, ...] = ("style", "modifier")
"""Families every scene has besides ``scene`` itself."""

SCENE_FAMILIES: dict[str, tuple[str, ...]] = {
    scene: tuple(f.name for f in SCHEMA if f.scenes == (scene,)) for scene in SCENES
}
"""Scene -> the families only that scene has."""

# Colour has no meaning in a grayscale sketch; classifiers and evaluations skip it there.
UNDEFINED_UNDER: dict[str, tuple[tuple[str, str], ...]] = {
    "color": (("style", "sketch"),),
    "snow": (("mountains", "none"),),
}


def families_for(scene: str) -> tuple[str, ...]:
    """All families an attribute dict of this scene holds, ``scene`` first."""
    if scene not in SCENES:
        raise InvalidArgument("scene", f"must be one of {', '.join(SCENES)}, got {scene!r}")
    return ("scene",) + SCENE_FAMILIES[scene] + COMMON_FAMILIES


def is_defined(family: str, attributes: Mapping[str, str]) -> bool:
    """Whether ``family`` is visible in an image with these attributes.

    False for colour under sketch and for snow without mountains: evaluations
    should not score those pairs.
    """
    if family not in attributes:
        return False
    return not any(attributes.get(f) == v for f, v in UNDEFINED_UNDER.get(family, ()))


def validate_attributes(attributes: Mapping[str, str], *, complete: bool = True) -> Attributes:
    """Check an attribute dict against the schema and return a plain copy.

    With ``complete`` every family of the scene must be present; without it a
    partial dict (as `captions.parse` returns) passes as long as what it holds
    is valid and belongs to one scene. Raises `InvalidArgument` naming the family.
    ``snow=yes`` with ``mountains=none`` is accepted and draws no snow: see `is_defined`.
    """
    attrs = dict(attributes)
    for name, value in attrs.items():
        if name not in FAMILIES:
            raise InvalidArgument(name, f"unknown attribute family; known: {', '.join(FAMILIES)}")
        if value not in FAMILIES[name]:
            raise InvalidArgument(name, f"must be one of {', '.join(FAMILIES[name])}, got {value!r}")
    scene = attrs.get("scene")
    scenes_named = {s for s in SCENES for f in SCENE_FAMILIES[s] if f in attrs}
    if len(scenes_named) > 1:
        raise InvalidArgument("scene", "attributes mix landscape and still-life families")
    if scene is None and scenes_named:
        scene = scenes_named.pop()
    elif scene is not None and scenes_named and scenes_named != {scene}:
        raise InvalidArgument("scene", f"{scene} has no family {sorted(set(attrs) - set(families_for(scene)))}")
    if complete:
        if scene is None:
            raise InvalidArgument("scene", "missing")
        missing = [f for f in families_for(scene) if f not in attrs]
        if missing:
            raise InvalidArgument(missing[0], f"missing for scene {scene}")
        attrs["scene"] = scene
    return attrs


def sample_attributes(rng: np.random.Generator, given: Mapping[str, str] | None = None) -> Attributes:
    """Draw a complete attribute dict from the world's priors.

    ``given`` fixes some families (a partial dict, e.g. from `captions.parse`);
    the others are drawn conditioned on them. Every family is drawn in schema
    order whether fixed or not, so fixing one family never shifts the others'
    draws for the same ``rng`` state.
    """
    fixed = validate_attributes(given or {}, complete=False)
    drawn: Attributes = {}
    for family in SCHEMA:
        drawn[family.name] = family.values[rng.choice(len(family.values), p=family.prior)]
    scene = fixed.get("scene") or next(
        (s for s in SCENES if any(f in fixed for f in SCENE_FAMILIES[s])), drawn["scene"]
    )
    attrs = {f: fixed.get(f, drawn[f]) for f in families_for(scene)}
    attrs["scene"] = scene
    if scene == LANDSCAPE and attrs["mountains"] == "none" and "snow" not in fixed:
        attrs["snow"] = "no"
    return validate_attributes(attrs)
