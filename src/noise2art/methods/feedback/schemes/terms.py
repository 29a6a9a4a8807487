"""The ``terms`` scheme: candidates that add, swap or drop a term, and learnt term preferences.

The scheme keeps a *guess*, terms appended to the prompt; a round's candidates are the
encodings of the prompt plus the guess unchanged ("keep") and edited
(`term_preferences.TermPreferences.propose`), and a choice makes the chosen candidate's
terms the new guess.

Its state per choice: ``{"candidate_edits": [[kind, term, old], ...], "index": i,
"guess": [term, ...]}``, the round's edits, the pick, and the guess after the choice.
The preferences are refitted from them, so undo and resume need nothing else.
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
from noise2art.methods.feedback.pool import encode_prompts
from noise2art.methods.feedback.schemes.base import PoolCallback, SchemeContext
from noise2art.methods.feedback.term_preferences import Edit, TermPreferences, compose

__all__ = ["TermsScheme"]


class TermsScheme:
    """Term-edit candidates; implements `Scheme`."""

    def __init__(self, context: SchemeContext):
        if context.config.terms is None:
            raise InvalidArgument("session", "a terms session's config needs its 'terms'")
        self.context = context
        self._state: list[dict] = []
        self._guess: list[str] = []

    @property
    def guess(self) -> list[str]:
        """The current guess: the terms appended to the prompt (a copy)."""
        return list(self._guess)

    def preferences(self) -> TermPreferences:
        """The term preferences, learnt from every choice observed."""
        prefs = TermPreferences(self.context.config.terms)
        for s in self._state:
            prefs.observe([Edit.from_record(e) for e in s["candidate_edits"]], s["index"])
        return prefs

    def propose(self, round_: int, current: PromptEmbedding, rng: np.random.Generator,
                pool_callback: PoolCallback | None = None) -> Candidates:
        ctx, cfg = self.context, self.context.config
        prefs = self.preferences()
        edits = prefs.propose(self._guess, cfg.n_variants, rng)
        guesses = [prefs.apply(self._guess, e) for e in edits]
        texts = [compose(ctx.prompt, g) for g in guesses]
        cond = encode_prompts(ctx.model, texts).to(current.cond.device, current.cond.dtype)
        sim = space.similarity(current.cond, cond).detach().to(torch.float32).cpu()
        embedding = current.with_tensors(cond, prompts=texts)
        t = torch.full((cfg.n_variants, 3), math.nan)
        return Candidates(round_, embedding, sim, None, t, [e.label() for e in edits], texts,
                          edits=edits, guesses=guesses)

    def observe(self, candidates: Candidates, index: int, strength: float) -> dict:
        state = {"candidate_edits": [e.record() for e in candidates.edits], "index": int(index),
                 "guess": list(candidates.guesses[index])}
        self._state.append(state)
        self._guess = list(state["guess"])
        return state

    def state(self) -> list[dict]:
        return [dict(s) for s in self._state]

    def restore(self, state: Sequence[dict]) -> None:
        """Raises `InvalidArgument` unless each choice holds ``n_variants`` edits of known terms
        and its guess follows from the previous one by the edit picked."""
        n = self.context.config.n_variants
        prefs = TermPreferences(self.context.config.terms)
        guess: list[str] = []
        for r, s in enumerate(state, start=1):
            edits = s.get("candidate_edits") if isinstance(s, dict) else None
            if not isinstance(edits, list) or len(edits) != n:
                raise InvalidArgument("session", f"round {r}: a terms session needs {n} 'candidate_edits'")
            if not is_int(s.get("index")) or not 0 <= s["index"] < n:
                raise InvalidArgument("session", f"round {r}: 'index' must pick one of its {n} candidates")
            parsed = [Edit.from_record(e) for e in edits]
            unknown = [e.term for e in parsed if e.term is not None and e.term not in prefs.index]
            if unknown:
                raise InvalidArgument("session", f"round {r}: unknown term {unknown[0]!r}")
            if s.get("guess") != prefs.apply(guess, parsed[s["index"]]):
                raise InvalidArgument("session", f"round {r}: its guesses do not follow from its edits")
            guess = list(s["guess"])
        self._state = [dict(s) for s in state]
        self._guess = guess

    def noise(self) -> Tensor:
        return self.context.base_noise
