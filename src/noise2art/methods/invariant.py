"""Seed-invariant prompt embeddings (docs/invariant.md).

Follows Deckers, Peters, Potthast, "Manipulating Embeddings of Stable Diffusion
Prompts" (IJCAI 2024) and its public code: the seed decides much of what a prompt's
image shows ("single color ball" is red for one seed, blue for the next). The method
moves what one *target* seed contributes into the prompt embedding, so that other
seeds give the target's picture.

Parameters (``mode``):
    ``"single-vector"`` (the reference): one D-vector ``w``, repeated over rows 1..L-1 of
    the conditional embedding and initialised from the prompt's last row; ``"full"``
    (ours): rows 1..L-1, each free, initialised from the prompt's rows. Row 0 (BOS /
    CLS) and the unconditional embedding ``U`` never move.

Per iteration ``i`` (stage ``s = min(i // stage_iterations, max_stage)``, position in
the stage ``j = i mod stage_iterations``)::

    v      = anneal[0] + anneal[1] * j                    # 0.01 + 0.00495 j: v restarts each stage
    n_r    = slerp_noise(noise(r), noise(target), v)      # r: seeds_per_step random seeds
    z_r    = sample(E(w), n_r, stop_after = s + 1)        # ONE batch, gradients through all s+1 steps
    score  = sum_r 10000 * cos(z_target(s), z_r)           # float64, flattened latents
    w      = AdamOnLion.step(-grad score)                 # lr 0.01

**Which "step k".** The reference compares latents "after denoising step k" with k in
0, 1, 2. Latents before the first UNet call are the seed's noise alone and do not depend
on the embedding (there would be nothing to optimise at k = 0), so its step k is the
0-based index of the denoising step just taken: stage ``s`` compares the latents after
``s + 1`` UNet calls, ``Model.sample(..., stop_after=s + 1)``.

**Targets.** A seed target's latents at stage ``s`` are the prompt's own embedding
sampled from the target seed to ``stop_after = s + 1`` (no gradients); they are
recomputed whenever ``s`` changes. An image target ``x`` (``[1, 3, H, W]`` in [0, 1]) is
encoded once with the VAE to clean latents ``z0 = model.encode_images(x)``; its latents
at stage ``s`` are what a perfect denoiser would hold after ``s + 1`` steps from the
noise ``eps`` of ``config.seed``: the scheduler's forward process at the timestep
``t_{s+1}`` that those latents sit at,
``scheduler.add_noise(z0, eps, t_{s+1})`` -- ``sqrt(abar) z0 + sqrt(1 - abar) eps`` for
DDIM / PNDM / DPM-Solver, ``z0 + sigma eps`` for the sigma schedulers (LMS, Euler) -- and
``z0`` itself after the last step. ``eps`` is also the noise the random seeds are
slerped toward. See ``docs/invariant.md``.

**Ours: compare predicted pictures** (``compare="prediction"``, the default). Stage ``s``
runs ``k_s = stage_steps[s]`` steps (2, 4, 8 of 20) and takes the clean latents the
denoiser predicts at the k-th, ``x0_r = predict_clean(...)``; the score is
``10000 cos(z0_target, x0_r)`` with ``z0_target`` the target's finished latents (seed
target: the prompt sampled to the end from the target seed; image target: ``z0``). The
score then asks for the target's picture from every seed at every stage, where the
reference's noisy latents after k of 20 steps are mostly the seed's own noise (on the
shipped model its curriculum moves fresh seeds *away* from the target; docs/invariant.md).
``compare="image"`` scores world-CLIP features of the decoded prediction instead.

Beyond the reference: all seeds of an iteration in one UNet batch, the full-rank mode,
clean-prediction comparisons, image targets, and `consistency`, a report of how close
fresh seeds' images come to the target before and after.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noise2art import space
from noise2art.engine import validation as V
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck
from noise2art.engine.schedulers import make_scheduler
from noise2art.engine.settings import SampleSettings, SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.embedding_run import (
    CANCELLED,
    COMPLETED,
    NAN_GRADIENT,
    NAN_SCORE,
    EmbeddingRunResult,
    LoopRecord,
    Scored,
    check_int,
    run_embedding_loop,
)
from noise2art.optim import AdamOnLion

__all__ = [
    "MODES",
    "REFERENCE_TARGET_SEED",
    "REFERENCE_EVAL_SEEDS",
    "COMPLETED",
    "CANCELLED",
    "NAN_SCORE",
    "NAN_GRADIENT",
    "InvariantConfig",
    "StageInfo",
    "InvariantResult",
    "ConsistencyReport",
    "invariant",
    "consistency",
    "prepare_image",
    "render_target",
    "noised_target",
    "draw_seeds",
    "cosine_scores",
    "schedule_timesteps",
    "check_stages",
    "unnamed_families",
]

MODES = ("single-vector", "full")
COMPARES = ("latents", "prediction", "image")
REFERENCE_TARGET_SEED = 510675
"""The reference's target seed for "Single Color Ball"."""
REFERENCE_EVAL_SEEDS = (683395, 297009, 23916, 417016)
"""The seeds the reference shows its result on."""
REFERENCE_CURRICULUM = dict(mode="single-vector", compare="latents", stage_steps=None, max_stage=2, iterations=120,
                            stage_iterations=40)
"""The reference's curriculum, on whatever sampling settings (`InvariantConfig.reference` adds its own)."""
SEED_RANGE = 2**32
"""Random training seeds are drawn from [0, 2^32) (any seed is valid; these print short)."""

# Stop reasons (`InvariantResult.stop_reason`).

ProgressCallback = Callable[[int, int, float, int], object]
"""``callback(iteration, total, score, stage)`` after each iteration (0-based iteration)."""


@dataclass
class InvariantConfig:
    """Settings of one run. The defaults are ours; `reference()` is the published run and
    `REFERENCE_CURRICULUM` its curriculum on any sampling settings.

    Ours compares what the denoiser *predicts* the finished picture to be after 2, 4 and 8
    steps (30 iterations each) with the target's finished latents, and frees every row;
    the reference compares the noisy latents after 1, 2 and 3 steps with the target's,
    through one repeated vector. On the shipped embedded model the reference's curriculum
    makes fresh seeds *less* like the target (docs/invariant.md has the measurements):
    noisy latents after a few of 20 steps are mostly the seed's own noise, so matching them
    rewards an embedding that bends the noise prediction rather than one that draws the
    target.

    Attributes:
        target_seed: the seed whose image the embedding should reproduce for every seed.
        target_image: instead of a seed, an image `[1, 3, H, W]` (or `[3, H, W]`) in [0, 1];
            another size is resized to the model's native size with a warning. Give
            exactly one of the two.
        iterations: optimiser updates (90; the reference: 120).
        seeds_per_step: random seeds per iteration, rendered in one UNet batch (3).
        stage_iterations: iterations per curriculum stage (30; the reference: 40); after
            each, the compared step moves later and the slerp factor restarts.
        compare: what stage s compares: "prediction" (ours: the clean latents the denoiser
            predicts at its step, `Model.sample(predict_clean=True)`, against the target's
            finished latents), "image" (world-CLIP features of that prediction decoded,
            against the target image's) or "latents" (the reference: the noisy latents
            after the step against the target's latents after the same step).
        stage_steps: the UNet calls before each stage compares ((2, 4, 8)); None gives
            the reference's 1, 2, ..., `max_stage + 1`.
        max_stage: without `stage_steps`, the last stage; stage s then compares after
            s + 1 denoising steps (the reference's k = 0, 1, 2: `max_stage=2`).
        anneal: `(v0, dv)`: the random seeds' noise is slerped toward the target's by
            `v = v0 + dv * j` at the j-th iteration of a stage ((0.01, 0.00495)).
        mode: "full" (rows 1..L-1 each free; ours) or "single-vector" (one row repeated
            over rows 1..L-1, the reference's).
        lr: Adam-on-Lion learning rate (0.01); betas, gammas, eps: its coefficients.
        sampling: steps, guidance, scheduler, ... (`SamplingOverrides`; None fields take
            the model's; the reference: 70 LMS steps, guidance 7.5, see `reference()`).
            Each iteration renders its `seeds_per_step` seeds in one batch.
        seed: seeds the stream of random training seeds (so a run is deterministic), and
            for an image target it is the noise the target latents are formed with.
        keep_best: `InvariantResult.embedding` is the best scored iterate of the last
            stage reached (True) or the iterate after the last update (False).
    """

    target_seed: int | None = None
    target_image: Tensor | None = None
    iterations: int = 90
    seeds_per_step: int = 3
    stage_iterations: int = 30
    max_stage: int = 2
    anneal: tuple[float, float] = (0.01, 0.00495)
    mode: str = "full"
    lr: float = 0.01
    compare: str = "prediction"
    stage_steps: tuple[int, ...] | None = (2, 4, 8)
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    seed: int = 0
    keep_best: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    gammas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-3

    @classmethod
    def reference(cls, target_seed: int = REFERENCE_TARGET_SEED, **overrides) -> InvariantConfig:
        """The reference's run: its curriculum (noisy latents after 1, 2, 3 steps, 40 iterations
        each, one vector) with 70 LMS steps and guidance 7.5, target seed 510675."""
        settings = dict(target_seed=target_seed, sampling=SamplingOverrides(steps=70, scheduler="lms", guidance=7.5),
                        **REFERENCE_CURRICULUM)
        settings.update(overrides)
        return cls(**settings)

    def check(self) -> InvariantConfig:
        """Raise `InvalidArgument` naming the first field outside its range; returns self (no model needed)."""
        if (self.target_seed is None) == (self.target_image is None):
            raise InvalidArgument("target", "give exactly one of target_seed and target_image")
        if self.target_seed is not None:
            V.check_seed(self.target_seed, "target_seed")
        else:
            _check_image_tensor(self.target_image)
        check_int("iterations", self.iterations, 1)
        check_int("seeds_per_step", self.seeds_per_step, 1)
        check_int("stage_iterations", self.stage_iterations, 1)
        check_int("max_stage", self.max_stage, 0)
        if self.mode not in MODES:
            raise InvalidArgument("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.compare not in COMPARES:
            raise InvalidArgument("compare", f"must be one of {', '.join(COMPARES)}, got {self.compare!r}")
        if self.stage_steps is not None:
            steps = tuple(self.stage_steps)
            if (not steps or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in steps)
                    or list(steps) != sorted(set(steps))):
                raise InvalidArgument("stage_steps", f"expected increasing step counts >= 1, got {self.stage_steps!r}")
        try:
            v0, dv = (float(a) for a in self.anneal)
        except (TypeError, ValueError):
            raise InvalidArgument("anneal", f"expected two numbers (v0, dv), got {self.anneal!r}") from None
        v_max = v0 + dv * (self.stage_iterations - 1)
        if not (math.isfinite(v0) and math.isfinite(dv) and 0 <= v0 <= 1 and dv >= 0 and v_max <= 1):
            raise InvalidArgument(
                "anneal", f"needs 0 <= v0 <= 1, dv >= 0 and v0 + dv (stage_iterations - 1) <= 1, got "
                          f"{self.anneal!r} (largest v {v_max:g})")
        V.check_seed(self.seed, "seed")
        if not isinstance(self.sampling, SamplingOverrides):
            raise InvalidArgument("sampling", f"expected SamplingOverrides, got {type(self.sampling).__name__}")
        self.sampling.check()
        if not isinstance(self.keep_best, bool):
            raise InvalidArgument("keep_best", f"must be True or False, got {self.keep_best!r}")
        # The optimiser validates lr, betas, gammas and eps with the messages it owns.
        AdamOnLion([torch.zeros(1, requires_grad=True)], lr=self.lr, betas=self.betas, gammas=self.gammas, eps=self.eps)
        return self

    @property
    def noise_seed(self) -> int:
        """The seed of the target noise: the target seed, or `seed` for an image target."""
        return self.target_seed if self.target_seed is not None else self.seed


@dataclass
class StageInfo:
    """One curriculum stage.

    Attributes:
        stage: 0-based; the reference's k.
        stop_after: UNet calls before the latents are compared (`stage + 1`).
        first_iteration: the iteration the stage began at; `iterations` how many it ran.
        target: `[1, C, h, w]` the target latents of this stage (CPU, float32).
        initial_score, final_score, best_score: mean per-seed score (10000 cos) of its
            first, last and best iteration.
    """

    stage: int
    stop_after: int
    first_iteration: int
    target: Tensor
    iterations: int = 0
    initial_score: float = math.nan
    final_score: float = math.nan
    best_score: float = math.nan


@dataclass
class InvariantResult(EmbeddingRunResult):
    """What `invariant` found.

    Attributes:
        scores: `[n]` mean over the iteration's seeds of `10000 cos(target, latents)` for
            the embedding *before* that iteration's update (the objective is their sum).
        seed_scores: `[n][S]` the same per seed; `seeds`: `[n][S]` the seeds drawn.
        stage_of, slerp: `[n]` each iteration's stage and slerp factor v.
        stages: one `StageInfo` per stage reached.
        seconds: `[n]` wall time of iteration i (a new stage's target included);
            `setup_seconds` the time before the first (encoding, the image target).
        best_iteration: the best scored iterate of the last stage reached (None if none).
        best_embedding, final_embedding: that iterate, and the one after the last update
            (the last one with a finite score when a non-finite value stopped the run).
        initial_embedding: the prompt's embedding the run started from.
        stop_reason: "completed", "cancelled", "nan-score" or "nan-gradient".
        settings: the `SampleSettings` the random seeds were rendered with.
        mode, target_seed, noise_seed: copied from the config (`target_seed` None for an
            image target; `noise_seed` the seed of the target noise).
    """

    scores: list[float]
    seed_scores: list[list[float]]
    seeds: list[list[int]]
    stage_of: list[int]
    slerp: list[float]
    stages: list[StageInfo]
    seconds: list[float]
    setup_seconds: float
    best_iteration: int | None
    best_embedding: PromptEmbedding
    final_embedding: PromptEmbedding
    initial_embedding: PromptEmbedding
    stop_reason: str
    stop_message: str
    mode: str
    target_seed: int | None
    noise_seed: int
    settings: SampleSettings | None = None
    keep_best: bool = True

    @property
    def best_score(self) -> float:
        return self.scores[self.best_iteration] if self.best_iteration is not None else math.nan


# ----------------------------------------------------------------------------- images


def _check_image_tensor(image) -> Tensor:
    if not isinstance(image, Tensor):
        raise InvalidArgument("target_image",
                              f"expected an image tensor [1, 3, H, W] in [0, 1], got {type(image).__name__}")
    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3 or min(x.shape[2:]) < 1:
        raise InvalidArgument("target_image", f"expected one RGB image [1, 3, H, W], got {list(image.shape)}")
    if not x.is_floating_point() or not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InvalidArgument("target_image", "expected finite float values in [0, 1]")
    return x


def prepare_image(model, image: Tensor) -> tuple[Tensor, str | None]:
    """Bring a target image to the model's native size.

    Args:
        image: `[1, 3, H, W]` or `[3, H, W]` in [0, 1].

    Returns:
        `(image [1, 3, N, N] on the model's device (float32), notice)`: `notice` is None when
        the image already had the native size `N`, else one line saying what was done (a
        non-square image is centre-cropped to a square first, so nothing is stretched).
    """
    x = _check_image_tensor(image).float()
    n = model.native_size
    h, w = x.shape[-2:]
    if (h, w) == (n, n):
        return x.to(model.device), None
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top:top + side, left:left + side]
    x = F.interpolate(x, size=(n, n), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    crop = f", centre-cropped to {side}x{side}" if side != max(h, w) else ""
    return x.to(model.device), f"target image is {w}x{h}; resized{crop} to the model's {n}x{n}"


def _schedule(model, steps: int, scheduler: str | None):
    """A fresh scheduler set to `steps`, the one `Model.sample` builds for these arguments."""
    name = scheduler if scheduler is not None else model.defaults.scheduler
    sched = make_scheduler(name, model.scheduler_config)
    sched.set_timesteps(steps, device="cpu")
    return sched


def schedule_timesteps(model, steps: int | None = None, scheduler: str | None = None) -> Tensor:
    """The timesteps `Model.sample` walks for these settings: one UNet call each.

    Their count can exceed `steps` (PNDM repeats one, second-order schedulers double them).
    """
    steps = V.check_steps(model.defaults.steps if steps is None else steps)
    return _schedule(model, steps, scheduler).timesteps


def check_stages(model, config: InvariantConfig) -> tuple[int, list[int]]:
    """The denoising steps used and the UNet calls before each stage compares.

    `stage_steps` past the schedule's last call compare at that last call (the picture
    predicted from the final step), so a short schedule runs fewer, distinct stages. With
    `max_stage` instead, stage `max_stage` compares the latents after `max_stage + 1` calls:
    a schedule that makes fewer raises `InvalidArgument`.

    Returns:
        `(steps, stops)`: `stops[s]` is stage s's `stop_after`.
    """
    steps = V.check_steps(model.defaults.steps if config.sampling.steps is None else config.sampling.steps)
    n_timesteps = len(schedule_timesteps(model, steps, config.sampling.scheduler))
    if config.stage_steps:
        return steps, sorted({min(int(k), n_timesteps) for k in config.stage_steps})
    if config.max_stage + 1 > n_timesteps:
        raise InvalidArgument(
            "max_stage", f"stage {config.max_stage} compares latents after {config.max_stage + 1} denoising steps; "
                         f"{steps} steps give {n_timesteps}; use max_stage <= {n_timesteps - 1} or more steps")
    return steps, list(range(1, config.max_stage + 2))


def noised_target(model, z0: Tensor, noise: Tensor, stop_after: int, *, steps: int | None = None,
                  scheduler: str | None = None) -> Tensor:
    """What a perfect denoiser holds after `stop_after` steps from `noise` toward clean latents `z0`.

    The latents after the `stop_after`-th step sit at timestep `t_{stop_after}` of the
    schedule; with noise `eps` they are the forward process at that timestep,
    `scheduler.add_noise(z0, eps, t)` (`sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`, or
    `z0 + sigma_t eps` for sigma schedulers), and `z0` after the last step.

    Args:
        z0: `[1, C, h, w]` clean latents (`Model.encode_images`).
        noise: `[1, C, h, w]` unit-variance noise (`Model.initial_noise`).
        stop_after: in `[1, len(timesteps)]`.

    Returns:
        `[1, C, h, w]` in the latents' parameterisation of that scheduler.
    """
    steps = V.check_steps(model.defaults.steps if steps is None else steps)
    sched = _schedule(model, steps, scheduler)
    timesteps = sched.timesteps
    if not 1 <= stop_after <= len(timesteps):
        raise InvalidArgument("stop_after", f"must be in [1, {len(timesteps)}], got {stop_after}")
    if stop_after == len(timesteps):
        return z0.clone()
    t = timesteps[stop_after:stop_after + 1]
    out = sched.add_noise(z0.float().cpu(), noise.float().cpu(), t)
    return out.to(z0.device, z0.dtype)


def render_target(model, embedding: PromptEmbedding | str, config: InvariantConfig) -> Tensor:
    """The target image `[1, 3, H, W]` in [0, 1]: the prompt on the target seed, or the (resized) image."""
    config.check()
    if config.target_image is not None:
        return prepare_image(model, config.target_image)[0]
    with torch.no_grad():
        return model.render(embedding, [config.target_seed], settings=config.sampling)


# ----------------------------------------------------------------------------- the method


def draw_seeds(rng: np.random.Generator, count: int, exclude: set[int]) -> list[int]:
    """`count` distinct seeds in [0, 2^32) from `rng`, none of them in `exclude`."""
    out: list[int] = []
    while len(out) < count:
        s = int(rng.integers(0, SEED_RANGE))
        if s not in exclude and s not in out:
            out.append(s)
    return out


def cosine_scores(target: Tensor, latents: Tensor) -> Tensor:
    """`10000 * cos(target, latents_r)` in float64, each sample flattened: `[1,...]`, `[S,...]` -> `[S]`."""
    t = target.double().flatten(1)
    z = latents.double().flatten(1)
    return 10000.0 * (z * t).sum(-1) / (z.norm(dim=-1) * t.norm(dim=-1)).clamp_min(1e-300)


def invariant(
    model,
    embedding: PromptEmbedding | str,
    config: InvariantConfig | None = None,
    callback: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> InvariantResult:
    """Optimise a prompt embedding so that random seeds give the target's picture.

    Args:
        model: a `noise2art.Model`.
        embedding: a `PromptEmbedding` of batch 1, or a prompt (encoded here).
        config: `InvariantConfig` with a `target_seed` or a `target_image`.
        callback: `callback(iteration, total, score, stage)` after each iteration.
        cancel: checked between iterations and between denoising steps; True ends the run
            with `stop_reason="cancelled"` and the best iterate so far (no exception).

    Returns:
        `InvariantResult`. A non-finite score or gradient ends the run early, keeping the
        iterates scored so far.
    """
    if config is None:
        raise InvalidArgument("config", "give an InvariantConfig with a target_seed or a target_image")
    config.check()
    tick = time.perf_counter()
    init = model.as_embedding(embedding) if isinstance(embedding, PromptEmbedding) else model.encode([embedding])
    if len(init) != 1:
        raise InvalidArgument("embedding", f"one prompt at a time (batch 1), got a batch of {len(init)}")
    init = init.detach()
    steps, stops = check_stages(model, config)
    # Targets and iterates run on the model's own UNet, so that every score compares alike.
    run = model.resolve(config.sampling.merged(
        SamplingOverrides(steps=steps, batch_size=config.seeds_per_step, precision="model")))
    noise_seed = config.noise_seed
    target_noise = model.initial_noise([noise_seed])  # [1, C, h, w]

    z0 = None
    if config.target_image is not None:
        image, notice = prepare_image(model, config.target_image)
        if notice:
            warnings.warn(notice, stacklevel=2)
        with torch.no_grad():
            z0 = model.encode_images(image).to(model.dtype)

    predict = config.compare in ("prediction", "image")

    if config.compare == "image":
        from noise2art.metrics.features import image_features

        with torch.no_grad():
            if z0 is not None:
                target_image = image
            else:
                target_image = model.decode(model.sample(init, seeds=[noise_seed], latents=target_noise, settings=run,
                                                         batch_size=1))
            target_features = image_features(model, target_image.float())  # [1, F]

    def target_at(stage: int) -> Tensor:
        if config.compare == "image":
            return target_features
        if predict:
            # Every stage compares a clean prediction with the target's clean latents.
            if z0 is None:
                with torch.no_grad():
                    return model.sample(init, seeds=[noise_seed], latents=target_noise, settings=run, batch_size=1)
            return z0
        k = stops[stage]
        if z0 is not None:
            return noised_target(model, z0, target_noise, k, steps=steps, scheduler=run.scheduler)
        with torch.no_grad():
            return model.sample(init, seeds=[noise_seed], latents=target_noise, stop_after=k,
                                settings=run, batch_size=1)

    # Trainable rows in float32 (an fp16 model would lose Adam's small steps to rounding).
    row0 = init.cond[:, :1]  # [1, 1, D]
    length = init.cond.shape[1]
    if config.mode == "single-vector":
        start = init.cond[0, -1].float().clone()  # [D]: the reference starts from the last token's row
    else:
        start = init.cond[0, 1:].float().clone()  # [L-1, D]
    param = start.clone().requires_grad_(True)
    optimizer = AdamOnLion([param], lr=config.lr, betas=config.betas, gammas=config.gammas, eps=config.eps)

    def as_embedding(p: Tensor) -> PromptEmbedding:
        rows = p.expand(length - 1, -1) if p.ndim == 1 else p
        cond = torch.cat([row0, rows[None].to(init.cond.dtype)], dim=1)
        return init.with_tensors(cond, init.uncond)

    rng = np.random.default_rng(config.seed)
    exclude = {noise_seed}
    v0, dv = (float(a) for a in config.anneal)
    total = config.iterations
    stage_of: list[int] = []
    slerp: list[float] = []
    stages: list[StageInfo] = []
    current: dict[str, Tensor] = {}

    def evaluate(i: int) -> Scored:
        stage = min(i // config.stage_iterations, len(stops) - 1)
        k = stops[stage]
        if not stages or stages[-1].stage != stage:
            # A new stage compares one step later: its target latents are recomputed.
            current["target"] = target_at(stage)
            stages.append(StageInfo(stage, k, i, current["target"].detach().to("cpu", torch.float32)))
        v = v0 + dv * (i % config.stage_iterations)
        seeds = draw_seeds(rng, config.seeds_per_step, exclude)
        start_noise = space.slerp_noise(model.initial_noise(seeds), target_noise, v)
        # All seeds in one batch; every one of the k steps carries gradients.
        latents = model.sample(as_embedding(param), seeds=seeds, latents=start_noise, grad_steps="all",
                               stop_after=k, predict_clean=predict, settings=run, cancel=cancel)
        if config.compare == "image":
            # The predicted clean image's features against the target image's.
            latents = image_features(model, model.decode(latents).float())  # [S, F]
        per_seed = cosine_scores(current["target"], latents)  # [S] float64
        stage_of.append(stage)
        slerp.append(v)
        return Scored(per_seed, seeds, -per_seed.sum())

    def is_better(i: int, score: float, record: LoopRecord) -> bool:
        # Scores of an earlier stage (another k) are not comparable: a stage's first score replaces them.
        best = record.best_iteration
        return best is None or stage_of[best] < stage_of[i] or score > record.scores[best]

    def after_iteration(i: int, scored: Scored, record: LoopRecord) -> None:
        info = stages[-1]
        info.iterations += 1
        score = record.scores[-1]
        if info.iterations == 1:
            info.initial_score = score
        info.final_score = score
        if record.best_iteration == i:
            info.best_score = score
        if callback is not None:
            callback(i, total, score, stage_of[i])

    setup_seconds = time.perf_counter() - tick
    record = run_embedding_loop(param, optimizer, total, evaluate, is_better, cancel=cancel,
                                after_iteration=after_iteration)
    n = len(record.scores)  # an iteration that stopped the run is not recorded
    label = f"invariant({init.prompts[0]}, " + (f"seed {config.target_seed})" if config.target_seed is not None
                                                else f"image, noise seed {noise_seed})")
    return InvariantResult(
        **record.result_fields(),
        stage_of=stage_of[:n],
        slerp=slerp[:n],
        stages=[info for info in stages if info.iterations],
        setup_seconds=setup_seconds,
        best_embedding=dataclasses.replace(as_embedding(record.best_param).detach(), prompts=[label]),
        final_embedding=dataclasses.replace(as_embedding(record.final_param).detach(), prompts=[label]),
        initial_embedding=init,
        mode=config.mode,
        target_seed=config.target_seed,
        noise_seed=noise_seed,
        settings=run,
        keep_best=config.keep_best,
    )


# ----------------------------------------------------------------------------- evaluation


@dataclass
class ConsistencyReport:
    """How close an embedding's images on several seeds come to a target image.

    Attributes:
        seeds: the evaluation seeds.
        distances: `[K]` image-space distance of each seed's image to the target
            (`metrics.features.image_distance`: `1 - cos` of world-CLIP features on the
            embedded model, of 32x32 thumbnails on Stable Diffusion; `feature_kind` says which).
        mean_distance: their mean.
        agreement: share of the images whose classified attributes equal the target's on
            every family in `families`; None without an attribute classifier.
        family_agreement: the share per family.
        families: the compared families: those the prompt leaves unnamed (and the target
            shows), e.g. colour, background, style and modifier for "single color ball".
        target_attributes: the target image's classified attributes; `predicted` each image's.
        images: `[K, 3, H, W]` the rendered images (CPU), for contact sheets.
    """

    seeds: list[int]
    distances: list[float]
    mean_distance: float
    feature_kind: str
    agreement: float | None = None
    family_agreement: dict[str, float] = field(default_factory=dict)
    families: list[str] = field(default_factory=list)
    target_attributes: dict[str, str] | None = None
    predicted: list[dict[str, str]] | None = None
    images: Tensor | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """JSON-ready fields (images left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "images"}


def unnamed_families(prompt: str, target_attributes: dict[str, str]) -> list[str]:
    """Families of the target's scene that `prompt` does not name and the target shows."""
    from noise2art.world.attributes import FAMILIES, families_for, is_defined
    from noise2art.world.captions import parse

    named = parse(prompt)
    scene = named.get("scene") or target_attributes.get("scene")
    candidates = families_for(scene) if scene in ("landscape", "still_life") else tuple(FAMILIES)
    return [f for f in candidates if f not in named and f in target_attributes and is_defined(f, target_attributes)]


def consistency(
    model,
    embedding: PromptEmbedding | str,
    target_image: Tensor,
    seeds: Sequence[int],
    *,
    prompt: str | None = None,
    families: Sequence[str] | None = None,
    sampling: SamplingOverrides | SampleSettings | None = None,
    callback=None,
    cancel: CancelCheck | None = None,
    **overrides,
) -> ConsistencyReport:
    """Render `embedding` on `seeds` and measure how close each image comes to `target_image`.

    Args:
        target_image: `[1, 3, H, W]` in [0, 1] (resized to the model's size if needed).
        seeds: evaluation seeds (use seeds the optimisation never drew).
        prompt: the text whose unnamed attributes are compared (default: the embedding's
            prompt; give the original prompt for an optimised embedding).
        families: compare only these attribute families (default: all unnamed ones).
        sampling, overrides: sampling settings, as `Model.sample` takes them (default: the model's).
        callback: a denoising callback `(step, total, latents)`.

    Returns:
        `ConsistencyReport`; attribute fields are None / empty on a model without
        `companions.attributes`.
    """
    from noise2art.metrics.features import feature_kind, image_distance

    seeds = V.check_seeds(seeds)
    target, _ = prepare_image(model, target_image)
    emb = model.as_embedding(embedding) if isinstance(embedding, PromptEmbedding) else model.encode([embedding])
    if len(emb) != 1:
        raise InvalidArgument("embedding", f"one prompt at a time (batch 1), got a batch of {len(emb)}")
    prompt = emb.prompts[0] if prompt is None else prompt
    with torch.no_grad():
        latents, run = model.sample(emb, seeds, settings=sampling, callback=callback, cancel=cancel,
                                    return_settings=True, **overrides)
        images = model.decode(latents, batch_size=run.batch_size).float()
        distances = image_distance(model, images, target.to(images.dtype)).float().cpu()
    report = ConsistencyReport(
        seeds=seeds,
        distances=[float(d) for d in distances],
        mean_distance=float(distances.mean()),
        feature_kind=feature_kind(model),
        images=images.detach().cpu(),
    )
    classifier = model.companions.attributes
    if classifier is None or not hasattr(classifier, "predict"):
        return report
    with torch.no_grad():
        target_attrs = classifier.predict(target.float())[0]
        predicted = classifier.predict(images)
    compared = list(families) if families is not None else unnamed_families(prompt, target_attrs)
    unknown = [f for f in compared if f not in target_attrs]
    if unknown:
        raise InvalidArgument("families", f"the attribute classifier knows {', '.join(target_attrs)}; "
                                          f"not {', '.join(unknown)}")
    report.target_attributes = dict(target_attrs)
    report.predicted = predicted
    report.families = compared
    if compared:
        report.family_agreement = {f: float(np.mean([p.get(f) == target_attrs[f] for p in predicted]))
                                   for f in compared}
        report.agreement = float(np.mean([all(p.get(f) == target_attrs[f] for f in compared) for p in predicted]))
    return report
