"""Captions of world images, and the parser that reads attributes back out of text.

The grammar names each attribute with some probability, picks one of several
synonymous phrases for it, shuffles the phrases and joins them with commas,
"with" and "and". An attribute left out of a caption is free to vary, so an
underspecified prompt gives diverse images across seeds, as with a real model.

All words live in one table, `PHRASES` (plus the small noun and adjective tables
the compound phrases are built from); the generator and the parser both read it,
so whatever `make_caption` writes, `parse` reads back::

    cap = make_caption(attrs, rng)
    assert parse(cap.text) == cap.named

``named`` holds the families the caption determines; ``scene`` counts as named
whenever any landscape or still-life family is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from noise2art.world.attributes import (
    FAMILIES,
    LANDSCAPE,
    SCENE_FAMILIES,
    SCENES,
    Attributes,
    validate_attributes,
)

# ------------------------------------------------------------------------- vocabulary

# (family, value) -> phrases naming it. Articles are part of the phrase.
PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("scene", "landscape"): ("a landscape", "a scenic view", "scenery", "a nature scene", "an outdoor scene"),
    ("scene", "still_life"): ("a still life", "a still life study", "a studio shot", "an object study"),
    ("time", "day"): ("daytime", "a sunny day", "midday", "noon", "broad daylight", "a blue sky"),
    ("time", "sunrise"): ("sunrise", "dawn", "daybreak", "early morning", "at sunrise", "at dawn"),
    ("time", "sunset"): ("sunset", "dusk", "evening", "at sunset", "at dusk", "golden hour"),
    ("time", "night"): ("night", "at night", "nighttime", "a starry night", "moonlight"),
    ("time", "overcast"): ("overcast", "an overcast sky", "a grey sky", "an overcast day", "gloomy weather"),
    ("mountains", "none"): ("no mountains", "without mountains"),
    ("water", "none"): ("no water", "without water", "dry land"),
    ("water", "lake"): ("a lake", "a pond", "a calm lake", "a small lake"),
    ("water", "river"): ("a river", "a stream", "a winding river", "a creek"),
    ("water", "sea"): ("the sea", "the ocean", "a calm sea", "the seaside"),
    ("ground", "meadow"): ("a meadow", "a grassy meadow", "green fields", "grassland", "a field of grass"),
    ("ground", "desert"): ("a desert", "sand dunes", "a sandy desert", "desert sand"),
    ("ground", "snow"): ("a snowfield", "snowy fields", "snow-covered ground", "a snowy plain", "a winter field"),
    ("trees", "none"): ("no trees", "without trees", "treeless"),
    ("trees", "few"): ("a few trees", "some trees", "scattered trees", "a couple of trees"),
    ("trees", "forest"): ("a forest", "woods", "a dense forest", "woodland", "a pine forest"),
    ("clouds", "none"): ("a clear sky", "a cloudless sky", "no clouds", "without clouds"),
    ("clouds", "some"): ("clouds", "some clouds", "fluffy clouds", "a cloudy sky", "scattered clouds"),
    ("shape", "ball"): ("ball", "sphere", "orb"),
    ("shape", "cube"): ("cube", "box", "block"),
    ("shape", "pyramid"): ("pyramid",),
    ("color", "red"): ("red", "crimson", "scarlet"),
    ("color", "orange"): ("orange", "tangerine"),
    ("color", "yellow"): ("yellow", "lemon yellow"),
    ("color", "green"): ("green", "emerald"),
    ("color", "blue"): ("blue", "cobalt blue", "azure"),
    ("color", "purple"): ("purple", "violet"),
    ("color", "pink"): ("pink", "light pink"),
    ("color", "brown"): ("brown", "chocolate brown"),
    ("color", "white"): ("white", "ivory"),
    ("color", "black"): ("black", "jet black"),
    ("background", "plain"): ("a plain background", "a plain backdrop", "a simple background", "an empty background"),
    ("background", "gradient"): ("a gradient background", "a gradient backdrop", "a smooth gradient", "a color gradient"),
    ("style", "photo"): ("a photo", "a photograph", "photorealistic", "a realistic photo", "a dslr photo"),
    ("style", "flat"): ("a flat illustration", "flat design", "vector art", "a flat vector illustration"),
    ("style", "oil"): ("an oil painting", "oil on canvas", "painted in oils", "oil paint"),
    ("style", "watercolor"): ("a watercolor", "a watercolor painting", "a watercolour painting", "an aquarelle"),
    ("style", "pixel"): ("pixel art", "8-bit", "8-bit pixel art", "retro pixel art", "pixelated"),
    ("style", "sketch"): ("a pencil sketch", "a drawing", "a pencil drawing", "a graphite sketch", "a sketch"),
    ("modifier", "detailed"): ("highly detailed", "intricate", "intricate details", "detailed", "sharp focus"),
    ("modifier", "blurry"): ("blurry", "out of focus", "blurred", "soft focus"),
    ("modifier", "vibrant"): ("vibrant", "vivid colors", "saturated", "colorful", "vibrant colors"),
    ("modifier", "muted"): ("muted colors", "muted", "desaturated", "washed out", "faded"),
    ("modifier", "dark"): ("dark", "dimly lit", "low key", "underexposed"),
}

# Mountains are named as [article] [snow adjective] noun, so that snow is only
# ever named together with the mountains it caps.
MOUNTAIN_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "one": (("a", "mountain"), ("a", "lone peak"), ("a", "single mountain"), ("one", "mountain")),
    "range": (("a", "mountain range"), ("", "mountains"), ("", "peaks"), ("a", "mountain chain")),
}
SNOW_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "yes": ("snow-capped", "snowy", "snow-covered"),
    "no": ("bare", "rocky", "snowless"),
}
# ... or as noun + suffix: "a mountain without snow".
SNOW_SUFFIXES: dict[str, tuple[str, ...]] = {
    "yes": ("with snow on top", "with snow on the peaks"),
    "no": ("without snow", "with no snow"),
}
# A still life can stress a single colour without naming it.
UNNAMED_COLOR_TEMPLATES: tuple[str, ...] = (
    "a {shape}",
    "a single color {shape}",
    "a single-colored {shape}",
    "a solid color {shape}",
    "a {shape} of a single color",
)
COLOR_ONLY_TEMPLATES: tuple[str, ...] = ("a {color} object", "something {color}", "an object in {color}")
COLOR_SHAPE_TEMPLATES: tuple[str, ...] = ("a {color} {shape}", "a {color} {shape}", "a {shape} in {color}")
BACKGROUND_PREFIXES: tuple[str, ...] = ("", "on", "against", "in front of")
CONNECTORS: tuple[str, ...] = (", ", ", ", " with ", " and ")
STYLE_OF = " of "

# Words the parser passes over: articles, connectors and prepositions.
FILLER_WORDS = frozenset({"a", "an", "the", "of", "with", "and", "on", "in", "at", "against", "front", "some"})
NEGATIONS = frozenset({"no", "without", "not"})
# Spelling variants folded before lookup.
TOKEN_ALIASES: dict[str, str] = {
    "colour": "color",
    "colours": "colors",
    "coloured": "colored",
    "gray": "grey",
    "watercolour": "watercolor",
    "watercolours": "watercolor",
}

# Probability that a caption names a family (when it may name it at all).
NAME_PROBABILITY: dict[str, float] = {
    "scene": 0.5,
    "time": 0.7,
    "mountains": 0.7,
    "snow": 0.6,
    "water": 0.7,
    "ground": 0.65,
    "trees": 0.65,
    "clouds": 0.6,
    "shape": 0.8,
    "color": 0.75,
    "background": 0.5,
    "style": 0.65,
    "modifier": 0.75,
}


# ---------------------------------------------------------------------------- caption


@dataclass(frozen=True)
class Caption:
    """A caption and the attributes it names (a subset of the image's attributes)."""

    text: str
    named: Attributes = field(default_factory=dict)


def _is_noun_phrase(phrase: str) -> bool:
    return phrase.startswith(("a ", "an ", "the ", "some "))


def _fix_articles(text: str) -> str:
    """'a' before a vowel becomes 'an' (synonyms are swapped in after the article)."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _mountain_phrase(rng: np.random.Generator, mountains: str, snow: str | None) -> str:
    article, noun = _pick(rng, MOUNTAIN_NOUNS[mountains])
    if snow and rng.random() < 0.25:
        return " ".join(w for w in (article, noun, _pick(rng, SNOW_SUFFIXES[snow])) if w)
    adjective = _pick(rng, SNOW_ADJECTIVES[snow]) if snow else ""
    if article == "one" and adjective:
        article = "a"
    return " ".join(w for w in (article, adjective, noun) if w)


def _still_life_phrase(rng: np.random.Generator, shape: str | None, color: str | None) -> str:
    if shape and color:
        template = _pick(rng, COLOR_SHAPE_TEMPLATES)
    elif shape:
        template = _pick(rng, UNNAMED_COLOR_TEMPLATES)
    else:
        template = _pick(rng, COLOR_ONLY_TEMPLATES)
    return template.format(
        shape=_pick(rng, PHRASES[("shape", shape)]) if shape else "",
        color=_pick(rng, PHRASES[("color", color)]) if color else "",
    )


def make_caption(
    attributes: Mapping[str, str],
    rng: np.random.Generator,
    name_probability: Mapping[str, float] | None = None,
) -> Caption:
    """Describe an image's attributes in a random caption.

    Each family is named with probability ``name_probability[family]`` (default
    `NAME_PROBABILITY`; 1.0 everywhere names everything), by one of its synonyms;
    phrases come in random order. At least one attribute is always named.
    """
    attrs = validate_attributes(attributes)
    p = {**NAME_PROBABILITY, **(name_probability or {})}
    scene = attrs["scene"]
    named: Attributes = {}
    phrases: list[str] = []

    def say(family: str) -> bool:
        return bool(rng.random() < p[family])

    if scene == LANDSCAPE:
        for family in ("time", "water", "ground", "trees", "clouds"):
            value = attrs[family]
            if not say(family):
                continue
            options = PHRASES[(family, value)]
            if family == "clouds" and attrs["time"] == "overcast":
                options = tuple(o for o in options if "clear" not in o and "cloudless" not in o)
            named[family] = value
            phrases.append(_pick(rng, options))
        if say("mountains"):
            named["mountains"] = attrs["mountains"]
            if attrs["mountains"] == "none":
                phrases.append(_pick(rng, PHRASES[("mountains", "none")]))
            else:
                snow = attrs["snow"] if say("snow") else None
                if snow:
                    named["snow"] = snow
                phrases.append(_mountain_phrase(rng, attrs["mountains"], snow))
    else:
        shape = attrs["shape"] if say("shape") else None
        color = attrs["color"] if say("color") else None
        if shape or color:
            phrases.append(_still_life_phrase(rng, shape, color))
            named.update({k: v for k, v in (("shape", shape), ("color", color)) if v})
        if say("background"):
            named["background"] = attrs["background"]
            prefix = _pick(rng, BACKGROUND_PREFIXES)
            phrases.append(f"{prefix} {_pick(rng, PHRASES[('background', attrs['background'])])}".strip())
    if attrs["modifier"] != "none" and say("modifier"):
        named["modifier"] = attrs["modifier"]
        phrases.append(_pick(rng, PHRASES[("modifier", attrs["modifier"])]))

    rng.shuffle(phrases)
    scene_said = say("scene") or not phrases
    if scene_said:
        phrases.insert(0 if rng.random() < 0.7 else len(phrases), _pick(rng, PHRASES[("scene", scene)]))
    if scene_said or any(f in SCENE_FAMILIES[scene] for f in named):
        named["scene"] = scene

    style_prefix = None
    if say("style"):
        named["style"] = attrs["style"]
        style = _pick(rng, PHRASES[("style", attrs["style"])])
        if _is_noun_phrase(style) and _is_noun_phrase(phrases[0]) and rng.random() < 0.5:
            style_prefix = style  # "an oil painting of a lake, ..."
        else:
            phrases.insert(int(rng.integers(len(phrases) + 1)), style)

    text = phrases[0]
    for phrase in phrases[1:]:
        # "with" and "and" only before noun phrases ("with a lake", not "with dusk").
        connector = _pick(rng, CONNECTORS) if _is_noun_phrase(phrase) else ", "
        text += connector + phrase
    if style_prefix:
        text = style_prefix + STYLE_OF + text
    text = _fix_articles(text)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return Caption(text=text, named=_in_schema_order(named))


def _in_schema_order(attrs: Attributes) -> Attributes:
    order = list(FAMILIES)
    return dict(sorted(attrs.items(), key=lambda kv: order.index(kv[0])))


def caption(attributes: Mapping[str, str], rng: np.random.Generator) -> str:
    """Caption text only; see `make_caption` for which attributes it names."""
    return make_caption(attributes, rng).text


# ----------------------------------------------------------------------------- parser


def _tokens(text: str) -> list[str]:
    return [TOKEN_ALIASES.get(t, t) for t in re.findall(r"[a-z0-9]+", text.lower())]


def _build_table() -> dict[tuple[str, ...], Attributes]:
    table: dict[tuple[str, ...], Attributes] = {}

    def add(phrase: str, attrs: Attributes) -> None:
        key = tuple(t for t in _tokens(phrase) if t not in FILLER_WORDS)
        if key in table and table[key] != attrs:
            raise ValueError(f"phrase {phrase!r} names both {table[key]} and {attrs}")
        table[key] = attrs

    for (family, value), phrases in PHRASES.items():
        for phrase in phrases:
            add(phrase, {family: value})
    for mountains, nouns in MOUNTAIN_NOUNS.items():
        for article, noun in nouns:
            add(f"{article} {noun}", {"mountains": mountains})
            for snow, adjectives in SNOW_ADJECTIVES.items():
                for adjective in adjectives:
                    add(f"{adjective} {noun}", {"mountains": mountains, "snow": snow})
    for snow, suffixes in SNOW_SUFFIXES.items():
        for suffix in suffixes:
            add(suffix, {"snow": snow})
    return table


PARSE_TABLE: dict[tuple[str, ...], Attributes] = _build_table()
"""Token tuple (fillers removed) -> the attributes that phrase names."""
_LONGEST = max(len(k) for k in PARSE_TABLE)
_NONE_VALUE = {f: "none" for f, values in FAMILIES.items() if "none" in values and f != "modifier"}


def parse(text: str) -> Attributes:
    """Read the attributes a free-text prompt names.

    Keyword and synonym based: case, punctuation and word order do not matter,
    "colour"/"gray" spellings and plurals are folded, and "no X" / "without X"
    sets X's family to none. The first mention of a family wins. ``scene`` is
    added whenever a landscape or still-life family is named. Unknown words are
    ignored, so ``parse("")`` is ``{}``.
    """
    result: Attributes = {}
    for segment in re.split(r"[.,;:!?()\[\]{}\n]+", text):
        tokens = _tokens(segment)
        tokens = [t[:-1] if t.endswith("s") and (t[:-1],) in PARSE_TABLE and (t,) not in PARSE_TABLE else t for t in tokens]
        words = [t for t in tokens if t not in FILLER_WORDS]
        # negate counts down the unknown words a "no"/"without" may reach over
        # ("without any trees").
        i, negate = 0, 0
        while i < len(words):
            for length in range(min(_LONGEST, len(words) - i), 0, -1):
                found = PARSE_TABLE.get(tuple(words[i : i + length]))
                if found is not None:
                    break
            else:
                negate = 3 if words[i] in NEGATIONS else max(0, negate - 1)
                i += 1
                continue
            if negate:
                family = next((f for f in found if f in _NONE_VALUE), None)
                found = {family: _NONE_VALUE[family]} if family else found
            for family, value in found.items():
                result.setdefault(family, value)
            negate = 0
            i += length
    if "scene" not in result:
        for family in result:
            scene = next((s for s in SCENES if family in SCENE_FAMILIES[s]), None)
            if scene:
                result["scene"] = scene
                break
    return _in_schema_order(result)


# ------------------------------------------------------------------------- vocabulary


def _vocabulary() -> list[str]:
    texts: list[str] = [p for phrases in PHRASES.values() for p in phrases]
    texts += [f"{a} {n}" for nouns in MOUNTAIN_NOUNS.values() for a, n in nouns]
    texts += [a for adjectives in SNOW_ADJECTIVES.values() for a in adjectives]
    texts += [a for suffixes in SNOW_SUFFIXES.values() for a in suffixes]
    texts += list(UNNAMED_COLOR_TEMPLATES + COLOR_ONLY_TEMPLATES + COLOR_SHAPE_TEMPLATES + BACKGROUND_PREFIXES)
    texts += list(CONNECTORS) + [STYLE_OF, "an"]
    texts = [re.sub(r"\{\w+\}", " ", t) for t in texts]  # template slots are not words
    return sorted({w for t in texts for w in re.findall(r"[a-z0-9-]+", t.lower())})


VOCABULARY: list[str] = _vocabulary()
"""Every word the caption grammar can produce, sorted."""
