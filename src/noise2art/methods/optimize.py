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
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import Cancelled, InvalidArgument
from noise2art.methods.embedding_run import (
    CANCELLED,
    COMPLETED,
    NAN_GRADIENT,
    NAN_SCORE,
    EmbeddingRunResult,
    check_int,
)
from noise2art.metrics import Metric, get_metric
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
        steps, scheduler, guidance: sampling settings; None takes the model's default
            (guidance: the reference used SD's 7.5, the model default for SD checkpoints).
        grad_steps: denoising steps that carry gradients: "last", "last-K", an int K or
            "all" (K > 1 checkpoints each UNet call, so memory stays near one step's).
        renorm_every: rescale rows 1.. of cond and uncond to their initial mean and std
            after every this many updates; None never does. The reference's condition
            fires after every update (1); its authors meant every 150.
        loss_scale: factor on the oriented score in the loss; None uses the metric's own
            (10 for sharpness/blurriness, 1 for aesthetic: the reference's).
        proximity: weight of `||P - P_0||^2 / ||P_0||^2`, which keeps the embedding near
            the prompt's (0: no penalty, as in the reference).
        keep_best: `OptimizeResult.embedding` is the best scored iterate (True) or the
            last one (False). The best is always reported.
        betas, gammas, eps: Adam-on-Lion coefficients (the reference's defaults).
        batch_size: samples per UNet batch; None renders all seeds in one batch.
        trajectory_every: keep the images of every n-th iteration (and the last) in
            `OptimizeResult.trajectory`; None keeps none.
    """

    metric: str | Metric = "sharpness"
    seeds: Sequence[int] = (0,)
    iterations: int = 50
    lr: float = 0.01
    steps: int | None = 20
    scheduler: str | None = "ddim"
    guidance: float | None = None
    grad_steps: GradSteps = "last-3"
    renorm_every: int | None = None
    loss_scale: float | None = None
    proximity: float = 0.0
    keep_best: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    gammas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-3
    batch_size: int | None = None
    trajectory_every: int | None = None

    @classmethod
    def reference(cls, metric: str | Metric = "sharpness", **overrides) -> OptimizeConfig:
        """The reference's setting: 70 LMS steps, gradients through the last denoising step
        only, renormalisation after every update, the metric's own loss scale, lr 0.01.
        Keyword arguments override single fields (seeds, iterations, ...)."""
        settings = dict(
            metric=metric, steps=70, scheduler="lms", grad_steps="last", renorm_every=1, loss_scale=None,
            lr=0.01, betas=(0.9, 0.999), gammas=(0.9, 0.99), eps=1e-3, proximity=0.0,
        )
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
        SamplingOverrides(steps=self.steps, guidance=self.guidance, scheduler=self.scheduler).check()
        plan = plan_gradients(self.grad_steps, self.steps or 1000)
        if plan.first_grad_step >= (self.steps or 1000):
            raise InvalidArgument("grad_steps", "must carry gradients: 'last', 'last-K', an int K >= 1 or 'all', not 'none'")
        if self.renorm_every is not None:
            check_int("renorm_every", self.renorm_every, 1)
        if self.loss_scale is not None:
            _check_positive("loss_scale", self.loss_scale)
        if not (isinstance(self.proximity, int | float) and math.isfinite(self.proximity) and self.proximity >= 0):
            raise InvalidArgument("proximity", f"must be a finite number >= 0, got {self.proximity!r}")
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
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
        seeds: the seeds rendered each iteration.
        scores: `[n]` score of iteration i (the embedding after i updates).
        seed_scores: `[n][S]` the same per seed.
        seconds: `[n]` wall time of iteration i (render, score, backward, update).
        best_iteration: index into `scores` of the best iterate (None if none was scored).
        best_score, best_embedding, best_images: that iterate; images `[S, 3, H, W]` on CPU.
        initial_score, initial_images: iteration 0 (the unmodified embedding).
        initial_embedding: the embedding the run started from.
        final_embedding: the last iterate with a finite score.
        stop_reason: "completed", "cancelled", "nan-score", "nan-gradient" or "nan-latents".
        stop_message: one line saying why it stopped.
        trajectory: iteration -> images `[S, 3, H, W]` (every `trajectory_every`-th).
        keep_best: copied from the config; selects `embedding`.
    """

    metric: str
    higher_is_better: bool
    seeds: list[int]
    scores: list[float]
    seed_scores: list[list[float]]
    seconds: list[float]
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
    trajectory: dict[int, torch.Tensor] = field(default_factory=dict)
    keep_best: bool = True

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

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

    Returns:
        `OptimizeResult`. A NaN score or gradient ends the run early, keeping the last
        iterate with a finite score (`stop_reason` says which).
    """
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
    sample_kwargs = dict(steps=config.steps, guidance=config.guidance, scheduler=config.scheduler,
                         batch_size=config.batch_size or len(seeds))

    # The trainable tensor holds rows 1.. of uncond and cond in float32 (an fp16 model
    # would lose Adam's small steps to rounding); row 0 stays outside it, untouched.
    row0_uncond, row0_cond = init.uncond[:, :1], init.cond[:, :1]
    start = torch.cat([init.uncond[:, 1:], init.cond[:, 1:]]).float()  # [2, L-1, D]
    param = start.clone().requires_grad_(True)
    target_mean = start.mean(dim=(1, 2), keepdim=True)
    target_std = start.std(dim=(1, 2), keepdim=True)
    start_sq = start.pow(2).sum().clamp_min(1e-12)
    optimizer = AdamOnLion([param], lr=config.lr, betas=config.betas, gammas=config.gammas, eps=config.eps)

    def as_embedding(p: torch.Tensor) -> PromptEmbedding:
        p = p.to(init.cond.dtype)
        return init.with_tensors(torch.cat([row0_cond, p[1:2]], dim=1), torch.cat([row0_uncond, p[0:1]], dim=1))

    scores: list[float] = []
    seed_scores: list[list[float]] = []
    seconds: list[float] = []
    trajectory: dict[int, torch.Tensor] = {}
    best_iteration: int | None = None
    best_value = -math.inf  # oriented
    best_param = start.clone()
    best_images: torch.Tensor | None = None
    initial_images: torch.Tensor | None = None
    last_good = start.clone()
    stop_reason, stop_message = COMPLETED, f"completed {config.iterations} iterations"
    total = config.iterations

    for i in range(total):
        if cancel is not None and cancel():
            stop_reason, stop_message = CANCELLED, f"cancelled before iteration {i}"
            break
        tick = time.perf_counter()
        last = i == total - 1
        optimizer.zero_grad(set_to_none=True)
        # The last iteration is only scored: no update follows it, so it needs no graph.
        with torch.set_grad_enabled(not last):
            try:
                latents = model.sample(as_embedding(param), seeds, grad_steps=config.grad_steps, cancel=cancel,
                                       **sample_kwargs)
            except Cancelled:
                stop_reason, stop_message = CANCELLED, f"cancelled during iteration {i}"
                break
            if not torch.isfinite(latents).all():
                stop_reason = NAN_LATENTS
                stop_message = f"non-finite latents at iteration {i}; kept the last finite iterate"
                break
            images = model.decode(latents, batch_size=sample_kwargs["batch_size"])
            raw = metric(images)  # [S]
            score = float(raw.detach().float().mean())
            if not math.isfinite(score):
                stop_reason = NAN_SCORE
                stop_message = f"NaN score at iteration {i}; kept the last iterate with a finite score"
                break
            if not last:
                loss = -(sign * raw).mean() * loss_scale
                if config.proximity:
                    loss = loss + config.proximity * (param - start).pow(2).sum() / start_sq
                loss.backward()

        # Record this iterate (its score is finite) before any update moves it.
        images_cpu = images.detach().to("cpu", torch.float32)
        scores.append(score)
        seed_scores.append([float(v) for v in raw.detach().float().cpu()])
        last_good = param.detach().clone()
        if i == 0:
            initial_images = images_cpu
        if sign * score > best_value:
            best_value, best_iteration = sign * score, i
            best_param, best_images = last_good, images_cpu
        if config.trajectory_every and (i % config.trajectory_every == 0 or last):
            trajectory[i] = images_cpu

        stop = None
        if not last:
            grad = param.grad
            if grad is None or not torch.isfinite(grad).all():
                stop = (NAN_GRADIENT, f"non-finite gradient at iteration {i}; kept iteration {i}")
            else:
                optimizer.step()
                updates = i + 1
                if config.renorm_every and updates % config.renorm_every == 0:
                    with torch.no_grad():
                        renormalise_(param, target_mean, target_std)
        seconds.append(time.perf_counter() - tick)
        if callback is not None:
            callback(i, total, score, sign * best_value)
        if stop is not None:
            stop_reason, stop_message = stop
            break

    best_score = sign * best_value if best_iteration is not None else math.nan
    return OptimizeResult(
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        seeds=seeds,
        scores=scores,
        seed_scores=seed_scores,
        seconds=seconds,
        best_iteration=best_iteration,
        best_score=best_score,
        best_embedding=_named(as_embedding(best_param).detach(), metric.name, "best"),
        best_images=best_images,
        initial_score=scores[0] if scores else math.nan,
        initial_images=initial_images,
        initial_embedding=init,
        final_embedding=_named(as_embedding(last_good).detach(), metric.name, "final"),
        stop_reason=stop_reason,
        stop_message=stop_message,
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
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    batch_size: int | None = None,
    cancel: CancelCheck | None = None,
) -> tuple[float, float, list[float]]:
    """Render `embedding` on `seeds` (no gradients) and score each image.

    Use it on seeds the optimisation never saw, for the initial and the best embedding,
    to check that a gain generalises (the reference's evaluation on other seeds).

    Returns:
        `(mean, std, scores)`: the raw metric's mean and population std over the seeds,
        and the per-seed scores `[S]`.
    """
    seeds = V.check_seeds(seeds)
    if not isinstance(metric, Metric):
        metric = get_metric(metric, context=model)
    with torch.no_grad():
        latents = model.sample(embedding, seeds, steps=steps, guidance=guidance, scheduler=scheduler,
                               batch_size=batch_size, cancel=cancel)
        scores = metric(model.decode(latents, batch_size=batch_size)).float().cpu()
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
