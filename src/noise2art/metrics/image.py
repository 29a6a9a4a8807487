"""Pixel-statistic metrics: differentiable, batched, no model needed.

Every function maps ``images [B, 3, H, W]`` (float, values in ``[0, 1]``) to
``scores [B]`` and is registered on import under its own name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noise2art.errors import InvalidArgument
from noise2art.metrics.registry import check_images, register

# ITU-R BT.601 luma weights, as the reference's sharpness metric uses them.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)

# The 8-neighbour Laplacian of the reference (docs/optimize.md).
LAPLACIAN_KERNEL = ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0))

# Weight of the mean opponent-colour magnitude in Hasler & Suesstrunk's metric.
_COLORFULNESS_MEAN_WEIGHT = 0.3

# Added under square roots: sqrt has an infinite derivative at 0, which a flat grey
# image would hit; 1e-12 changes the value by at most 1e-6.
_SQRT_EPS = 1e-12


def luma(images: torch.Tensor) -> torch.Tensor:
    """Grayscale ``[B, H, W]`` of ``images [B, 3, H, W]``: 0.2989 R + 0.5870 G + 0.1140 B."""
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1)


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """Variance of the 3x3 Laplacian of the grayscale image, per image: ``[B]``.

    Valid convolution (no padding): the response is ``[B, H-2, W-2]``, so image
    borders add no artificial edges. Unbiased variance (``torch.var``'s default), as
    in the reference (Deckers et al., IJCAI 2024, M5).
    """
    check_images(images)
    if images.shape[-2] < 3 or images.shape[-1] < 3:
        raise InvalidArgument("images", f"need H, W >= 3 for a 3x3 Laplacian, got {list(images.shape)}")
    gray = luma(images).unsqueeze(1)
    kernel = images.new_tensor(LAPLACIAN_KERNEL).view(1, 1, 3, 3)
    response = F.conv2d(gray, kernel)
    return response.flatten(1).var(dim=1)


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Laplacian variance ``[B]``; higher is sharper (docs/optimize.md)."""
    return laplacian_variance(images)


def blurriness(images: torch.Tensor) -> torch.Tensor:
    """The same value as :func:`sharpness` ``[B]``, registered as lower-is-better so
    that optimising it blurs the image (the reference's "blur" metric)."""
    return laplacian_variance(images)


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk colourfulness ``[B]`` on the ``[0, 1]`` scale.

    ``rg = R - G``, ``yb = (R + G) / 2 - B``;
    ``C = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2)``
    with population statistics over the pixels of each image (D. Hasler,
    S. Suesstrunk, "Measuring colourfulness in natural images", SPIE 2003). The paper
    works on 0..255 values: multiply by 255 for its scale (about 0 for grey, >100 for
    extremely colourful images).
    """
    check_images(images)
    red, green, blue = images.unbind(dim=1)
    rg = (red - green).flatten(1)
    yb = (0.5 * (red + green) - blue).flatten(1)
    spread = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0) + _SQRT_EPS)
    offset = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2 + _SQRT_EPS)
    return spread + _COLORFULNESS_MEAN_WEIGHT * offset


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean luma ``[B]`` in ``[0, 1]``."""
    check_images(images)
    return luma(images).flatten(1).mean(dim=1)


def contrast(images: torch.Tensor) -> torch.Tensor:
    """RMS contrast: population standard deviation of luma ``[B]``."""
    check_images(images)
    variance = luma(images).flatten(1).var(dim=1, correction=0)
    return torch.sqrt(variance + _SQRT_EPS)


register(
    "sharpness",
    sharpness,
    higher_is_better=True,
    loss_scale=10.0,
    description="variance of the 3x3 Laplacian [[1,1,1],[1,-8,1],[1,1,1]] of the grayscale "
    "image (valid convolution, no padding)",
    replace=True,
)
register(
    "blurriness",
    blurriness,
    higher_is_better=False,
    loss_scale=10.0,
    description="the sharpness value, to be minimised",
    replace=True,
)
register(
    "colorfulness",
    colorfulness,
    description="Hasler-Suesstrunk colourfulness on the [0, 1] scale (x255 for the paper's)",
    replace=True,
)
register("brightness", brightness, description="mean luma (BT.601 weights)", replace=True)
register("contrast", contrast, description="standard deviation of luma (RMS contrast)", replace=True)
