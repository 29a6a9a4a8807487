"""Differentiable image metrics: ``images [B, 3, H, W] in [0, 1] -> scores [B]``.

Importing this package registers the built-in metrics::

    from noise2art.metrics import get_metric, list_metrics
    metric = get_metric("sharpness")            # pixel statistic, no model
    loss = metric.loss(images).mean()           # -(score * loss_scale)
    combo = get_metric("aesthetic+0.5*sharpness", context=model)

``load_laion_aesthetic`` builds the aesthetic scorer for Stable Diffusion images; it
imports transformers only when called.
"""

from __future__ import annotations

from noise2art.metrics.image import (
    blurriness,
    brightness,
    colorfulness,
    contrast,
    laplacian_variance,
    luma,
    sharpness,
)
from noise2art.metrics.laion import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_CLIP,
    LAION_MLP_FILENAME,
    LaionAestheticMLP,
    LaionAestheticScorer,
    clip_preprocess,
    load_laion_aesthetic,
)
from noise2art.metrics.registry import (
    AestheticScorer,
    ImageTextScorer,
    Metric,
    MetricContext,
    MetricUnavailable,
    check_images,
    get_metric,
    list_metrics,
    register,
    unregister,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_CLIP",
    "LAION_MLP_FILENAME",
    "AestheticScorer",
    "ImageTextScorer",
    "LaionAestheticMLP",
    "LaionAestheticScorer",
    "Metric",
    "MetricContext",
    "MetricUnavailable",
    "blurriness",
    "brightness",
    "check_images",
    "clip_preprocess",
    "colorfulness",
    "contrast",
    "get_metric",
    "laplacian_variance",
    "list_metrics",
    "load_laion_aesthetic",
    "luma",
    "register",
    "sharpness",
    "unregister",
]
