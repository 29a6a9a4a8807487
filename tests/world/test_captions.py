"""Caption grammar and parser: the round trip, synonyms, word order, negatives."""

from __future__ import annotations

import re

import numpy as np
import pytest

from noise2art.world.attributes import FAMILIES, sample_attributes
from noise2art.world.captions import PHRASES, VOCABULARY, caption, make_caption, parse


def test_round_trip_over_random_attributes():
    rng = np.random.default_rng(0)
    for _ in range(4000):
        attrs = sample_attributes(rng)
        cap = make_caption(attrs, rng)
        assert parse(cap.text) == cap.named, cap.text
        assert cap.named.items() <= attrs.items()
        assert cap.named, "every caption names something"


def test_round_trip_when_everything_is_named():
    rng = np.random.default_rng(1)
    everything = {f: 1.0 for f in FAMILIES}
    for _ in range(500):
        attrs = sample_attributes(rng)
        cap = make_caption(attrs, rng, everything)
        expected = {k: v for k, v in attrs.items() if k != "modifier" or v != "none"}
        if attrs.get("mountains") == "none":
            del expected["snow"]
        assert cap.named == expected == parse(cap.text), cap.text


def test_attributes_are_left_out_at_random():
    rng = np.random.default_rng(2)
    # (family, share of all captions naming it): scene families are in half the captions
    expected = {"time": 0.35, "water": 0.35, "color": 0.37, "shape": 0.4, "style": 0.65}
    n = 800
    counts = dict.fromkeys(expected, 0)
    for _ in range(n):
        cap = make_caption(sample_attributes(rng), rng)
        for f in counts:
            counts[f] += f in cap.named
    for f, share in expected.items():
        assert abs(counts[f] / n - share) < 0.08, f


def test_caption_is_deterministic_per_rng_state():
    attrs = sample_attributes(np.random.default_rng(3))
    assert caption(attrs, np.random.default_rng(7)) == caption(attrs, np.random.default_rng(7))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("an orb", {"shape": "ball"}),
        ("a sphere", {"shape": "ball"}),
        ("a box", {"shape": "cube"}),
        ("crimson", {"color": "red"}),
        ("violet", {"color": "purple"}),
        ("dusk", {"time": "sunset"}),
        ("in the evening", {"time": "sunset"}),
        ("dawn", {"time": "sunrise"}),
        ("a starry night", {"time": "night"}),
        ("a grey sky", {"time": "overcast"}),
        ("a gray sky", {"time": "overcast"}),
        ("peaks", {"mountains": "range"}),
        ("a mountain range", {"mountains": "range"}),
        ("a lone peak", {"mountains": "one"}),
        ("a pond", {"water": "lake"}),
        ("the ocean", {"water": "sea"}),
        ("a creek", {"water": "river"}),
        ("woods", {"trees": "forest"}),
        ("sand dunes", {"ground": "desert"}),
        ("a snowfield", {"ground": "snow"}),
        ("oil on canvas", {"style": "oil"}),
        ("8-bit", {"style": "pixel"}),
        ("a pencil drawing", {"style": "sketch"}),
        ("a watercolour painting", {"style": "watercolor"}),
        ("intricate", {"modifier": "detailed"}),
        ("out of focus", {"modifier": "blurry"}),
        ("washed out", {"modifier": "muted"}),
    ],
)
def test_synonyms(text, expected):
    got = parse(text)
    assert {k: v for k, v in got.items() if k != "scene"} == expected


def test_single_color_ball_names_no_color():
    for text in ("single color ball", "a single-colored ball", "A ball of a single colour."):
        assert parse(text) == {"scene": "still_life", "shape": "ball"}


def test_unnamed_color_captions_are_produced():
    rng = np.random.default_rng(4)
    still = {"scene": "still_life", "shape": "ball", "color": "red", "background": "plain",
             "style": "photo", "modifier": "none"}  # fmt: skip
    texts = [make_caption(still, rng) for _ in range(300)]
    colorless = [c.text for c in texts if "shape" in c.named and "color" not in c.named]
    assert any("single" in t for t in colorless)
    assert all(not {"red", "crimson", "scarlet"} & set(re.findall(r"[a-z]+", t.lower())) for t in colorless)


def test_word_order_punctuation_and_case_do_not_matter():
    a = parse("sunset, snow-capped mountains, a lake")
    b = parse("A LAKE with Snow Capped Mountains at sunset!!")
    c = parse("mountains (snow-capped); lake. sunset")
    assert a == b == {"scene": "landscape", "time": "sunset", "mountains": "range", "snow": "yes", "water": "lake"}
    assert c["time"] == "sunset" and c["water"] == "lake" and c["mountains"] == "range"


def test_negatives():
    assert parse("a meadow with no trees")["trees"] == "none"
    assert parse("without clouds")["clouds"] == "none"
    assert parse("a lake, without any trees")["trees"] == "none"
    assert parse("no mountains")["mountains"] == "none"
    assert parse("a mountain without snow") == {"scene": "landscape", "mountains": "one", "snow": "no"}


def test_scene_follows_from_scene_families():
    assert parse("a red ball")["scene"] == "still_life"
    assert parse("a lake")["scene"] == "landscape"
    assert parse("pixel art") == {"style": "pixel"}
    assert parse("") == {}
    assert parse("completely unrelated words") == {}


def test_first_mention_wins():
    assert parse("a red and blue ball")["color"] == "red"


def test_vocabulary_covers_every_caption_word():
    vocabulary = set(VOCABULARY)
    rng = np.random.default_rng(5)
    for _ in range(1000):
        text = caption(sample_attributes(rng), rng)
        for word in re.findall(r"[a-z0-9-]+", text.lower()):
            assert word in vocabulary, (word, text)


def test_every_family_value_has_a_phrase():
    for family, values in FAMILIES.items():
        for value in values:
            if family in ("mountains", "snow") or value == "none" and family == "modifier":
                continue
            assert PHRASES[(family, value)], (family, value)


def test_docs_list_every_phrase():
    from pathlib import Path

    from noise2art.world.captions import MOUNTAIN_NOUNS, SNOW_ADJECTIVES, SNOW_SUFFIXES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "world.md").read_text(encoding="utf-8")
    phrases = [p for ps in PHRASES.values() for p in ps]
    phrases += [f"{a} {n}".strip() for ns in MOUNTAIN_NOUNS.values() for a, n in ns]
    phrases += [p for table in (SNOW_ADJECTIVES, SNOW_SUFFIXES) for ps in table.values() for p in ps]
    missing = [p for p in phrases if f'"{p}"' not in docs]
    assert not missing
