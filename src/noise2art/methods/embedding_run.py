"""What the embedding optimisers share: stop reasons, the embedding a result hands out, argument checks.

Metric optimisation (`noise2art.methods.optimize`) and seed invariance
(`noise2art.methods.invariant`) both run Adam-on-Lion on a prompt embedding for a number of
iterations, stop early on cancel or a non-finite value, and return the best iterate
unless told to keep the last one.
"""

from __future__ import annotations

from noise2art.errors import InvalidArgument

__all__ = ["CANCELLED", "COMPLETED", "NAN_GRADIENT", "NAN_SCORE", "EmbeddingRunResult", "check_int"]

COMPLETED = "completed"
CANCELLED = "cancelled"
NAN_SCORE = "nan-score"
NAN_GRADIENT = "nan-gradient"


def check_int(name: str, value, minimum: int) -> None:
    """Raise `InvalidArgument(name, ...)` unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(name, f"must be an integer >= {minimum}, got {value!r}")


class EmbeddingRunResult:
    """Mixin of run results with ``scores``, ``best_embedding``, ``final_embedding`` and ``keep_best``."""

    @property
    def embedding(self):
        """The embedding to use: the best iterate, or the last one with `keep_best=False`."""
        return self.best_embedding if self.keep_best else self.final_embedding

    @property
    def iterations(self) -> int:
        """Scored iterations."""
        return len(self.scores)
