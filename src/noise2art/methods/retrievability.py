"""Retrievability (M9): how easily each image on an interpolation path is reached.

The infinite index view (Deckers et al., "The Infinite Index", CHIIR 2023) treats every
embedding as a query. Along a path from prompt A to prompt B the picture does not change
at an even pace: long stretches of embeddings give nearly the same image (a *basin*: an
image many queries retrieve), and short stretches flip it (a *jump*: images between
basins are reached from a sliver of embeddings, or not at all). This module renders a
path at many fine alphas and measures that.

Definitions (``alphas`` evenly spaced, ``N`` samples, ``N - 1`` steps):

* distance ``d_i = image_distance(x_i, x_{i+1})`` (world CLIP on the embedded model,
  colour thumbnails on SD, see `metrics.features`);
* speed ``v_i = d_i / (alpha_{i+1} - alpha_i)``: image change per unit of alpha;
* jump: a step with ``v_i > k * median(v)``; ``k = 3`` by default (a step three times
  faster than the typical one; a path that changes evenly has none);
* basin: a maximal run of consecutive non-jump steps; its *share* is the fraction of the
  path's alpha range it covers. The shares of all basins sum to 1 minus the jumps' share;
* ``max_mean_ratio = max(d) / mean(d)``: 1 for an even path, large when one step holds
  most of the change (the quantity constant-speed re-timing brings down).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, StepCallback
from noise2art.errors import InvalidArgument
from noise2art.methods.interpolate import MAX_FRAMES, InterpolationConfig, InterpolationPath
from noise2art.methods import retime
from noise2art.methods.retime import Distance, step_ratio

__all__ = [
    "Basin",
    "RetrievabilityConfig",
    "RetrievabilityResult",
    "SpeedProfile",
    "Stats",
    "StudyResult",
    "StudySummary",
    "retrievability",
    "retrievability_study",
    "speed_profile",
    "summarize",
]

DEFAULT_JUMP_FACTOR = 3.0


@dataclass
class RetrievabilityConfig:
    """Attributes:
        fine: samples along the path (default 64), ``[3, 10000]``.
        jump_factor: ``k``: a step is a jump when its speed exceeds ``k x`` the median speed.
        keep_images: keep the rendered samples in the result (for a filmstrip).
    """

    fine: int = 64
    jump_factor: float = DEFAULT_JUMP_FACTOR
    keep_images: bool = True

    def __post_init__(self):
        if isinstance(self.fine, bool) or not isinstance(self.fine, int) or not 3 <= self.fine <= MAX_FRAMES:
            raise InvalidArgument("fine", f"must be an integer in [3, {MAX_FRAMES}], got {self.fine!r}")
        k = self.jump_factor
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 1:
            raise InvalidArgument("jump_factor", f"must be a finite number >= 1, got {k!r}")


@dataclass
class Basin:
    """A stable stretch of the path: steps ``first_step..last_step`` (inclusive), no jump inside."""

    start: float  # alpha where it begins
    end: float  # alpha where it ends
    share: float  # (end - start) / (path's alpha range)
    first_step: int
    last_step: int


@dataclass
class SpeedProfile:
    """Speeds along a path and what they say (see the module docstring for definitions).

    Attributes:
        alphas: ``[N]`` sample alphas; distances ``[N-1]``; speeds ``[N-1]``.
        median_speed, threshold: the jump threshold is ``jump_factor x median_speed``.
        jumps: indices of the jump steps.
        basins: the stable stretches between jumps, in path order.
        max_mean_ratio: ``max(d) / mean(d)``.
    """

    alphas: Tensor
    distances: Tensor
    speeds: Tensor
    median_speed: float
    threshold: float
    jump_factor: float
    jumps: list[int]
    basins: list[Basin]
    max_mean_ratio: float

    @property
    def largest_basin_share(self) -> float:
        return max((b.share for b in self.basins), default=0.0)

    def summary(self) -> dict:
        """Plain numbers for JSON output."""
        return {
            "max_mean_ratio": self.max_mean_ratio,
            "median_speed": self.median_speed,
            "threshold": self.threshold,
            "jump_factor": self.jump_factor,
            "jumps": list(self.jumps),
            "basins": [{"start": b.start, "end": b.end, "share": b.share} for b in self.basins],
            "largest_basin_share": self.largest_basin_share,
        }


def speed_profile(alphas: Tensor, distances: Tensor, jump_factor: float = DEFAULT_JUMP_FACTOR) -> SpeedProfile:
    """Speeds, jumps and basins of a path sampled at ``alphas [N]`` with step distances ``[N-1]``."""
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    d = torch.as_tensor(distances, dtype=torch.float64).reshape(-1)
    if a.shape[0] < 2 or d.shape[0] != a.shape[0] - 1:
        raise InvalidArgument("distances", f"expected {max(a.shape[0] - 1, 1)} step distances for {a.shape[0]} alphas, got {d.shape[0]}")
    widths = a[1:] - a[:-1]
    if not bool((widths > 0).all()):
        raise InvalidArgument("alphas", "must be strictly increasing")
    speeds = d / widths
    median = float(speeds.quantile(0.5))  # the mean of the two middle values for an even count
    threshold = jump_factor * median
    is_jump = speeds > threshold
    jumps = is_jump.nonzero().reshape(-1).tolist()
    span = float(a[-1] - a[0])
    basins = []
    i, n = 0, d.shape[0]
    while i < n:
        if is_jump[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and not is_jump[j + 1]:
            j += 1
        start, end = float(a[i]), float(a[j + 1])
        basins.append(Basin(start, end, (end - start) / span, i, j))
        i = j + 1
    return SpeedProfile(a, d, speeds, median, threshold, float(jump_factor), jumps, basins, step_ratio(d))


@dataclass
class RetrievabilityResult:
    """The speed profile of one path, with its prompts and (optionally) the sampled frames."""

    prompts: tuple[str, str]
    profile: SpeedProfile
    images: Tensor | None  # [N, 3, H, W] or None
    config: InterpolationConfig

    @property
    def max_mean_ratio(self) -> float:
        return self.profile.max_mean_ratio

    @property
    def basins(self) -> list[Basin]:
        return self.profile.basins

    def summary(self) -> dict:
        return {"a": self.prompts[0], "b": self.prompts[1], **self.profile.summary()}


def retrievability(
    model,
    a: PromptEmbedding,
    b: PromptEmbedding,
    config: InterpolationConfig | None = None,
    study: RetrievabilityConfig | None = None,
    *,
    distance: Distance | None = None,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
) -> RetrievabilityResult:
    """Render the path ``a -> b`` at ``study.fine`` even alphas over ``config.range`` and profile its speed.

    ``config`` sets method, range, seed(s) and sampling (its ``frames`` is ignored: the
    path is sampled at ``study.fine`` alphas). ``distance`` defaults to the model's image
    distance (`retime.model_distance`).
    """
    config = config or InterpolationConfig()
    study = study or RetrievabilityConfig()
    path = InterpolationPath(model, [a, b], config)
    alphas = path.plan(study.fine)
    images = path.render(alphas, callback=callback, cancel=cancel)
    distance = distance or retime.model_distance(model)
    d = torch.as_tensor(distance(images[:-1], images[1:])).detach().to("cpu", torch.float64).reshape(-1).clamp_min(0)
    profile = speed_profile(alphas, d, study.jump_factor)
    return RetrievabilityResult((path.keyframes[0].prompts[0], path.keyframes[1].prompts[0]), profile,
                                images if study.keep_images else None, config)


@dataclass
class Stats:
    mean: float
    median: float
    max: float
    min: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        values = [float(v) for v in values]
        return cls(statistics.fmean(values), statistics.median(values), max(values), min(values))


@dataclass
class StudySummary:
    """The distribution of the retrievability measures over many paths."""

    pairs: int
    max_mean_ratio: Stats
    basins: Stats
    largest_basin_share: Stats
    jumps: Stats

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(results: Sequence[RetrievabilityResult]) -> StudySummary:
    """Mean / median / max / min over paths of max/mean ratio, basin count, largest basin share, jump count."""
    if not results:
        raise InvalidArgument("results", "need at least one path to summarise")
    return StudySummary(
        pairs=len(results),
        max_mean_ratio=Stats.of([r.max_mean_ratio for r in results]),
        basins=Stats.of([len(r.basins) for r in results]),
        largest_basin_share=Stats.of([r.profile.largest_basin_share for r in results]),
        jumps=Stats.of([len(r.profile.jumps) for r in results]),
    )


@dataclass
class StudyResult:
    results: list[RetrievabilityResult] = field(default_factory=list)
    summary: StudySummary | None = None


def retrievability_study(
    model,
    pairs: Sequence[tuple[PromptEmbedding, PromptEmbedding]],
    config: InterpolationConfig | None = None,
    study: RetrievabilityConfig | None = None,
    *,
    distance: Distance | None = None,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
    on_result=None,
) -> StudyResult:
    """`retrievability` over many ``(a, b)`` pairs, and the distribution of its measures.

    ``on_result(index, result)`` is called after each pair (for progress or streaming output).
    """
    if not pairs:
        raise InvalidArgument("pairs", "need at least one pair")
    out = StudyResult()
    for k, (a, b) in enumerate(pairs):
        res = retrievability(model, a, b, config, study, distance=distance, callback=callback, cancel=cancel)
        out.results.append(res)
        if on_result is not None:
            on_result(k, res)
    out.summary = summarize(out.results)
    return out
