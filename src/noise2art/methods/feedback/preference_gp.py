"""The GP-UCB model of the ``bo`` feedback scheme and the subspaces it searches.

Iterative human feedback (docs/feedback.md) shows a few candidates per round and learns
only which one the user picked. The authors' follow-up (Deckers et al.) proposes
candidates with a Gaussian-process upper-confidence-bound (GP-UCB) recommender over a
small box of coordinates instead of at random; this module is that model, kept small
(`schemes.bo` drives it through a session):

* coordinates ``z = [z_prompt (k_p), z_noise (k_n)]`` in the box ``[-1, 1]^(k_p + k_n)``;
* :class:`EmbeddingSubspace` maps ``z_prompt`` to a prompt embedding: the start embedding
  plus ``radius * std_k * z_k`` along the ``k_p`` leading principal axes of a pool of
  random prompts' embeddings (rows ``1..L-1``; row 0, the start token, never moves);
* :class:`NoiseSubspace` maps ``z_noise`` to initial noise: the session's noise plus
  ``scale * z_j`` times fixed Gaussian fields, rescaled by ``1 / sqrt(1 + scale^2 |z|^2)``
  so that the result is again a unit-variance Gaussian field (a sum of independent
  Gaussians);
* :class:`PreferenceGP`: a GP regression with an RBF kernel, in numpy, on pseudo-ratings
  of everything shown so far. A round in which ``n`` candidates were shown and one was
  picked adds ``n`` observations: ``+1`` for the chosen one, ``-1 / (n - 1)`` for the others
  (they sum to 0: "the chosen one is preferred over the others", nothing said about the
  round's overall level). Proposals maximise ``UCB = mean + beta * std`` over random
  points of the box and points near the chosen ones; a batch of ``n`` is built greedily,
  adding each pick as a pseudo-observation at its posterior mean ("kriging believer"), so
  its neighbourhood's variance shrinks and the batch spreads out. ``beta`` is the
  explore/exploit control: 0 exploits the learned preference only, large values explore.

Everything here is deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noise2art.errors import InvalidArgument

__all__ = [
    "EmbeddingSubspace",
    "NoiseSubspace",
    "PreferenceGP",
    "calibrate_radius",
    "noise_axes",
    "pca_axes",
]


# --------------------------------------------------------------------------- subspaces


def pca_axes(cond: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` leading principal axes of embeddings' rows ``1..L-1``.

    Args:
        cond: ``[P, L, D]`` embeddings (a pool of random prompts).
        k: number of axes; at most ``P - 1`` carry variance, the rest come out with std 0.

    Returns:
        ``axes [k, L-1, D]`` unit vectors (signs fixed so that each axis's largest entry
        is positive, for reproducibility across LAPACK builds) and ``std [k]``, the pool's
        standard deviation along each axis.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidArgument("prompt_axes", f"must be an integer >= 1, got {k!r}")
    if cond.ndim != 3 or cond.shape[0] < 2:
        raise InvalidArgument("pool", f"need at least 2 embeddings [P, L, D] for a PCA, got {list(cond.shape)}")
    x = cond[:, 1:, :].reshape(cond.shape[0], -1).to(torch.float32)
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # vh [min(P, F), F]
    m = min(k, vh.shape[0])
    axes = torch.zeros(k, x.shape[1], dtype=torch.float32, device=x.device)
    std = torch.zeros(k, dtype=torch.float32, device=x.device)
    axes[:m] = vh[:m]
    std[:m] = s[:m] / math.sqrt(max(cond.shape[0] - 1, 1))
    sign = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(sign == 0, torch.ones_like(sign), sign)
    return axes.reshape(k, cond.shape[1] - 1, cond.shape[2]), std


@dataclass
class EmbeddingSubspace:
    """``z [N, k] -> cond [N, L, D]``: ``origin + sum_k z_k * radius * std_k * axis_k`` on rows 1..

    Attributes:
        origin: ``[L, D]`` the start embedding (its row 0 is kept as is).
        axes: ``[k, L-1, D]`` unit principal axes (:func:`pca_axes`).
        std: ``[k]`` the pool's spread along each axis.
        radius: how many standard deviations ``z_k = +-1`` reaches.
    """

    origin: Tensor
    axes: Tensor
    std: Tensor
    radius: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.axes.shape[0])

    def embed(self, z: np.ndarray) -> Tensor:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise InvalidArgument("z", f"expected [N, {self.dim}] prompt coordinates, got shape {list(z.shape)}")
        zt = torch.as_tensor(z, dtype=torch.float32, device=self.axes.device)
        scaled = (zt * (self.radius * self.std)[None, :])  # [N, k]
        offset = torch.einsum("nk,kld->nld", scaled, self.axes)  # [N, L-1, D]
        origin = self.origin.to(torch.float32)
        rows = origin[None, 1:, :] + offset
        first = origin[None, :1, :].expand(rows.shape[0], 1, -1)
        return torch.cat([first, rows], dim=1).to(self.origin.dtype)


def calibrate_radius(subspace: EmbeddingSubspace, target: float, z: np.ndarray, *, iterations: int = 40) -> float:
    """The radius at which ``mean_z similarity(origin, embed(z)) == target``, by bisection.

    Makes the bo scheme's box as wide as the random scheme's steps are long: with the
    radius so found, a typical candidate sits near the target similarity to the start
    embedding. ``z [M, k]`` are sample coordinates (e.g. uniform in the box). Returns the
    largest radius tried (``2^20``) when even that stays more similar than ``target``
    (the axes carry no variance).
    """
    from noise2art.space import similarity

    if not (isinstance(target, (int, float)) and math.isfinite(target) and -1 < target < 1):
        raise InvalidArgument("target", f"must be a number in (-1, 1), got {target!r}")
    origin = subspace.origin.to(torch.float32)

    def mean_similarity(radius: float) -> float:
        trial = EmbeddingSubspace(subspace.origin, subspace.axes, subspace.std, radius)
        return float(similarity(origin, trial.embed(z).to(torch.float32)).mean())

    lo, hi = 0.0, 1.0
    while mean_similarity(hi) > target and hi < 2.0 ** 20:
        lo, hi = hi, hi * 2.0
    if mean_similarity(hi) > target:
        return hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mean_similarity(mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def noise_axes(shape: tuple[int, ...], k: int, seed: int) -> Tensor:
    """``[k, *shape]`` standard Gaussian fields drawn from ``seed`` on the CPU (float32)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise InvalidArgument("noise_axes", f"must be an integer >= 0, got {k!r}")
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((k, *shape), generator=generator, dtype=torch.float32)


@dataclass
class NoiseSubspace:
    """``z [N, k] -> noise [N, C, h, w]``: ``(base + scale * sum_j z_j a_j) / sqrt(1 + scale^2 |z|^2)``.

    With ``base`` and the fields ``a_j`` independent standard Gaussian fields, the result
    is again one, whatever ``z``: every point of the subspace is valid initial noise.
    ``z = 0`` gives ``base`` exactly.
    """

    base: Tensor  # [C, h, w]
    axes: Tensor  # [k, C, h, w]
    scale: float = 0.3

    @property
    def dim(self) -> int:
        return int(self.axes.shape[0])

    def noise(self, z: np.ndarray) -> Tensor:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise InvalidArgument("z", f"expected [N, {self.dim}] noise coordinates, got shape {list(z.shape)}")
        base = self.base.to(torch.float32)
        zt = torch.as_tensor(z, dtype=torch.float32)
        if self.dim == 0:
            return base[None].expand(z.shape[0], *base.shape).to(self.base.dtype).clone()
        axes = self.axes.to(base.device)
        mix = torch.einsum("nk,kchw->nchw", zt.to(base.device) * self.scale, axes)
        norm = torch.sqrt(1.0 + (self.scale ** 2) * (zt ** 2).sum(dim=1)).to(base.device)
        return ((base[None] + mix) / norm[:, None, None, None]).to(self.base.dtype)


# --------------------------------------------------------------------------- GP-UCB


class PreferenceGP:
    """GP-UCB over the box ``[-bound, bound]^dim``, learning from "chosen one of these" rounds.

    Args:
        dim: number of coordinates.
        beta: UCB explore/exploit weight (``mean + beta * std``), >= 0.
        lengthscale: RBF lengthscale; default ``0.5 * sqrt(dim)`` (about a quarter of
            the typical distance between two random points of the box).
        noise: observation noise variance: a user's picks are not consistent.
        bound: half-width of the box.
    """

    def __init__(self, dim: int, *, beta: float = 2.0, lengthscale: float | None = None,
                 noise: float = 0.1, bound: float = 1.0):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InvalidArgument("dim", f"must be an integer >= 1, got {dim!r}")
        for name, value in (("beta", beta), ("noise", noise), ("bound", bound)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InvalidArgument(name, f"must be a finite number >= 0, got {value!r}")
        if bound <= 0 or noise <= 0:
            raise InvalidArgument("bound" if bound <= 0 else "noise", "must be > 0")
        self.dim = dim
        self.beta = float(beta)
        self.lengthscale = float(lengthscale) if lengthscale is not None else 0.5 * math.sqrt(dim)
        if not (math.isfinite(self.lengthscale) and self.lengthscale > 0):
            raise InvalidArgument("lengthscale", f"must be a finite number > 0, got {lengthscale!r}")
        self.noise = float(noise)
        self.bound = float(bound)
        self.x = np.zeros((0, dim))
        self.y = np.zeros(0)
        self.positives = np.zeros((0, dim))

    # -- observations ----------------------------------------------------------------------

    def observe(self, shown: np.ndarray, chosen: int) -> None:
        """Add one round: ``shown [n, dim]`` candidates, of which index ``chosen`` was picked."""
        shown = np.asarray(shown, dtype=np.float64)
        if shown.ndim != 2 or shown.shape[1] != self.dim or shown.shape[0] < 1:
            raise InvalidArgument("shown", f"expected [n, {self.dim}] coordinates, got shape {list(shown.shape)}")
        n = shown.shape[0]
        if isinstance(chosen, bool) or not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < n:
            raise InvalidArgument("chosen", f"must be an index in [0, {n - 1}], got {chosen!r}")
        y = np.full(n, -1.0 / (n - 1)) if n > 1 else np.zeros(1)
        y[chosen] = 1.0
        self.x = np.concatenate([self.x, shown])
        self.y = np.concatenate([self.y, y])
        self.positives = np.concatenate([self.positives, shown[chosen:chosen + 1]])

    # -- posterior -------------------------------------------------------------------------

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-0.5 * np.maximum(d2, 0.0) / self.lengthscale ** 2)

    @staticmethod
    def _posterior(x: np.ndarray, y: np.ndarray, q: np.ndarray, kernel, noise: float):
        if x.shape[0] == 0:
            return np.zeros(q.shape[0]), np.ones(q.shape[0])
        k = kernel(x, x) + noise * np.eye(x.shape[0])
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
        kq = kernel(q, x)  # [Q, m]
        mean = kq @ alpha
        v = np.linalg.solve(chol, kq.T)  # [m, Q]
        var = np.clip(1.0 - (v * v).sum(0), 1e-12, None)
        return mean, np.sqrt(var)

    def posterior(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at ``q [Q, dim]`` -> ``([Q], [Q])``."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, self.dim)
        return self._posterior(self.x, self.y, q, self._kernel, self.noise)

    def ucb(self, q: np.ndarray) -> np.ndarray:
        mean, std = self.posterior(q)
        return mean + self.beta * std

    # -- proposals -------------------------------------------------------------------------

    def propose(self, n: int, rng: np.random.Generator, *, n_random: int = 512, n_local: int = 256,
                local_scale: float = 0.25) -> np.ndarray:
        """``n`` points of the box ``[n, dim]`` with high UCB, spread by the kriging believer.

        The search set is ``n_random`` uniform points plus ``n_local`` Gaussian
        perturbations (std ``local_scale * bound``) of the chosen points so far, clipped
        to the box: in 32 dimensions uniform points almost never land near a chosen one,
        so without the local points the scheme could not exploit.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument("n", f"must be an integer >= 1, got {n!r}")
        pool = [rng.uniform(-self.bound, self.bound, size=(n_random, self.dim))]
        if len(self.positives) and n_local > 0:
            centres = self.positives[rng.integers(len(self.positives), size=n_local)]
            local = centres + rng.normal(0.0, local_scale * self.bound, size=centres.shape)
            pool.append(np.clip(local, -self.bound, self.bound))
        search = np.concatenate(pool)
        x, y = self.x.copy(), self.y.copy()
        picks = []
        for _ in range(n):
            mean, std = self._posterior(x, y, search, self._kernel, self.noise)
            score = mean + self.beta * std
            best = int(np.argmax(score))
            picks.append(search[best])
            # Kriging believer: pretend the pick was observed at its mean.
            x = np.concatenate([x, search[best:best + 1]])
            y = np.concatenate([y, mean[best:best + 1]])
            search = np.delete(search, best, axis=0)
        return np.stack(picks)
