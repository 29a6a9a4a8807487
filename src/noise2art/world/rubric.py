"""The aesthetic rubric: a 0..10 score computed from an image's attributes and pixel statistics.

It is the training target of the embedded model's aesthetic head, which then plays the
role LAION's aesthetic predictor plays for Stable Diffusion. Four parts, each in [0, 1]:

- exposure: mean luma near mid-grey; dark and washed-out images lose;
- detail: Laplacian variance of the grayscale image on a saturating scale; blurry loses;
- colour harmony: mean saturation near a moderate level (neither grey nor garish);
- composition: what the scene holds (landscapes with several elements, still lifes on a
  gradient) and its style (painterly styles score higher than flat and pixel art).

score = 10 * (0.25 exposure + 0.25 detail + 0.2 harmony + 0.3 composition)
"""

from __future__ import annotations

import numpy as np

STYLE_BONUS = {"oil": 1.0, "watercolor": 0.9, "photo": 0.8, "sketch": 0.5, "flat": 0.35, "pixel": 0.3}
MODIFIER_BONUS = {"detailed": 0.2, "vibrant": 0.1, "none": 0.0, "muted": -0.1, "blurry": -0.25, "dark": -0.2}


def _luma(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.2989 + img[..., 1] * 0.5870 + img[..., 2] * 0.1140


def laplacian_variance(gray: np.ndarray) -> float:
    lap = (gray[:-2, :-2] + gray[:-2, 1:-1] + gray[:-2, 2:] + gray[1:-1, :-2] - 8 * gray[1:-1, 1:-1]
           + gray[1:-1, 2:] + gray[2:, :-2] + gray[2:, 1:-1] + gray[2:, 2:])
    return float(lap.var())


def rubric_parts(image: np.ndarray, attributes: dict) -> dict[str, float]:
    """`image`: uint8 `[H, W, 3]`. Returns the four parts, each in [0, 1]."""
    img = image.astype(np.float32) / 255.0
    gray = _luma(img)
    exposure = 1.0 - min(1.0, 2.2 * abs(float(gray.mean()) - 0.5))
    detail = 1.0 - float(np.exp(-laplacian_variance(gray) / 0.02))
    mx, mn = img.max(-1), img.min(-1)
    saturation = float(((mx - mn) / np.maximum(mx, 1e-3)).mean())
    harmony = 1.0 - min(1.0, 2.5 * abs(saturation - 0.45))
    if attributes.get("scene") == "landscape":
        elements = sum(attributes.get(f, "none") != "none" for f in ("mountains", "water", "trees", "clouds"))
        scene = 0.3 + 0.15 * elements + (0.1 if attributes.get("time") in ("sunset", "sunrise") else 0.0)
    else:
        scene = 0.6 + (0.25 if attributes.get("background") == "gradient" else 0.0)
    composition = 0.5 * min(1.0, scene) + 0.5 * STYLE_BONUS.get(attributes.get("style", "photo"), 0.5)
    composition = float(np.clip(composition + MODIFIER_BONUS.get(attributes.get("modifier", "none"), 0.0), 0, 1))
    return {"exposure": exposure, "detail": detail, "harmony": harmony, "composition": composition}


def rubric_score(image: np.ndarray, attributes: dict) -> float:
    p = rubric_parts(image, attributes)
    return 10.0 * (0.25 * p["exposure"] + 0.25 * p["detail"] + 0.2 * p["harmony"] + 0.3 * p["composition"])
