"""The feed's learner: a GP over item coordinates, fit to recent reactions (docs/feed.md).

An item's coordinates are `[topic one-hot, z] * coordinate_weight` (which topic it comes
from and where around it: embedding and noise coordinates in [-1, 1]), followed by the
image features of its render `* feature_weight` when the feed sees its renders. A reaction is a value:
a like 1, a skip 0, a dwell in between by its length. The learner keeps only the latest
`window` reactions, so a change of taste is forgotten within that many items.
"""

from __future__ import annotations

import numpy as np

from noise2art.errors import InvalidArgument


class FeedLearner:
    """GP regression with an RBF kernel on the latest `window` reactions.

    Args:
        dim: coordinates per item.
        lengthscale: RBF lengthscale.
        noise: observation noise variance (reactions are noisy).
        window: reactions kept; older ones are dropped.
        prior_mean: what an item with no reaction nearby is expected to score.
    """

    def __init__(self, dim: int, *, lengthscale: float = 0.8, noise: float = 0.2, window: int = 60,
                 prior_mean: float = 0.2):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidArgument("dim", f"must be an integer >= 1, got {dim!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InvalidArgument("window", f"must be an integer >= 1, got {window!r}")
        self.dim, self.lengthscale, self.noise, self.window = dim, float(lengthscale), float(noise), window
        self.prior_mean = float(prior_mean)
        self.x = np.zeros((0, dim))
        self.y = np.zeros(0)

    def observe(self, x: np.ndarray, y: float) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(1, self.dim)
        self.x = np.concatenate([self.x, x])[-self.window:]
        self.y = np.concatenate([self.y, [float(y)]])[-self.window:]

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-0.5 * np.maximum(d2, 0.0) / self.lengthscale ** 2)

    def posterior(self, q: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation `([Q], [Q])` at `q [Q, dim]` (given data, or the kept)."""
        x = self.x if x is None else x
        y = self.y if y is None else y
        q = np.asarray(q, dtype=np.float64).reshape(-1, self.dim)
        if x.shape[0] == 0:
            return np.full(q.shape[0], self.prior_mean), np.ones(q.shape[0])
        k = self._kernel(x, x) + self.noise * np.eye(x.shape[0])
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y - self.prior_mean))
        kq = self._kernel(q, x)
        mean = self.prior_mean + kq @ alpha
        v = np.linalg.solve(chol, kq.T)
        return mean, np.sqrt(np.clip(1.0 - (v * v).sum(0), 1e-12, None))

    def pick(self, candidates: np.ndarray, n: int, beta: float, *, diversity: float = 0.0,
             looks: np.ndarray | None = None) -> list[tuple[int, float, float]]:
        """`n` distinct candidate indices by UCB, spread by the kriging believer (each pick is
        assumed observed at its mean before the next), as `(index, mean, std)`.

        `looks [M, F]` (unit image features of the candidates) with `diversity > 0` lowers a
        candidate's score by `diversity` times its largest cosine to the picks before it, so
        one batch does not show the same picture six times (maximal marginal relevance).
        """
        x, y = self.x.copy(), self.y.copy()
        free = np.ones(len(candidates), dtype=bool)
        closest = np.zeros(len(candidates))
        out = []
        for _ in range(min(n, len(candidates))):
            mean, std = self.posterior(candidates, x, y)
            score = np.where(free, mean + beta * std - diversity * closest, -np.inf)
            best = int(np.argmax(score))
            out.append((best, float(mean[best]), float(std[best])))
            free[best] = False
            if looks is not None and diversity:
                closest = np.maximum(closest, np.clip(looks @ looks[best], 0.0, None))
            x = np.concatenate([x, candidates[best:best + 1]])
            y = np.concatenate([y, mean[best:best + 1]])
        return out

    def project(self, dim: int) -> FeedLearner:
        """A learner on the first `dim` coordinates of the kept reactions (same settings): it
        scores points whose later coordinates (image features) are not known yet."""
        out = FeedLearner(dim, lengthscale=self.lengthscale, noise=self.noise, window=self.window,
                          prior_mean=self.prior_mean)
        out.x, out.y = self.x[:, :dim].copy(), self.y.copy()
        return out

    def state(self) -> dict:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    def restore(self, state: dict) -> None:
        self.x = np.asarray(state["x"], dtype=np.float64).reshape(-1, self.dim)
        self.y = np.asarray(state["y"], dtype=np.float64).reshape(-1)
