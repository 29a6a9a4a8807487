"""The ``random`` scheme, the reference's: candidates at a fixed similarity, toward random prompts.

It learns nothing from the choices, so its state is an empty object per choice. Steps
of round ``r`` (the package docstring has the full rule):

1. ``n`` picks by greedy farthest-point selection on the session's pool, starting from a
   random pool member.
2. For each pick ``B`` and a style prompt ``P``: ``C`` moved toward ``B``, then toward
   ``P`` (``step_rule="exact"``: each move, and a last one from ``C``, solved to the target
   similarity; ``"reference"``: the reference's approximate ``t`` for both moves).
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
from noise2art.methods.feedback.pool import encode_prompts, farthest_point_selection, style_prompt
from noise2art.methods.feedback.schemes.base import PoolCallback, SchemeContext

__all__ = ["RandomScheme"]


class RandomScheme:
    """The reference's candidates; implements `Scheme`."""

    def __init__(self, context: SchemeContext):
        self.context = context
        self._state: list[dict] = []

    def propose(self, round_: int, current: PromptEmbedding, rng: np.random.Generator,
                pool_callback: PoolCallback | None = None) -> Candidates:
        ctx, cfg = self.context, self.context.config
        pool = ctx.pool(pool_callback)
        L = pool.cond.shape[1]
        if not -L <= cfg.distance_row < L:
            raise InvalidArgument("distance_row", f"row {cfg.distance_row} is out of range for L = {L}")
        first = int(rng.integers(len(pool)))
        picks = farthest_point_selection(pool.cond[:, cfg.distance_row, :], cfg.n_variants, first)
        b = pool.cond[picks].to(current.cond.device, current.cond.dtype)  # [n, L, D]
        style_prompts = [style_prompt(rng, ctx.prompt, cfg) for _ in picks]
        p = encode_prompts(ctx.model, style_prompts)  # [n, L, D]
        c = current.cond  # [1, L, D]
        target = float(cfg.similarity)
        if cfg.step_rule == "exact":
            first_move = space.slerp_to_similarity(c, b, target)
            second_move = space.slerp_to_similarity(first_move.embedding, p, target)
            final = space.slerp_to_similarity(c, second_move.embedding, target)
            cond = final.embedding
            t = torch.stack([first_move.t, second_move.t, final.t], dim=1).to(torch.float32)
        else:
            e1, t1 = self._reference_moves(c.expand_as(b), b, target)
            cond, t2 = self._reference_moves(e1, p, target)
            t = torch.stack([t1, t2, torch.full_like(t1, math.nan)], dim=1)
        sim = space.similarity(c, cond).detach().to(torch.float32).cpu()
        embedding = current.with_tensors(
            cond.detach(), prompts=[f"feedback round {round_} candidate {i + 1}" for i in range(len(picks))]
        )
        return Candidates(round_, embedding, sim, target, t.detach().cpu(), [pool.prompts[i] for i in picks],
                          style_prompts)

    def _reference_moves(self, a: Tensor, b: Tensor, target: float) -> tuple[Tensor, Tensor]:
        """The reference's step per batch element: ``slerp(a_i, b_i, (1-target)/(1-cos(row)))``.

        ``t`` is not clamped (it extrapolates past ``b`` when ``cos > target``); an
        infinite ``t`` (that row of ``a`` and ``b`` coincide) becomes 0, where the
        reference would produce NaN.
        """
        t = space.reference_step_t(a, b, target, row=self.context.config.distance_row).to(torch.float32)
        t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        moved = torch.stack([space.slerp(a[i], b[i], float(t[i])) for i in range(a.shape[0])])
        return moved, t.cpu()

    def observe(self, candidates: Candidates, index: int, strength: float) -> dict:
        self._state.append({})
        return {}

    def state(self) -> list[dict]:
        return [dict(s) for s in self._state]

    def restore(self, state: Sequence[dict]) -> None:
        if any(not isinstance(s, dict) for s in state):
            raise InvalidArgument("session", "a random session's 'scheme_state' must be an object per choice")
        self._state = [dict(s) for s in state]

    def noise(self) -> Tensor:
        return self.context.base_noise
