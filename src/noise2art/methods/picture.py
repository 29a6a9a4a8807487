"""What an edited embedding keeps of its picture: prompt adherence and distance to the start.

A gradient on an image metric can raise the score by ruining the picture (sharpness rises
with halos and ringing around every edge). Two measures say what was lost, and the first
also gives a differentiable term that keeps it:

- **adherence**: the share of the attributes the prompt names (`world.captions.parse`)
  that the attribute classifiers find in the images, over the images where the attribute
  is visible (`world.evaluation.score_predictions`, as `world eval` scores a model);
- **distance** to the initial images: `1 - cos` of world-CLIP image features
  (`metrics.features.image_distance`; colour thumbnails on a model without world CLIP).

Both need nothing but the model's companions; on a model without attribute classifiers
(a Stable Diffusion checkpoint) adherence is None and only the distance is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PictureReport:
    """Adherence and distance of images to a prompt and to the initial images.

    Attributes:
        adherence: share of named attributes found (None: nothing named, or no classifier).
        per_family: that share per named family.
        distance: mean image-space distance to the initial images (0 for the initial ones).
        distances: `[S]` per image.
    """

    adherence: float | None
    per_family: dict[str, float]
    distance: float
    distances: list[float]

    def as_dict(self) -> dict:
        return {"adherence": self.adherence, "per_family": self.per_family, "distance": self.distance,
                "distances": self.distances}


def named_attributes(model, prompt: str) -> dict[str, str]:
    """The attributes `prompt` names that the model's classifier can check (empty without one)."""
    from noise2art.world.captions import parse

    classifier = model.companions.attributes
    if classifier is None or not hasattr(classifier, "cfg"):
        return {}
    known = classifier.cfg.families
    return {f: v for f, v in parse(prompt).items() if f in known and v in known[f]}


def picture_report(model, images: torch.Tensor, initial: torch.Tensor, named: dict[str, str]) -> PictureReport:
    """Measure `images [S, 3, H, W]` against the named attributes and `initial [S, 3, H, W]` (in [0, 1])."""
    from noise2art.metrics.features import image_distance
    from noise2art.world.evaluation import score_predictions

    with torch.no_grad():
        # Clamped: rounding gives the initial images a distance of about -1e-7 to themselves.
        distances = image_distance(model, images.float(), initial.float().to(images.device)).float().cpu().clamp_min(0)
        adherence, per_family = None, {}
        if named:
            predictions = model.companions.attributes.predict(images.float())
            adherence, per_family = score_predictions(named, predictions)
    return PictureReport(adherence, per_family, float(distances.mean()), [float(d) for d in distances])


def adherence_loss(model, images: torch.Tensor, named: dict[str, str]) -> torch.Tensor:
    """Differentiable loss of the named attributes: mean cross-entropy of their values.

    Args:
        images: `[S, 3, H, W]` in [0, 1], carrying gradients.
        named: family -> value (`named_attributes`); empty gives a zero loss.

    Returns:
        A scalar: the mean over families and images of `-log p(value)`.
    """
    if not named:
        return images.new_zeros(())
    classifier = model.companions.attributes
    logits = classifier(images.float())
    families = classifier.cfg.families
    losses = []
    for fam, value in named.items():
        target = torch.full((images.shape[0],), families[fam].index(value), device=images.device)
        losses.append(F.cross_entropy(logits[fam].float(), target))
    return torch.stack(losses).mean()
