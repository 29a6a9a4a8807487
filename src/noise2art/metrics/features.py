"""Image features for image-space distances (interpolation speed, retrievability, consistency, feedback).

On the embedded model the features are world-CLIP image embeddings (unit vectors), so a
distance measures change in what the picture shows rather than in its pixels. A model
without world CLIP (any Stable Diffusion checkpoint) falls back to normalised 32x32
colour thumbnails: crude but model-free, deterministic and differentiable. A CLIP
vision model put in `model.companions.clip_vision` (see `metrics.laion`) takes precedence
over the thumbnails.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_kind(model) -> str:
    """Which features `image_features` uses for this model: "world-clip", "clip" or "thumbnail"."""
    if model.companions.world_clip is not None:
        return "world-clip"
    if model.companions.clip_vision is not None:
        return "clip"
    return "thumbnail"


def image_features(model, images: torch.Tensor) -> torch.Tensor:
    """`images [B, 3, H, W]` in [0, 1] -> unit feature vectors `[B, F]`."""
    kind = feature_kind(model)
    if kind == "world-clip":
        return model.companions.world_clip.encode_image(images.float())
    if kind == "clip":
        return F.normalize(model.companions.clip_vision(images.float()), dim=-1)
    thumb = F.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    flat = thumb.flatten(1)
    return F.normalize(flat - 0.5, dim=-1)


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine distance `1 - cos` between feature rows `[B, F]` (broadcasting) -> `[B]`."""
    return 1 - (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


def image_distance(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distance between images `[B,3,H,W]` and `[B,3,H,W]` (or `[1,...]`) -> `[B]`."""
    return feature_distance(image_features(model, x), image_features(model, y))


def distance_to_angle(distance: torch.Tensor) -> torch.Tensor:
    """Cosine distances `1 - cos` -> the angles between the features (radians), same shape.

    `1 - cos` is about half the squared distance between unit features, so it is not
    additive: cut a steady path's step in two and the halves sum to half of it. The
    angle is a metric (great-circle length on the unit sphere), so the sum of the angles
    of a path's steps is its length, and measuring the path more finely converges to it
    rather than to 0. Arc lengths along rendered paths (`methods.retime`) add angles.
    """
    return torch.arccos((1 - distance).clamp(-1.0, 1.0))
