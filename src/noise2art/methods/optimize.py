"""Metric-based optimisation of a prompt embedding (docs/optimize.md).

Follows Deckers, Peters, Potthast, "Manipulating Embeddings of Stable Diffusion
Prompts" (IJCAI 2024) and its public code: render an image from the embedding with a
fixed seed, score it with a differentiable image metric, and follow the gradient of
the score back through the VAE decoder and the last denoising step(s) to rows
1..L-1 of the conditional and unconditional embeddings. The optimiser is Adam on Lion
(`noise2art.optim.AdamOnLion`).

Per iteration ``i`` (``P`` is the trainable tensor ``[2, L-1, D]``, uncond then cond)::

    E_i    = [row0_cond ; P[1]],  U_i = [row0_uncond ; P[0]]     # row 0 never moves
    x_i    = decode(sample(E_i, U_i, seeds, grad_steps))           # [S, 3, H, W]
    s_i    = mean_seeds(metric(x_i))                               # the recorded score
    loss_i = -mean_seeds(oriented(x_i)) * loss_scale
             + proximity * ||P - P_0||^2 / ||P_0||^2
    P      = AdamOnLion.step(grad loss_i)
    P[k]   = (P[k] - mean P[k]) / std P[k] * std P_0[k] + mean P_0[k]   # every `renorm_every`

``OptimizeConfig.reference()`` is the reference's setting; the dataclass defaults are
ours (fewer steps with DDIM, gradients through the last three steps with
checkpointing, no renormalisation), chosen from the measurements in docs/optimize.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from noise2art.engine import validation as V
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, GradSteps, plan_gradients
from noise2art.engine.settings import SampleSettings, SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.embedding_run import (  # the stop reasons are re-exported for callers
    CANCELLED,  # noqa: F401
    COMPLETED,  # noqa: F401
    NAN_GRADIENT,  # noqa: F401
    NAN_SCORE,  # noqa: F401
    EmbeddingRunResult,
    LoopRecord,
    Scored,
    StopRun,
    check_int,
    run_embedding_loop,
)
from noise2art.methods.picture import PictureReport, adherence_loss, named_attributes, picture_report
from noise2art.metrics import Metric, get_metric
from noise2art.metrics.features import image_distance
from noise2art.optim import AdamOnLion

ProgressCallback = Callable[[int, int, float, float], object]
"""``callback(iteration, total, score, best)`` after each scored iteration (0-based)."""

# Stop reasons (`OptimizeResult.stop_reason`): those of `embedding_run`, and a non-finite render.
NAN_LATENTS = "nan-latents"


@dataclass
class OptimizeConfig:
    """Settings of one optimisation run. The defaults are our mode; `reference()` is the paper's.

    Attributes:
        metric: a metric spec for `noise2art.metrics.get_metric` ("sharpness",
            "aesthetic+0.5*sharpness", "text:a red ball", ...) or a bound `Metric`.
        seeds: seeds rendered each iteration, in one batch; the score is their mean, so
            several seeds favour a gain that holds across seeds.
        iterations: scored iterations. Iteration 0 scores the initial embedding; each
            later one scores the embedding after one more update (so `iterations - 1`
            optimiser steps are taken).
        lr: Adam-on-Lion learning rate (the reference's 0.01).
        sampling: steps, guidance, scheduler, batch size, ... (`SamplingOverrides`; None
            fields take the model's). Ours: 20 DDIM steps; guidance the model's (the
            reference used SD's 7.5, the model default for SD checkpoints). A batch size
            left unset renders all seeds in one batch.
        grad_steps: denoising steps that carry gradients: "last", "last-K", an int K or
            "all" (K > 1 checkpoints each UNet call, so memory stays near one step's).
        renorm_every: rescale rows 1.. of cond and uncond to their initial mean and std
            after every this many updates; None never does. The reference's condition
            fires after every update (1); its authors meant every 150.
        loss_scale: factor on the oriented score in the loss; None uses the metric's own
            (10 for sharpness/blurriness, 1 for aesthetic: the reference's).
        proximity: weight of `||P - P_0||^2 / ||P_0||^2`, which keeps the embedding near
            the prompt's (0: no penalty, as in the reference).
        adherence_weight: weight of the cross-entropy of the attributes the prompt names
            (`methods.picture.adherence_loss`) added to the loss, so the metric cannot buy
            its gain with what the prompt asks for (0: none; needs attribute classifiers).
        picture_weight: weight of the image-space distance of the images to the initial ones
            (world-CLIP `1 - cos`, `metrics.features.image_distance`) added to the loss, so
            the gain does not redraw the picture (0: none).
        adherence_floor: an iterate can be the best only if its prompt adherence is at
            least this share of the initial image's (None: any iterate).
            `unconstrained()` and `reference()` turn both off.
        keep_best: `OptimizeResult.embedding` is the best scored iterate (True) or the
            last one (False). The best is always reported.
        betas, gammas, eps: Adam-on-Lion coefficients (the reference's defaults).
        trajectory_every: keep the images of every n-th iteration (and the last) in
            `OptimizeResult.trajectory`; None keeps none.
    """

    metric: str | Metric = "sharpness"
    seeds: Sequence[int] = (0,)
    iterations: int = 50
    lr: float = 0.01
    sampling: SamplingOverrides = field(default_factory=lambda: SamplingOverrides(steps=20, scheduler="ddim"))
    grad_steps: GradSteps = "last-3"
    renorm_every: int | None = None
    loss_scale: float | None = None
    proximity: float = 0.0
    adherence_weight: float = 1.0
    picture_weight: float = 0.0
    adherence_floor: float | None = 0.9
    keep_best: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    gammas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-3
    trajectory_every: int | None = None

    @classmethod
    def reference(cls, metric: str | Metric = "sharpness", **overrides) -> OptimizeConfig:
        """The reference's setting: 70 LMS steps, gradients through the last denoising step
        only, renormalisation after every update, the metric's own loss scale, lr 0.01.
        Keyword arguments override single fields (seeds, iterations, ...)."""
        settings = dict(
            metric=metric, sampling=SamplingOverrides(steps=70, scheduler="lms"), grad_steps="last", renorm_every=1, loss_scale=None,
            lr=0.01, betas=(0.9, 0.999), gammas=(0.9, 0.99), eps=1e-3, proximity=0.0,
            adherence_weight=0.0, picture_weight=0.0, adherence_floor=None,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def unconstrained(cls, metric: str | Metric = "sharpness", **overrides) -> OptimizeConfig:
        """Our sampling and gradients without the adherence term and floor: the metric alone."""
        settings = dict(metric=metric, adherence_weight=0.0, picture_weight=0.0, adherence_floor=None)
        settings.update(overrides)
        return cls(**settings)

    def check(self) -> OptimizeConfig:
        """Raise `InvalidArgument` naming the first field outside its range; returns self.

        Cheap (no model needed): the CLI calls it before loading weights.
        """
        if not isinstance(self.metric, (str, Metric)) or (isinstance(self.metric, str) and not self.metric.strip()):
            raise InvalidArgument("metric", f"expected a metric spec or a Metric, got {self.metric!r}")
        self.seeds = V.check_seeds(self.seeds)
        check_int("iterations", self.iterations, 1)
        _check_positive("lr", self.lr)
        if not isinstance(self.sampling, SamplingOverrides):
            raise InvalidArgument("sampling", f"expected SamplingOverrides, got {type(self.sampling).__name__}")
        self.sampling.check()
        steps = self.sampling.steps or 1000
        plan = plan_gradients(self.grad_steps, steps)
        if plan.first_grad_step >= steps:
            raise InvalidArgument("grad_steps", "must carry gradients: 'last', 'last-K', an int K >= 1 or 'all', not 'none'")
        if self.renorm_every is not None:
            check_int("renorm_every", self.renorm_every, 1)
        if self.loss_scale is not None:
            _check_positive("loss_scale", self.loss_scale)
        if not (isinstance(self.proximity, int | float) and math.isfinite(self.proximity) and self.proximity >= 0):
            raise InvalidArgument("proximity", f"must be a finite number >= 0, got {self.proximity!r}")
        for name in ("adherence_weight", "picture_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InvalidArgument(name, f"must be a finite number >= 0, got {value!r}")
        if self.adherence_floor is not None and not (
                isinstance(self.adherence_floor, int | float) and 0 <= self.adherence_floor <= 1):
            raise InvalidArgument("adherence_floor", f"must be None or a number in [0, 1], got {self.adherence_floor!r}")
        if self.trajectory_every is not None:
            check_int("trajectory_every", self.trajectory_every, 1)
        # The optimiser validates lr, betas, gammas and eps with the messages it owns.
        AdamOnLion([torch.zeros(1, requires_grad=True)], lr=self.lr, betas=self.betas, gammas=self.gammas, eps=self.eps)
        return self


@dataclass
class OptimizeResult(EmbeddingRunResult):
    """What `optimize` found.

    Scores are the metric's raw values (mean over the seeds), in its own direction:
    for `blurriness` lower is better. "Best" is judged in the metric's direction.

    Attributes:
        metric: the metric's name; `higher_is_better` its direction.
        scores: `[n]` score of iteration i (the embedding after i updates).
        seed_scores: `[n][S]` the same per seed; `seeds`: `[n][S]` the seeds rendered
            (the config's, every iteration).
        seconds: `[n]` wall time of iteration i (render, score, backward, update);
            `setup_seconds` the time before the first (encoding, binding the metric).
        best_iteration: index into `scores` of the best iterate (None if none was scored).
        best_score, best_embedding, best_images: that iterate; images `[S, 3, H, W]` on CPU.
        initial_score, initial_images: iteration 0 (the unmodified embedding).
        initial_embedding: the embedding the run started from.
        adherence: `[n]` prompt adherence of iteration i's images (None entries: the prompt
            names nothing the classifiers check, or the model has none).
        distance: `[n]` mean image-space distance of iteration i's images to iteration 0's.
        named: the attributes adherence is judged on (`picture.named_attributes`).
        initial_picture, best_picture: `PictureReport` of iteration 0 and of the best.
        final_embedding: the iterate after the last update, or the last one with a finite
            score when a non-finite value stopped the run.
        stop_reason: "completed", "cancelled", "nan-score", "nan-gradient" or "nan-latents".
        stop_message: one line saying why it stopped.
        settings: the `SampleSettings` every render ran with.
        trajectory: iteration -> images `[S, 3, H, W]` (every `trajectory_every`-th).
        keep_best: copied from the config; selects `embedding`.
    """

    metric: str
    higher_is_better: bool
    seeds: list[list[int]]
    scores: list[float]
    seed_scores: list[list[float]]
    seconds: list[float]
    setup_seconds: float
    best_iteration: int | None
    best_score: float
    best_embedding: PromptEmbedding
    best_images: torch.Tensor | None
    initial_score: float
    initial_images: torch.Tensor | None
    initial_embedding: PromptEmbedding
    final_embedding: PromptEmbedding
    stop_reason: str
    stop_message: str
    adherence: list[float | None] = field(default_factory=list)
    distance: list[float] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)
    initial_picture: PictureReport | None = None
    best_picture: PictureReport | None = None
    settings: SampleSettings | None = None
    trajectory: dict[int, torch.Tensor] = field(default_factory=dict)
    keep_best: bool = True

    def gain(self) -> float:
        """Best minus initial score, oriented so that an improvement is positive."""
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (self.best_score - self.initial_score)

    def best_so_far(self) -> list[float]:
        """`[n]` the best score up to and including iteration i."""
        out: list[float] = []
        for s in self.scores:
            if not out:
                out.append(s)
            else:
                out.append(max(out[-1], s) if self.higher_is_better else min(out[-1], s))
        return out


def optimize(
    model,
    embedding: PromptEmbedding | str,
    config: OptimizeConfig | None = None,
    callback: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    on_images=None,
) -> OptimizeResult:
    """Gradient ascent on rows 1..L-1 of a prompt embedding's cond and uncond states.

    Args:
        model: a `noise2art.Model`; it is also the metric's context (aesthetic scorer,
            image-text model).
        embedding: a `PromptEmbedding` of batch 1 (or a prompt, encoded here).
        config: `OptimizeConfig` (defaults: our mode); `OptimizeConfig.reference()` for
            the reference's.
        callback: `callback(iteration, total, score, best)` after each scored iteration.
        cancel: checked between iterations and between denoising steps; True ends the run
            with `stop_reason="cancelled"` and the best iterate so far (no exception).
        on_images: `on_images(iteration, images [S, 3, H, W] in [0, 1], on the CPU)` after
            each scored iteration: the current pictures, for a live view.

    Returns:
        `OptimizeResult`. A NaN score or gradient ends the run early, keeping the last
        iterate with a finite score (`stop_reason` says which).
    """
    tick = time.perf_counter()
    config = (config or OptimizeConfig()).check()
    metric = config.metric if isinstance(config.metric, Metric) else get_metric(config.metric, context=model)
    if not metric.bound:
        metric = metric.bind(model)
    init = model.as_embedding(embedding) if isinstance(embedding, PromptEmbedding) else model.encode([embedding])
    if len(init) != 1:
        raise InvalidArgument("embedding", f"optimise one prompt at a time (batch 1), got a batch of {len(init)}")
    init = init.detach()
    seeds = list(config.seeds)
    loss_scale = metric.loss_scale if config.loss_scale is None else float(config.loss_scale)
    sign = 1.0 if metric.higher_is_better else -1.0
    # Every iterate is rendered by the model's own UNet, so that all scores are alike (a
    # precision override applies to renders outside the loop, such as `evaluate_on_seeds`).
    run = model.resolve(config.sampling.merged(
        SamplingOverrides(batch_size=config.sampling.batch_size or len(seeds), precision="model")))

    # The trainable tensor holds rows 1.. of uncond and cond in float32 (an fp16 model
    # would lose Adam's small steps to rounding); row 0 stays outside it, untouched.
    row0_uncond, row0_cond = init.uncond[:, :1], init.cond[:, :1]
    start = torch.cat([init.uncond[:, 1:], init.cond[:, 1:]]).float()  # [2, L-1, D]
    param = start.clone().requires_grad_(True)
    target_mean = start.mean(dim=(1, 2), keepdim=True)
    target_std = start.std(dim=(1, 2), keepdim=True)
    start_sq = start.pow(2).sum().clamp_min(1e-12)
    named = named_attributes(model, init.prompts[0])
    pictures: list[PictureReport] = []
    optimizer = AdamOnLion([param], lr=config.lr, betas=config.betas, gammas=config.gammas, eps=config.eps)
    total = config.iterations

    def as_embedding(p: torch.Tensor) -> PromptEmbedding:
        p = p.to(init.cond.dtype)
        return init.with_tensors(torch.cat([row0_cond, p[1:2]], dim=1), torch.cat([row0_uncond, p[0:1]], dim=1))

    def evaluate(i: int) -> Scored:
        # The last iteration is only scored: no update follows it, so it needs no graph.
        last = i == total - 1
        with torch.set_grad_enabled(not last):
            latents = model.sample(as_embedding(param), seeds, settings=run, grad_steps=config.grad_steps,
                                   cancel=cancel)
            if not torch.isfinite(latents).all():
                raise StopRun(NAN_LATENTS, f"non-finite latents at iteration {i}; kept the last finite iterate")
            images = model.decode(latents, batch_size=run.batch_size)
            raw = metric(images)  # [S]
            initial = images.detach() if i == 0 else kept["initial"]
            pictures.append(picture_report(model, images.detach(), initial, named))
            loss = None
            if not last:
                loss = -(sign * raw).mean() * loss_scale
                if config.proximity:
                    loss = loss + config.proximity * (param - start).pow(2).sum() / start_sq
                if config.adherence_weight and named:
                    loss = loss + config.adherence_weight * adherence_loss(model, images, named)
                if config.picture_weight and i > 0:
                    loss = loss + config.picture_weight * image_distance(model, images, initial).mean()
        return Scored(raw.float(), seeds, loss, images.detach().to("cpu", torch.float32))

    def keeps_adherence(i: int) -> bool:
        floor, start_adherence, now = config.adherence_floor, pictures[0].adherence, pictures[i].adherence
        return floor is None or start_adherence is None or now is None or now >= floor * start_adherence - 1e-9

    def is_better(i: int, score: float, record: LoopRecord) -> bool:
        # Iteration 0 always qualifies, so a best exists even when every update loses adherence.
        if i > 0 and not keeps_adherence(i):
            return False
        return record.best_iteration is None or sign * score > sign * record.scores[record.best_iteration]

    kept: dict[str, torch.Tensor] = {}
    trajectory: dict[int, torch.Tensor] = {}

    def after_update(updates: int) -> None:
        if config.renorm_every and updates % config.renorm_every == 0:
            renormalise_(param, target_mean, target_std)

    def after_iteration(i: int, scored: Scored, record: LoopRecord) -> None:
        if i == 0:
            kept["initial"] = scored.images.to(model.device)
        if record.best_iteration == i:
            kept["best"] = scored.images
        if config.trajectory_every and (i % config.trajectory_every == 0 or i == total - 1):
            trajectory[i] = scored.images
        if on_images is not None:
            on_images(i, scored.images)
        if callback is not None:
            callback(i, total, record.scores[-1], record.scores[record.best_iteration])

    setup_seconds = time.perf_counter() - tick
    record = run_embedding_loop(param, optimizer, total, evaluate, is_better, cancel=cancel,
                                after_update=after_update, after_iteration=after_iteration)
    best = record.best_iteration
    return OptimizeResult(
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        **record.result_fields(),
        setup_seconds=setup_seconds,
        best_score=record.scores[best] if best is not None else math.nan,
        best_embedding=_named(as_embedding(record.best_param).detach(), metric.name, "best"),
        best_images=kept.get("best"),
        initial_score=record.scores[0] if record.scores else math.nan,
        initial_images=kept.get("initial"),
        initial_embedding=init,
        final_embedding=_named(as_embedding(record.final_param).detach(), metric.name, "final"),
        adherence=[p.adherence for p in pictures[:len(record.scores)]],
        distance=[p.distance for p in pictures[:len(record.scores)]],
        named=named,
        initial_picture=pictures[0] if pictures else None,
        best_picture=pictures[best] if best is not None else None,
        settings=run,
        trajectory=trajectory,
        keep_best=config.keep_best,
    )


def renormalise_(param: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Rescale each `param[k]` (`[K, L-1, D]`) in place to mean `mean[k]` and std `std[k]`.

    The reference's renormalisation: the optimised rows keep the statistics of the
    prompt's own rows, so the UNet sees embeddings of the scale it was trained on.
    """
    cur_mean = param.mean(dim=(1, 2), keepdim=True)
    cur_std = param.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    param.sub_(cur_mean).div_(cur_std).mul_(std).add_(mean)
    return param


def evaluate_on_seeds(
    model,
    embedding: PromptEmbedding,
    metric: str | Metric,
    seeds: Sequence[int],
    *,
    sampling: SamplingOverrides | SampleSettings | None = None,
    cancel: CancelCheck | None = None,
    **overrides,
) -> tuple[float, float, list[float]]:
    """Render `embedding` on `seeds` (no gradients) and score each image.

    Use it on seeds the optimisation never saw, for the initial and the best embedding,
    to check that a gain generalises (the reference's evaluation on other seeds).

    Args:
        sampling, overrides: sampling settings, as `Model.sample` takes them.

    Returns:
        `(mean, std, scores)`: the raw metric's mean and population std over the seeds,
        and the per-seed scores `[S]`.
    """
    seeds = V.check_seeds(seeds)
    if not isinstance(metric, Metric):
        metric = get_metric(metric, context=model)
    with torch.no_grad():
        latents, run = model.sample(embedding, seeds, settings=sampling, cancel=cancel, return_settings=True,
                                    **overrides)
        scores = metric(model.decode(latents, batch_size=run.batch_size)).float().cpu()
    values = [float(v) for v in scores]
    mean = float(scores.mean())
    std = float(scores.std(correction=0)) if len(values) > 1 else 0.0
    return mean, std, values


def _named(emb: PromptEmbedding, metric: str, which: str) -> PromptEmbedding:
    """Label the optimised embedding so a saved file says where it came from."""
    return dataclasses.replace(emb, prompts=[f"optimize({emb.prompts[0]}, {metric}, {which})"])


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidArgument(name, f"must be a finite number > 0, got {value!r}")
