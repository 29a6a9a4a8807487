"""Pixel-statistic metrics: values against hand computations, shapes, gradients, checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noise2art.errors import InvalidArgument
from noise2art.metrics import blurriness, brightness, colorfulness, contrast, luma, sharpness

ALL = [sharpness, blurriness, colorfulness, brightness, contrast]


def random_images(batch: int = 2, height: int = 9, width: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def numpy_luma(image: np.ndarray) -> np.ndarray:
    return 0.2989 * image[0] + 0.5870 * image[1] + 0.1140 * image[2]


def test_sharpness_matches_a_hand_computed_laplacian_variance():
    images = random_images()
    for image, score in zip(images.double().numpy(), sharpness(images.double())):
        gray = numpy_luma(image)
        # Valid 3x3 convolution with [[1,1,1],[1,-8,1],[1,1,1]]: 8 neighbours minus 8 x centre.
        neighbours = sum(
            gray[1 + dy : gray.shape[0] - 1 + dy, 1 + dx : gray.shape[1] - 1 + dx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)
        )
        response = neighbours - 8 * gray[1:-1, 1:-1]
        assert response.shape == (7, 5)
        assert float(score) == pytest.approx(response.var(ddof=1), rel=1e-10)


def test_sharpness_orders_sharp_above_blurred_and_blurriness_is_the_same_value():
    images = random_images(batch=1, height=16, width=16)
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    assert sharpness(images) > sharpness(blurred)
    torch.testing.assert_close(blurriness(images), sharpness(images))
    assert float(sharpness(torch.full((1, 3, 5, 5), 0.4))) == pytest.approx(0.0, abs=1e-10)


def test_colorfulness_matches_hasler_suesstrunk():
    images = random_images(seed=3)
    for image, score in zip(images.double().numpy(), colorfulness(images.double())):
        r, g, b = image
        rg, yb = r - g, 0.5 * (r + g) - b
        expected = math.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        assert float(score) == pytest.approx(expected, rel=1e-6)
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert float(colorfulness(grey)) == pytest.approx(0.0, abs=1e-5)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    # rg = 1, yb = 0.5 everywhere: no spread, only the mean term.
    assert float(colorfulness(red)) == pytest.approx(0.3 * math.sqrt(1.25), rel=1e-5)


def test_brightness_and_contrast_are_mean_and_std_of_luma():
    images = random_images(seed=5)
    doubles = images.double()
    for image, bright, contr in zip(doubles.numpy(), brightness(doubles), contrast(doubles)):
        gray = numpy_luma(image)
        assert float(bright) == pytest.approx(gray.mean(), rel=1e-12)
        assert float(contr) == pytest.approx(gray.std(), rel=1e-6)
    torch.testing.assert_close(luma(torch.ones(1, 3, 2, 2)), torch.full((1, 2, 2), 0.9999))


@pytest.mark.parametrize("metric", ALL)
def test_batched_shape_and_independence(metric):
    images = random_images(batch=3)
    scores = metric(images)
    assert scores.shape == (3,)
    torch.testing.assert_close(scores[1:2], metric(images[1:2]))


@pytest.mark.parametrize("metric", ALL)
def test_gradients(metric):
    images = (0.1 + 0.8 * random_images(batch=2, height=5, width=5, seed=7)).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: metric(x), (images,), eps=1e-6, atol=1e-5)


def test_grey_image_has_finite_gradients():
    images = torch.full((1, 3, 6, 6), 0.5, requires_grad=True)
    (colorfulness(images) + contrast(images)).sum().backward()
    assert torch.isfinite(images.grad).all()


@pytest.mark.parametrize("metric", ALL)
@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 4, 8, 8), (2, 1, 8, 8), (1, 3, 8, 8, 1)])
def test_bad_shapes_name_images_and_shape(metric, shape):
    with pytest.raises(InvalidArgument) as info:
        metric(torch.rand(*shape))
    assert info.value.name == "images" and str(list(shape)) in str(info.value)


@pytest.mark.parametrize("bad", [1.5, -0.2, float("nan")])
def test_out_of_range_values_are_rejected(bad):
    images = random_images()
    images[0, 1, 2, 3] = bad
    with pytest.raises(InvalidArgument, match="images"):
        brightness(images)


def test_other_bad_inputs():
    with pytest.raises(InvalidArgument, match="float"):
        brightness(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(InvalidArgument, match="non-empty"):
        brightness(torch.zeros(0, 3, 4, 4))
    with pytest.raises(InvalidArgument, match=">= 3"):
        sharpness(torch.zeros(1, 3, 2, 8))
