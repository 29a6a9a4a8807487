"""Evaluation of a model on the procedural world: prompt adherence, diversity, Fréchet distance.

For each prompt, images are generated on several seeds and classified with the attribute
classifiers shipped with the embedded model:

- adherence: the share of attributes the prompt names (by `captions.parse`) that the
  classifiers find in the image, over the images where the attribute is visible
  (colour is not scored on sketches, snow not without mountains);
- diversity: for each attribute the prompt leaves unnamed, the normalised entropy of the
  classified values across seeds (0: always the same, 1: uniform over all values);
- Fréchet distance between world-CLIP features of the generated images and of rendered
  images whose attributes are drawn to agree with each prompt (FID's formula on world
  CLIP in place of Inception).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noise2art.world.attributes import FAMILIES, families_for, is_defined, sample_attributes
from noise2art.world.captions import caption, parse

DEFAULT_PROMPT_SEED = 424242  # held out: the training set draws captions from seeds 0 and 1


@dataclass
class PromptReport:
    prompt: str
    named: dict
    adherence: float | None  # None when the prompt names nothing visible
    per_family: dict  # family -> share of images matching
    diversity: float | None  # mean normalised entropy over unnamed families
    predictions: list = field(default_factory=list)


@dataclass
class EvalReport:
    mean_adherence: float
    per_family: dict
    diversity: float
    frechet: float | None
    n_images: int
    n_prompts: int
    prompts: list

    @classmethod
    def summarise(cls, reports: list, seeds: int, frechet: float | None) -> EvalReport:
        """The report over per-prompt `PromptReport`s: means of adherence, family shares, diversity."""
        family_scores: dict[str, list[float]] = {}
        for r in reports:
            for fam, share in r.per_family.items():
                family_scores.setdefault(fam, []).append(share)
        scored = [r.adherence for r in reports if r.adherence is not None]
        diversities = [r.diversity for r in reports if r.diversity is not None]
        return cls(
            mean_adherence=float(np.mean(scored)) if scored else 0.0,
            per_family={f: float(np.mean(v)) for f, v in sorted(family_scores.items())},
            diversity=float(np.mean(diversities)) if diversities else 0.0,
            frechet=frechet, n_images=len(reports) * seeds, n_prompts=len(reports), prompts=reports,
        )

    def to_json(self) -> dict:
        return {
            "mean_adherence": self.mean_adherence, "per_family": self.per_family, "diversity": self.diversity,
            "frechet": self.frechet, "n_images": self.n_images, "n_prompts": self.n_prompts,
            "prompts": [p.__dict__ for p in self.prompts],
        }


def held_out_prompts(n: int = 40, seed: int = DEFAULT_PROMPT_SEED) -> list[str]:
    """Captions from the world's grammar on a seed the training set never used."""
    rng = np.random.default_rng(seed)
    prompts = []
    while len(prompts) < n:
        text = caption(sample_attributes(rng), rng)
        if parse(text) and text not in prompts:
            prompts.append(text)
    return prompts


def read_prompts(path: str | Path) -> list[tuple[str, dict]]:
    """Plain text (one prompt per line, attributes by the parser) or JSONL with `prompt` and `attributes`."""
    from noise2art.errors import InvalidArgument
    from noise2art.world.attributes import validate_attributes

    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument("prompts", f"cannot read '{path}': {exc}") from None
    if not lines:
        raise InvalidArgument("prompts", f"'{path}' holds no prompts")
    out = []
    for k, line in enumerate(lines, 1):
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                out.append((obj["prompt"], validate_attributes(obj.get("attributes") or parse(obj["prompt"]),
                                                               complete=False)))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidArgument("prompts", f"line {k} of '{path}' is not valid JSONL ({exc})") from None
        else:
            out.append((line, parse(line)))
    return out


def normalised_entropy(values: list[str], n_values: int) -> float:
    if n_values < 2 or not values:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(n_values))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID's formula between two feature sets `[N, F]`, `[M, F]`."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def score_predictions(named: dict, predictions: list[dict]) -> tuple[float | None, dict]:
    """Adherence of classified images to the named attributes; per-family match shares."""
    per_family, hits, total = {}, 0, 0
    for fam, value in named.items():
        if fam == "scene":
            checks = [p.get("scene") == value for p in predictions]
        else:
            # Judge visibility on what the image shows (a sketch hides colour), as predicted.
            checks = [p.get(fam) == value for p in predictions if is_defined(fam, {**p, fam: value})]
        if checks:
            per_family[fam] = float(np.mean(checks))
            hits += sum(checks)
            total += len(checks)
    return (hits / total if total else None), per_family


def evaluate(model, prompts: list[tuple[str, dict]], seeds: int = 8, steps: int | None = None,
             guidance: float | None = None, frechet: bool = True, progress=None,
             precision: str | None = None, sampling=None) -> EvalReport:
    """Generate `seeds` images per prompt and score them (see the module docstring).

    `precision` is `Model.sample`'s (None: the model's default, its own dtype); `sampling`
    (a `SamplingOverrides`) gives every sampling setting at once, the others on top.
    """
    from noise2art.errors import ModelLoadError

    if model.companions.attributes is None:
        raise ModelLoadError(f"model '{model.model_id}' has no attribute classifiers; world eval needs the embedded model")
    classifier = model.companions.attributes
    clip = model.companions.world_clip
    reports, gen_feats, ref_feats = [], [], []
    size = model.native_size
    from noise2art.world.render import render

    for k, (prompt, named) in enumerate(prompts):
        with torch.no_grad():
            images = model.render(prompt, seeds=list(range(seeds)), settings=sampling, steps=steps,
                                  guidance=guidance, precision=precision)
            preds = classifier.predict(images)
            if clip is not None and frechet:
                gen_feats.append(clip.encode_image(images).cpu().numpy())
                rng = np.random.default_rng([DEFAULT_PROMPT_SEED, k])
                refs = []
                for s in range(seeds):
                    attrs = sample_attributes(rng, given=named)
                    refs.append(render(attrs, seed=int(rng.integers(2**31)), size=size))
                ref = torch.from_numpy(np.stack(refs)).permute(0, 3, 1, 2).float().div(255).to(model.device)
                ref_feats.append(clip.encode_image(ref).cpu().numpy())
        adherence, per_family = score_predictions(named, preds)
        scene = named.get("scene") or max(("landscape", "still_life"), key=[p["scene"] for p in preds].count)
        unnamed = [f for f in families_for(scene) if f not in named and f != "scene"]
        div = [normalised_entropy([p[f] for p in preds if is_defined(f, p)], len(FAMILIES[f])) for f in unnamed]
        reports.append(PromptReport(prompt, named, adherence, per_family, float(np.mean(div)) if div else None, preds))
        if progress is not None:
            progress(k + 1, len(prompts))
    fd = frechet_distance(np.concatenate(gen_feats), np.concatenate(ref_feats)) if gen_feats else None
    return EvalReport.summarise(reports, seeds, fd)
