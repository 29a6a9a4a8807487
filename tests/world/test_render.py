"""The world renderer: determinism, every attribute value, and that attributes are really drawn."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from noise2art.errors import InvalidArgument
from noise2art.world.attributes import (
    FAMILIES,
    SCENE_FAMILIES,
    families_for,
    is_defined,
    sample_attributes,
    validate_attributes,
)
from noise2art.world.render import pixel_block, render, render_random

LANDSCAPE = dict(
    scene="landscape", time="day", mountains="range", snow="yes", water="lake",
    ground="meadow", trees="few", clouds="some", style="photo", modifier="none",
)  # fmt: skip
STILL_LIFE = dict(scene="still_life", shape="ball", color="red", background="plain", style="photo", modifier="none")


def luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def laplacian_variance(img: np.ndarray) -> float:
    g = luminance(img)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def saturation(img: np.ndarray) -> float:
    f = img.astype(np.float32)
    return float((f.max(axis=2) - f.min(axis=2)).mean())


# ------------------------------------------------------------------- determinism


def test_same_seed_same_image():
    assert np.array_equal(render(LANDSCAPE, 5), render(LANDSCAPE, 5))
    a, attrs_a = render_random(11)
    b, attrs_b = render_random(11)
    assert attrs_a == attrs_b and np.array_equal(a, b)


def test_different_seeds_differ():
    assert not np.array_equal(render(LANDSCAPE, 1), render(LANDSCAPE, 2))
    assert not np.array_equal(render(STILL_LIFE, 1), render(STILL_LIFE, 2))


def test_output_shape_and_dtype():
    for size in (32, 64, 128):
        img = render(STILL_LIFE, 0, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("size", [64, 128])
def test_every_attribute_value_renders(size):
    for base in (LANDSCAPE, STILL_LIFE):
        for family in families_for(base["scene"])[1:]:
            for k, value in enumerate(FAMILIES[family]):
                img = render({**base, family: value}, seed=k, size=size)
                assert img.shape == (size, size, 3)


@pytest.mark.parametrize("style", FAMILIES["style"])
def test_every_style_and_modifier_renders(style):
    for base in (LANDSCAPE, STILL_LIFE):
        for k, modifier in enumerate(FAMILIES["modifier"]):
            img = render({**base, "style": style, "modifier": modifier}, seed=k)
            assert img.shape == (64, 64, 3)
            assert img.std() > 5, "a picture, not a flat fill"


@pytest.mark.parametrize("size", [0, 16, 40, 63, 100])
def test_bad_sizes_are_rejected(size):
    with pytest.raises(InvalidArgument, match="size"):
        render(STILL_LIFE, 0, size)


def test_bad_attributes_are_rejected():
    with pytest.raises(InvalidArgument, match="color"):
        render({**STILL_LIFE, "color": "teal"}, 0)
    with pytest.raises(InvalidArgument, match="shape"):
        render({k: v for k, v in STILL_LIFE.items() if k != "shape"}, 0)
    with pytest.raises(InvalidArgument, match="seed"):
        render(STILL_LIFE, -1)


# ------------------------------------------------------ attributes are really drawn


def test_night_sky_is_darker_than_day_sky():
    for seed in range(4):
        day = render({**LANDSCAPE, "time": "day"}, seed)
        night = render({**LANDSCAPE, "time": "night"}, seed)
        assert luminance(night[:16]).mean() < 0.4 * luminance(day[:16]).mean()


def test_sunset_sky_is_redder_than_day_sky():
    for seed in range(4):
        day = render({**LANDSCAPE, "time": "day", "clouds": "none"}, seed)[:20].astype(float)
        sunset = render({**LANDSCAPE, "time": "sunset", "clouds": "none"}, seed)[:20].astype(float)
        assert (sunset[..., 0] - sunset[..., 2]).mean() > (day[..., 0] - day[..., 2]).mean() + 40


@pytest.mark.parametrize("style", ["photo", "flat", "oil", "watercolor", "pixel"])
def test_red_ball_pixels_are_red(style):
    def red_dominant(img):
        r, g, b = (img[..., i].astype(int) for i in range(3))
        return ((r > g + 60) & (r > b + 60)).mean()

    for seed in range(3):
        red = render({**STILL_LIFE, "color": "red", "style": style}, seed)
        blue = render({**STILL_LIFE, "color": "blue", "style": style}, seed)
        assert red_dominant(red) > 0.04
        assert red_dominant(blue) < 0.005


def test_object_colors_are_far_apart():
    means = {}
    for color in FAMILIES["color"]:
        img = render({**STILL_LIFE, "color": color, "style": "flat", "background": "plain"}, 0).astype(float)
        center = img[26:38, 26:38].reshape(-1, 3)  # the ball always covers the centre
        means[color] = center.mean(axis=0)
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.linalg.norm(means[a] - means[b]) > 60, (a, b)


def test_sea_covers_more_of_the_lower_image_than_no_water():
    def water_fraction(img):
        lower = img[40:].astype(int)
        return ((lower[..., 2] > lower[..., 0] + 50) & (lower[..., 2] > lower[..., 1] + 20)).mean()

    for seed in range(4):
        base = {**LANDSCAPE, "style": "flat", "trees": "none"}
        sea = water_fraction(render({**base, "water": "sea"}, seed))
        none = water_fraction(render({**base, "water": "none"}, seed))
        assert sea > none + 0.3


def test_trees_add_dark_green():
    def dark_green(img):
        f = img.astype(int)
        return ((f[..., 1] > f[..., 0] + 15) & (f[..., 1] > f[..., 2]) & (luminance(img) < 110)).mean()

    base = {**LANDSCAPE, "ground": "desert", "style": "flat"}
    for seed in range(4):
        counts = [dark_green(render({**base, "trees": t}, seed)) for t in ("none", "few", "forest")]
        assert counts[0] < 0.001 < counts[1] < counts[2]


def test_snow_caps_and_clouds_add_white_above_the_horizon():
    def white(img):
        return (img[:28].min(axis=2) > 215).mean()

    base = {**LANDSCAPE, "style": "flat", "clouds": "none", "mountains": "one"}
    for seed in range(4):
        assert white(render({**base, "snow": "yes"}, seed)) > white(render({**base, "snow": "no"}, seed)) + 0.01
        assert white(render({**base, "clouds": "some"}, seed)) > white(render(base, seed)) + 0.01


def test_mountains_raise_the_skyline():
    def skyline(img):
        # first row, from the top, where the middle columns leave the sky colour
        diff = np.abs(img[:, 16:48].astype(int) - img[0, 32].astype(int)).sum(axis=2)
        return int(np.argmax(diff.max(axis=1) > 120))

    base = {**LANDSCAPE, "style": "flat", "clouds": "none", "time": "overcast"}
    for seed in range(4):
        assert skyline(render({**base, "mountains": "one"}, seed)) < skyline(render({**base, "mountains": "none"}, seed)) - 5


def test_sketch_is_grayscale():
    for base in (LANDSCAPE, STILL_LIFE):
        for modifier in FAMILIES["modifier"]:
            img = render({**base, "style": "sketch", "modifier": modifier}, 3)
            assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_pixel_style_is_blocky_with_few_colors():
    for base in (LANDSCAPE, STILL_LIFE):
        for size in (64, 128):
            img = render({**base, "style": "pixel"}, 2, size)
            b = pixel_block(size)
            cells = img[::b, ::b]
            assert np.array_equal(np.repeat(np.repeat(cells, b, 0), b, 1), img)
            assert len(np.unique(img.reshape(-1, 3), axis=0)) <= 16


@pytest.mark.parametrize("style", ["photo", "flat", "oil", "watercolor"])
def test_blurry_is_less_sharp(style):
    for base in (LANDSCAPE, STILL_LIFE):
        sharp = render({**base, "style": style}, 4)
        blurry = render({**base, "style": style, "modifier": "blurry"}, 4)
        assert laplacian_variance(blurry) < 0.5 * laplacian_variance(sharp)


def test_detailed_is_sharper():
    for base in (LANDSCAPE, STILL_LIFE):
        plain = render(base, 4)
        detailed = render({**base, "modifier": "detailed"}, 4)
        assert laplacian_variance(detailed) > 2 * laplacian_variance(plain)


def test_color_modifiers():
    for base in (LANDSCAPE, STILL_LIFE):
        none = render(base, 6)
        assert luminance(render({**base, "modifier": "dark"}, 6)).mean() < 0.55 * luminance(none).mean()
        assert saturation(render({**base, "modifier": "vibrant"}, 6)) > 1.2 * saturation(none)
        assert saturation(render({**base, "modifier": "muted"}, 6)) < 0.7 * saturation(none)


def test_changing_one_attribute_keeps_the_layout():
    # Same seed, trees added: the sky (clouds, sun, mountains) is untouched.
    a = render({**LANDSCAPE, "trees": "none", "water": "none", "style": "flat"}, 9)
    b = render({**LANDSCAPE, "trees": "few", "water": "none", "style": "flat"}, 9)
    assert np.array_equal(a[:20], b[:20])


# ----------------------------------------------------------------- attribute schema


def test_sampled_attributes_are_complete_and_follow_the_priors():
    rng = np.random.default_rng(0)
    draws = [sample_attributes(rng) for _ in range(3000)]
    for attrs in draws:
        assert validate_attributes(attrs) == attrs
        assert set(attrs) == set(families_for(attrs["scene"]))
        if attrs.get("mountains") == "none":
            assert attrs["snow"] == "no"
    scenes = Counter(a["scene"] for a in draws)
    assert 0.45 < scenes["landscape"] / len(draws) < 0.55
    sketch = sum(a["style"] == "sketch" for a in draws) / len(draws)
    assert 0.05 < sketch < 0.11
    for family in ("time", "color", "water", "style", "modifier"):
        seen = {a[family] for a in draws if family in a}
        assert seen == set(FAMILIES[family])


def test_given_attributes_are_kept():
    rng = np.random.default_rng(1)
    for _ in range(50):
        attrs = sample_attributes(rng, {"color": "pink"})
        assert attrs["scene"] == "still_life" and attrs["color"] == "pink"
    assert set(SCENE_FAMILIES["landscape"]) <= set(sample_attributes(rng, {"time": "night"}))


def test_color_is_undefined_under_sketch():
    assert not is_defined("color", {**STILL_LIFE, "style": "sketch"})
    assert is_defined("color", STILL_LIFE)
    assert not is_defined("snow", {**LANDSCAPE, "mountains": "none"})
