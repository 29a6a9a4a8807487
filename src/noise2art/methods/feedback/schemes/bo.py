"""The ``bo`` scheme: GP-UCB over a subspace of prompt embedding and initial noise.

Candidates are points ``z = [z_prompt, z_noise]`` of the box ``[-1, 1]^(k_p + k_n)``
(`preference_gp`): the prompt part moves the *start* embedding along the pool's leading
principal axes, the noise part mixes fixed Gaussian fields into the hidden noise. A
`PreferenceGP` fitted to every round so far proposes them; a choice moves the current
noise coordinates toward the chosen candidate's by the strength, as slerp moves ``C``.

Its state per choice: ``{"candidates_z": [n, k_p + k_n], "index": i, "noise_z": [k_n]}``,
the round's coordinates, the pick, and the noise coordinates after the choice. The GP is
refitted from them, so undo and resume need nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from noise2art import space
from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument
from noise2art.methods.feedback.candidates import Candidates
from noise2art.methods.feedback.config import is_int
from noise2art.methods.feedback.preference_gp import (
    EmbeddingSubspace,
    NoiseSubspace,
    PreferenceGP,
    calibrate_radius,
    noise_axes,
    pca_axes,
)
from noise2art.methods.feedback.schemes.base import PoolCallback, SchemeContext

__all__ = ["BoScheme"]

# Independent random streams derived from the session seed (numpy SeedSequence entropy).
_NOISE_AXES_STREAM = 0x6E6F6973  # "nois"
_RADIUS_STREAM = 0x72616469  # "radi"


def _numbers(value, name: str, round_: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument("session", f"round {round_}: '{name}' is not a list of numbers") from None
    if not np.isfinite(arr).all():
        raise InvalidArgument("session", f"round {round_}: '{name}' holds non-finite numbers")
    return arr


class BoScheme:
    """GP-UCB candidates; implements `Scheme`."""

    def __init__(self, context: SchemeContext):
        self.context = context
        cfg = context.config
        self.dim = cfg.prompt_axes + cfg.noise_axes
        self._state: list[dict] = []
        self._noise_z = np.zeros(cfg.noise_axes)  # [k_n] the current image's noise coordinates
        self._subspace: EmbeddingSubspace | None = None
        self._noise_space: NoiseSubspace | None = None

    @property
    def noise_z(self) -> np.ndarray:
        """``[k_n]``: the current image's noise coordinates (a copy)."""
        return self._noise_z.copy()

    def gp(self) -> PreferenceGP:
        """The GP, fitted to every choice observed."""
        gp = PreferenceGP(self.dim, beta=self.context.config.beta)
        for s in self._state:
            gp.observe(np.asarray(s["candidates_z"], dtype=np.float64), s["index"])
        return gp

    # -- subspaces ---------------------------------------------------------------------------

    def _embedding_subspace(self) -> EmbeddingSubspace:
        if self._subspace is None:
            ctx, cfg = self.context, self.context.config
            axes, std = pca_axes(ctx.pool(None).cond, cfg.prompt_axes)
            device = ctx.initial.cond.device
            subspace = EmbeddingSubspace(ctx.initial.cond[0], axes.to(device), std.to(device), 1.0)
            if cfg.bo_radius is None:
                # Fixed sample coordinates (from the session seed) so the radius is reproducible.
                rng = np.random.default_rng([ctx.session_seed, _RADIUS_STREAM])
                z = rng.uniform(-1.0, 1.0, size=(64, cfg.prompt_axes))
                subspace.radius = calibrate_radius(subspace, float(cfg.similarity), z)
            else:
                subspace.radius = float(cfg.bo_radius)
            self._subspace = subspace
        return self._subspace

    def _noise_subspace(self) -> NoiseSubspace:
        if self._noise_space is None:
            ctx = self.context
            seed = int(np.random.default_rng([ctx.session_seed, _NOISE_AXES_STREAM]).integers(2**62))
            base = ctx.base_noise[0]
            axes = noise_axes(tuple(base.shape), ctx.config.noise_axes, seed).to(base.device)
            self._noise_space = NoiseSubspace(base, axes, ctx.config.noise_scale)
        return self._noise_space

    # -- the protocol ------------------------------------------------------------------------

    def propose(self, round_: int, current: PromptEmbedding, rng: np.random.Generator,
                pool_callback: PoolCallback | None = None) -> Candidates:
        cfg = self.context.config
        self.context.pool(pool_callback)
        subspace = self._embedding_subspace()
        z = self.gp().propose(cfg.n_variants, rng)
        cond = subspace.embed(z[:, :cfg.prompt_axes]).to(current.cond.device, current.cond.dtype)
        noise = None
        if cfg.noise_axes:
            noise = self._noise_subspace().noise(z[:, cfg.prompt_axes:]).to(self.context.base_noise.device)
        sim = space.similarity(current.cond, cond).detach().to(torch.float32).cpu()
        embedding = current.with_tensors(
            cond, prompts=[f"feedback round {round_} bo candidate {i + 1}" for i in range(cfg.n_variants)]
        )
        labels = [f"bo z[{', '.join(f'{v:+.2f}' for v in row[:3])}, ...]" for row in z]
        t = torch.full((cfg.n_variants, 3), math.nan)
        return Candidates(round_, embedding, sim, None, t, labels, [""] * cfg.n_variants, z=z, noise=noise)

    def observe(self, candidates: Candidates, index: int, strength: float) -> dict:
        chosen = candidates.z[index, self.context.config.prompt_axes:]
        noise_z = (1.0 - strength) * self._noise_z + strength * chosen
        state = {"candidates_z": np.asarray(candidates.z, dtype=float).tolist(), "index": int(index),
                 "noise_z": noise_z.tolist()}
        self._state.append(state)
        self._noise_z = noise_z
        return state

    def state(self) -> list[dict]:
        return [dict(s) for s in self._state]

    def restore(self, state: Sequence[dict]) -> None:
        k_n = self.context.config.noise_axes
        noise_z = np.zeros(k_n)
        for r, s in enumerate(state, start=1):
            if not isinstance(s, dict) or "candidates_z" not in s or "noise_z" not in s:
                raise InvalidArgument("session", f"round {r}: a bo session's 'scheme_state' needs 'candidates_z', "
                                                 "'index' and 'noise_z'")
            z = _numbers(s["candidates_z"], "candidates_z", r)
            if z.ndim != 2 or z.shape[1] != self.dim:
                raise InvalidArgument("session", f"round {r}: 'candidates_z' must be [n, {self.dim}] coordinates")
            if not is_int(s.get("index")) or not 0 <= s["index"] < z.shape[0]:
                raise InvalidArgument("session", f"round {r}: 'index' must pick one of its {z.shape[0]} candidates")
            noise_z = _numbers(s["noise_z"], "noise_z", r)
            if noise_z.shape != (k_n,):
                raise InvalidArgument("session", f"round {r}: 'noise_z' must hold {k_n} numbers for the bo scheme")
        self._state = [dict(s) for s in state]
        self._noise_z = noise_z

    def noise(self) -> Tensor:
        if self.context.config.noise_axes == 0:
            return self.context.base_noise
        return self._noise_subspace().noise(self._noise_z[None]).to(self.context.base_noise.device)
