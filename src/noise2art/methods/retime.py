"""Constant-speed re-timing of an interpolation: equal image change per frame.

Along an embedding path the picture changes at uneven speed: it holds still for a while,
then jumps. Evenly spaced alphas therefore make an animation that stalls and lurches.
Re-timing measures the image-space distance between consecutive frames, renders extra
samples where the picture jumps (bisecting the largest gaps, within a render budget),
builds the cumulative distance ("arc length") as a piecewise-linear function of alpha
over all samples, and picks output alphas at equal arc-length steps. This is
arc-length reparameterisation of a curve, with the curve known only at rendered samples.

Distances come from `noise2art.metrics.features.image_distance`: world-CLIP image
embeddings on the embedded model, colour thumbnails on Stable Diffusion checkpoints
(a CLIP vision model in ``model.companions.clip_vision`` takes precedence). Any
``distance(x [B,3,H,W], y [B,3,H,W]) -> [B]`` may be passed instead.

Arc length must add up: a path measured more finely must not get shorter. The default
distance, ``1 - cos`` of the features, is about half a squared distance (halving a
steady step quarters it), so the arc length adds the *angles* those distances stand for
(`metrics.features.distance_to_angle`, the ``length`` argument). Summing ``1 - cos``
instead would shrink every stretch that refinement bisects, and those are the fast
stretches where frames are needed most. Step ratios are reported in the distance itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, StepCallback
from noise2art.errors import InvalidArgument
from noise2art.methods.interpolate import (
    MAX_FRAMES,
    MIN_FRAMES,
    InterpolationConfig,
    InterpolationPath,
    InterpolationResult,
)

__all__ = [
    "Distance",
    "Length",
    "RetimeConfig",
    "RetimePlan",
    "RetimeResult",
    "arc_length_alphas",
    "model_distance",
    "model_length",
    "retime",
    "retime_alphas",
    "step_ratio",
]

# distance(x [B, 3, H, W], y [B, 3, H, W]) -> [B] (>= 0)
Distance = Callable[[Tensor, Tensor], Tensor]
# render(alphas [M] float64) -> images [M, 3, H, W]
Render = Callable[[Tensor], Tensor]
# distances [B] -> additive lengths [B] (the identity for a distance that is a metric)
Length = Callable[[Tensor], Tensor]


@dataclass
class RetimeConfig:
    """Settings of constant-speed re-timing.

    Attributes:
        frames: output frames; None keeps the input's count.
        refine: budget of extra renders spent bisecting the largest gaps (0: re-time on
            the input frames alone).
        per_round: gaps bisected per round, rendered as one batch (None: the path's batch
            size, else 8). More per round is faster, fewer spends the budget more precisely.
        snap: an output alpha closer than ``snap x`` (the mean alpha step) to an already
            rendered sample takes that sample instead of a new render; 0 reuses only exact
            matches.
        min_width: gaps narrower than this (in alpha) are not bisected further: a true
            discontinuity stays one however finely it is sampled.
    """

    frames: int | None = None
    refine: int = 16
    per_round: int | None = None
    snap: float = 0.01
    min_width: float = 1e-4

    def __post_init__(self):
        if self.frames is not None and (
            isinstance(self.frames, bool) or not isinstance(self.frames, int) or not MIN_FRAMES <= self.frames <= MAX_FRAMES
        ):
            raise InvalidArgument("frames", f"must be an integer in [{MIN_FRAMES}, {MAX_FRAMES}], got {self.frames!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or not 0 <= self.refine <= MAX_FRAMES:
            raise InvalidArgument("refine", f"must be an integer in [0, {MAX_FRAMES}], got {self.refine!r}")
        if self.per_round is not None and (
            isinstance(self.per_round, bool) or not isinstance(self.per_round, int) or self.per_round < 1
        ):
            raise InvalidArgument("per_round", f"must be an integer >= 1, got {self.per_round!r}")
        for name in ("snap", "min_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(name, f"must be a finite number >= 0, got {value!r}")
        if self.snap >= 0.5:
            raise InvalidArgument("snap", f"must be < 0.5 (a fraction of the mean step), got {self.snap!r}")


@dataclass
class RetimePlan:
    """What `retime_alphas` decided, with the curve it measured.

    Attributes:
        alphas: ``[N]`` float64 output alphas at equal arc length.
        images: ``[N, 3, H, W]`` the output frames.
        sample_alphas: ``[M]`` float64 every alpha rendered (input frames and refinements), sorted.
        arc_length: ``[M]`` cumulative path length at ``sample_alphas`` (0 at the start): the
            sum of the steps' lengths (angles for the default distance).
        distances_before: ``[N0 - 1]`` consecutive distances of the input frames.
        distances_after: ``[N - 1]`` consecutive distances of the output frames.
        refine_renders: samples rendered to refine the curve.
        final_renders: output frames rendered anew (the others were reused).
    """

    alphas: Tensor
    images: Tensor
    sample_alphas: Tensor
    arc_length: Tensor
    distances_before: Tensor
    distances_after: Tensor
    refine_renders: int
    final_renders: int

    @property
    def ratio_before(self) -> float:
        return step_ratio(self.distances_before)

    @property
    def ratio_after(self) -> float:
        return step_ratio(self.distances_after)


@dataclass
class RetimeResult:
    """A re-timed interpolation.

    Attributes:
        interpolation: the re-timed frames (an `InterpolationResult` at the new alphas).
        before: the evenly spaced frames it started from.
        ratio_before, ratio_after: max / mean consecutive-frame distance (1 is perfectly even).
        plan: the measured curve and render counts (`RetimePlan`).
    """

    interpolation: InterpolationResult
    before: InterpolationResult
    ratio_before: float
    ratio_after: float
    plan: RetimePlan


def step_ratio(distances: Tensor) -> float:
    """``max / mean`` of consecutive-frame distances ``[N-1]``; 1.0 when nothing moves."""
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.numel() == 0:
        return 1.0
    mean = float(d.mean())
    return float(d.max()) / mean if mean > 0 else 1.0


def model_distance(model) -> Distance:
    """The default image distance of a model: `metrics.features.image_distance`, without autograd."""
    from noise2art.metrics.features import image_distance

    def distance(x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return image_distance(model, x.to(model.device), y.to(model.device)).float().cpu()

    return distance


def model_length(model) -> Length:
    """How `model_distance` values add up along a path: their angles (radians)."""
    from noise2art.metrics.features import distance_to_angle

    return distance_to_angle


def _as_distances(d) -> Tensor:
    return torch.as_tensor(d).detach().to("cpu", torch.float64).reshape(-1)


def _consecutive(distance: Distance, images: Tensor) -> Tensor:
    if images.shape[0] < 2:
        return torch.zeros(0, dtype=torch.float64)
    d = _as_distances(distance(images[:-1], images[1:]))
    if d.shape[0] != images.shape[0] - 1 or not bool(torch.isfinite(d).all()):
        raise InvalidArgument("distance", f"must return {images.shape[0] - 1} finite values, got {list(d.shape)}")
    return d.clamp_min(0.0)


def arc_length_alphas(sample_alphas: Tensor, arc_length: Tensor, n: int) -> Tensor:
    """Alphas ``[n]`` at equal steps of the piecewise-linear arc length over the samples.

    ``sample_alphas [M]`` increasing, ``arc_length [M]`` non-decreasing from 0. Flat
    stretches (no change between samples) get a tiny slope proportional to their alpha
    width, so the inverse exists and frames in them spread evenly rather than piling up.
    The ends are the first and last sample exactly.
    """
    a = torch.as_tensor(sample_alphas, dtype=torch.float64)
    s = torch.as_tensor(arc_length, dtype=torch.float64)
    total = float(s[-1])
    width = float(a[-1] - a[0])
    # 1e-6 of the total per full alpha range: invisible next to any real change.
    eps = 1e-6 * (total if total > 0 else 1.0) / width
    s = s + eps * (a - a[0])
    targets = torch.linspace(0.0, float(s[-1]), n, dtype=torch.float64)
    # Invert s(alpha) piecewise linearly.
    j = torch.searchsorted(s, targets, right=True).clamp(1, len(s) - 1)
    s0, s1 = s[j - 1], s[j]
    a0, a1 = a[j - 1], a[j]
    out = a0 + (targets - s0) / (s1 - s0) * (a1 - a0)
    out[0], out[-1] = a[0], a[-1]
    return out


def split_gap(xs: list[float], ims: list[Tensor], gaps: list[float], i: int, new_xs: list[float],
              new_ims: list[Tensor], lengths: list[float]) -> None:
    """Put samples `new_xs` (increasing, inside gap `i`, images `new_ims`) into a sampled
    path in place: gap `i` becomes the `len(new_xs) + 1` gaps `lengths`."""
    xs[i + 1:i + 1] = new_xs
    ims[i + 1:i + 1] = new_ims
    gaps[i:i + 1] = lengths


def refine_gaps(xs: list[float], ims: list[Tensor], gaps: list[float], render: Render, distance: Distance,
                n_out: int, budget: int, per_round: int, min_width: float) -> int:
    """Bisect the largest gaps of a sampled path in place, until no gap exceeds the output
    step (total / (n_out - 1)) or `budget` renders are spent; returns the renders made.

    ``xs [M]`` alphas, ``ims [M]`` their images and ``gaps [M-1]`` the lengths between
    neighbours (``distance`` must add up along the path: a metric, such as the angle)
    grow by one entry per bisection, ``per_round`` bisections per render batch.
    Gaps narrower than ``min_width`` stay: a true discontinuity stays one however finely it
    is sampled.
    """
    refined = 0
    while budget > 0:
        target_step = sum(gaps) / (n_out - 1)
        order = sorted(range(len(gaps)), key=lambda i: gaps[i], reverse=True)
        # A gap no wider than one output step holds at most one output frame: linear is good enough there.
        pick = [i for i in order if gaps[i] > target_step * (1 + 1e-6) and xs[i + 1] - xs[i] > min_width]
        pick = sorted(pick[: min(per_round, budget)])
        if not pick:
            break
        mids = torch.tensor([0.5 * (xs[i] + xs[i + 1]) for i in pick], dtype=torch.float64)
        new = render(mids)
        left = torch.stack([ims[i] for i in pick])
        right = torch.stack([ims[i + 1] for i in pick])
        d_left = _as_distances(distance(left, new)).clamp_min(0)
        d_right = _as_distances(distance(new, right)).clamp_min(0)
        # Insert from the back so earlier indices stay valid.
        for k in reversed(range(len(pick))):
            i = pick[k]
            split_gap(xs, ims, gaps, i, [float(mids[k])], [new[k]], [float(d_left[k]), float(d_right[k])])
        budget -= len(pick)
        refined += len(pick)
    return refined


def retime_alphas(
    alphas: Tensor,
    images: Tensor,
    render: Render,
    distance: Distance,
    config: RetimeConfig | None = None,
    *,
    per_round: int = 8,
    length: Length | None = None,
) -> RetimePlan:
    """Re-time frames ``images [N0, 3, H, W]`` at ``alphas [N0]`` to constant image speed.

    1. Consecutive distances ``d_i = distance(x_i, x_{i+1})``.
    2. Refinement: while the budget ``config.refine`` lasts, bisect the largest gaps
       (``per_round`` at a time, rendered in one batch) and measure both halves. It stops
       early once no gap exceeds the output step (total / (frames - 1)): then no two output
       frames share a gap, and the linear guess inside a gap moves a frame by less than one
       step.
    3. Arc length: cumulative sum of the gaps' lengths over all samples (``length(d)``:
       angles for `model_distance`; the distance itself when None), piecewise linear in alpha.
    4. Output alphas at equal arc-length steps (`arc_length_alphas`); those within
       ``config.snap`` of a sample reuse it, the others are rendered in one batch.

    ``render(alphas [M]) -> images [M, 3, H, W]`` renders the same path at new alphas.
    """
    config = config or RetimeConfig()
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    if alphas.shape[0] < 2 or images.shape[0] != alphas.shape[0]:
        raise InvalidArgument("alphas", f"need >= 2 frames and one image per alpha, got {alphas.shape[0]} and {images.shape[0]}")
    if not bool((alphas[1:] > alphas[:-1]).all()):
        raise InvalidArgument("alphas", "must be strictly increasing")
    n_out = config.frames or alphas.shape[0]
    per_round = max(1, config.per_round or per_round)

    xs = list(alphas.tolist())
    ims = list(images.unbind(0))
    d_before = _consecutive(distance, images)
    to_length = length or (lambda d: d)
    gaps = to_length(d_before).tolist()  # gaps[i]: the length between xs[i] and xs[i+1]

    # 2. Refine where the picture jumps.
    refined = refine_gaps(xs, ims, gaps, render, lambda x, y: to_length(_as_distances(distance(x, y))), n_out,
                          config.refine, per_round, config.min_width)

    # 3. Arc length over all samples.
    sample_alphas = torch.tensor(xs, dtype=torch.float64)
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.tensor(gaps, dtype=torch.float64), 0)])

    # 4. Equal arc-length alphas; reuse samples they (nearly) hit.
    out_alphas = arc_length_alphas(sample_alphas, arc, n_out)
    tol = config.snap * float(sample_alphas[-1] - sample_alphas[0]) / (n_out - 1)
    nearest = torch.searchsorted(sample_alphas, out_alphas).clamp(0, len(xs) - 1)
    out_images: list[Tensor | None] = []
    missing, used = [], set()
    for k, alpha in enumerate(out_alphas.tolist()):
        best = None
        for j in (int(nearest[k]) - 1, int(nearest[k])):
            if j in used or not 0 <= j < len(xs) or abs(xs[j] - alpha) > tol:
                continue
            if best is None or abs(xs[j] - alpha) < abs(xs[best] - alpha):
                best = j
        if best is not None:
            # Each sample serves one frame: inside a jump several outputs may crowd one sample.
            used.add(best)
            out_alphas[k] = xs[best]
            out_images.append(ims[best])
        else:
            out_images.append(None)
            missing.append(k)
    if missing:
        fresh = render(out_alphas[missing])
        for k, image in zip(missing, fresh.unbind(0)):
            out_images[k] = image
    final = torch.stack(out_images)  # type: ignore[arg-type]
    return RetimePlan(
        alphas=out_alphas, images=final, sample_alphas=sample_alphas, arc_length=arc,
        distances_before=d_before, distances_after=_consecutive(distance, final),
        refine_renders=refined, final_renders=len(missing),
    )


def retime(
    model,
    keyframes: Sequence[PromptEmbedding],
    config: InterpolationConfig | None = None,
    retime_config: RetimeConfig | None = None,
    *,
    initial: InterpolationResult | None = None,
    distance: Distance | None = None,
    length: Length | None = None,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
) -> RetimeResult:
    """Interpolate, then re-time the path to constant image-space speed.

    Args:
        model: a loaded `Model`.
        keyframes, config: the path, as for `interpolate`.
        retime_config: `RetimeConfig` (output frames, refinement budget, ...).
        initial: frames already rendered on this path (from `interpolate` with the same
            keyframes and config); rendered here when None.
        distance: ``distance(x, y) -> [B]``; default `model_distance(model)`.
        length: how distances add up along the path (`retime_alphas`); default the angle
            (`model_length`) with the default distance, the distance itself with another.
        callback, cancel: as for `interpolate`, for every render this makes.

    Returns:
        `RetimeResult` with the re-timed frames and the max/mean step ratio before and after.
    """
    config = config or InterpolationConfig()
    retime_config = retime_config or RetimeConfig()
    path = InterpolationPath(model, keyframes, config)
    if initial is None:
        alphas = path.plan()
        initial = path.result(alphas, path.render(alphas, callback=callback, cancel=cancel))
    if distance is None:
        distance, length = model_distance(model), length or model_length(model)

    def render(alphas: Tensor) -> Tensor:
        return path.render(alphas, callback=callback, cancel=cancel)

    plan = retime_alphas(initial.alphas, initial.images, render, distance, retime_config,
                         per_round=config.sampling.batch_size or 8, length=length)
    result = path.result(plan.alphas, plan.images)
    return RetimeResult(interpolation=result, before=initial, ratio_before=plan.ratio_before,
                        ratio_after=plan.ratio_after, plan=plan)
