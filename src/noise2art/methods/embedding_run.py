"""The loop the embedding optimisers share, and what their results have in common.

Metric optimisation (`noise2art.methods.optimize`) and seed invariance
(`noise2art.methods.invariant`) both run Adam-on-Lion on rows 1..L-1 of a prompt
embedding (row 0, the BOS / CLS state, never moves) for a number of iterations, stop early
on cancel or a non-finite value, and return the best iterate unless told to keep the last
one. `run_embedding_loop` is that loop; each method supplies only what one iteration
renders and scores (`evaluate`), and which iterate is best.

Result fields mean the same in both methods:
    scores: `[n]` the recorded score of iteration i (before that iteration's update).
    seed_scores, seeds: `[n][S]` the same per seed, and the seeds rendered at iteration i.
    seconds: `[n]` wall time of iteration i (render, score, backward, update);
        `setup_seconds` what came before the first iteration (targets, encoding).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from noise2art.engine.sampling import CancelCheck
from noise2art.errors import Cancelled, InvalidArgument

__all__ = [
    "CANCELLED", "COMPLETED", "NAN_GRADIENT", "NAN_SCORE",
    "EmbeddingRunResult", "Scored", "StopRun", "LoopRecord", "run_embedding_loop", "check_int",
]

COMPLETED = "completed"
CANCELLED = "cancelled"
NAN_SCORE = "nan-score"
NAN_GRADIENT = "nan-gradient"


def check_int(name: str, value, minimum: int) -> None:
    """Raise `InvalidArgument(name, ...)` unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(name, f"must be an integer >= {minimum}, got {value!r}")


class StopRun(Exception):
    """Raised by an `evaluate` function to end the run early, keeping the iterates before it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Scored:
    """What one iteration's forward pass produced.

    Attributes:
        values: `[S]` per-seed scores (a tensor, kept in the graph while `loss` needs it).
        seeds: the seeds rendered.
        loss: the scalar to minimise; None when no update follows this iterate.
        images: `[S, 3, H, W]` images to keep with this iterate (CPU), or None.
    """

    values: Tensor
    seeds: list[int]
    loss: Tensor | None
    images: Tensor | None = None

    @property
    def score(self) -> float:
        return float(self.values.detach().double().mean())


@dataclass
class LoopRecord:
    """What `run_embedding_loop` saw, iteration by iteration (fields as in the module docstring)."""

    scores: list[float] = field(default_factory=list)
    seed_scores: list[list[float]] = field(default_factory=list)
    seeds: list[list[int]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_iteration: int | None = None
    best_param: Tensor | None = None
    final_param: Tensor | None = None
    stop_reason: str = COMPLETED
    stop_message: str = ""

    def result_fields(self) -> dict:
        """The fields every run result takes straight from the record."""
        return dict(scores=self.scores, seed_scores=self.seed_scores, seeds=self.seeds, seconds=self.seconds,
                    best_iteration=self.best_iteration, stop_reason=self.stop_reason,
                    stop_message=self.stop_message)


def run_embedding_loop(
    param: Tensor,
    optimizer: torch.optim.Optimizer,
    iterations: int,
    evaluate: Callable[[int], Scored],
    is_better: Callable[[int, float, LoopRecord], bool],
    *,
    cancel: CancelCheck | None = None,
    after_update: Callable[[int], object] | None = None,
    after_iteration: Callable[[int, Scored, LoopRecord], object] | None = None,
) -> LoopRecord:
    """Run `iterations` scored iterations of gradient descent on `param`.

    Per iteration ``i``: check `cancel`; ``scored = evaluate(i)`` under autograd (it may
    raise `Cancelled` or `StopRun`); stop on a non-finite score; backpropagate
    ``scored.loss`` (if any); record the iterate and, when ``is_better(i, score, record)``,
    make it the best; stop on a non-finite gradient (no update), else step the optimiser
    and call ``after_update(updates)``; then ``after_iteration(i, scored, record)``.

    Args:
        param: the trainable tensor (float32, `requires_grad`); updated in place.
        optimizer: an optimiser over `[param]`.
        evaluate: renders and scores the current `param`.
        is_better: whether iteration i's (finite) score beats `record.best_iteration`'s.

    Returns:
        `LoopRecord`: `best_param` the best iterate (the start when none was scored);
        `final_param` the iterate after the last update, or the last finite one when a
        non-finite score or gradient ended the run.
    """
    record = LoopRecord(stop_message=f"completed {iterations} iterations")
    record.best_param = param.detach().clone()
    last_scored = last_good = param.detach().clone()
    updates = 0
    for i in range(iterations):
        if cancel is not None and cancel():
            record.stop_reason, record.stop_message = CANCELLED, f"cancelled before iteration {i}"
            break
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        try:
            with torch.enable_grad():
                scored = evaluate(i)
                score = scored.score
                if not math.isfinite(score):
                    raise StopRun(NAN_SCORE, f"non-finite score at iteration {i}; kept the last iterate "
                                             "with a finite score")
                if scored.loss is not None:
                    scored.loss.backward()
        except Cancelled:
            record.stop_reason, record.stop_message = CANCELLED, f"cancelled during iteration {i}"
            break
        except StopRun as stop:
            # The update that led here made a non-finite value: keep the iterate before it.
            record.stop_reason, record.stop_message = stop.reason, stop.message
            last_good = last_scored
            break

        # Record this iterate (its score is finite) before any update moves it.
        record.scores.append(score)
        record.seed_scores.append([float(v) for v in scored.values.detach().double().cpu()])
        record.seeds.append(list(scored.seeds))
        last_scored = last_good = param.detach().clone()
        if is_better(i, score, record):
            record.best_iteration, record.best_param = i, last_scored

        stop = None
        if scored.loss is not None:
            grad = param.grad
            if grad is None or not torch.isfinite(grad).all():
                stop = (NAN_GRADIENT, f"non-finite gradient at iteration {i}; kept iteration {i} (no update)")
            else:
                optimizer.step()
                updates += 1
                if after_update is not None:
                    with torch.no_grad():
                        after_update(updates)
                last_good = param.detach().clone()
        record.seconds.append(time.perf_counter() - tick)
        if after_iteration is not None:
            after_iteration(i, scored, record)
        if stop is not None:
            record.stop_reason, record.stop_message = stop
            break
    record.final_param = last_good
    return record


class EmbeddingRunResult:
    """Mixin of run results with ``scores``, ``seeds``, ``seconds``, ``setup_seconds``,
    ``best_embedding``, ``final_embedding`` and ``keep_best``."""

    @property
    def embedding(self):
        """The embedding to use: the best iterate, or the last one with `keep_best=False`."""
        return self.best_embedding if self.keep_best else self.final_embedding

    @property
    def iterations(self) -> int:
        """Scored iterations."""
        return len(self.scores)

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run: the setup and every iteration."""
        return float(self.setup_seconds + sum(self.seconds))

    def seen_seeds(self) -> list[int]:
        """Every seed the run rendered, each once, in the order first seen (to pick unseen ones)."""
        return list(dict.fromkeys(s for seeds in self.seeds for s in seeds))
