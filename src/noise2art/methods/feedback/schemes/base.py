"""The protocol every candidate scheme of a feedback session implements, and what it is given.

A scheme decides which candidates a round shows and learns from the user's choices. The
session owns everything else (the current embedding, rendering, the history, the
folder) and calls a scheme only through `Scheme`.

A scheme's *state* is one JSON object per choice it observed (what the round taught it
and where the choice left it), oldest first. The session stores each choice's object in
its `HistoryEntry.scheme_state`; undo restores the states without the last one, resume
restores them all. Storing per-choice objects rather than one growing snapshot keeps
``session.json`` linear in the number of rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import Tensor

from noise2art.engine.embedding import PromptEmbedding
from noise2art.methods.feedback.candidates import Candidates
from noise2art.methods.feedback.config import FeedbackConfig
from noise2art.methods.feedback.pool import CandidatePool

__all__ = ["PoolCallback", "Scheme", "SchemeContext"]

PoolCallback = Callable[[int, int], object]


@dataclass(frozen=True)
class SchemeContext:
    """What a scheme may use of its session (fixed for the session's lifetime).

    Attributes:
        model: the `Model`.
        prompt: the start prompt.
        config: the checked `FeedbackConfig`.
        initial: ``[1, L, D]`` embedding of the start prompt.
        base_noise: ``[1, C, h, w]`` the session's hidden noise.
        session_seed: the seed of the candidate randomness.
        pool: the session's `CandidatePool`, encoded on first use (``pool(callback)``).
    """

    model: object
    prompt: str
    config: FeedbackConfig
    initial: PromptEmbedding
    base_noise: Tensor
    session_seed: int
    pool: Callable[[PoolCallback | None], CandidatePool]


class Scheme(Protocol):
    """A candidate scheme: propose a round, observe a choice, hand out and take back its state."""

    def __init__(self, context: SchemeContext) -> None: ...

    def propose(self, round_: int, current: PromptEmbedding, rng: np.random.Generator,
                pool_callback: PoolCallback | None = None) -> Candidates:
        """Round ``round_``'s candidates around ``current [1, L, D]``, drawing only from ``rng``."""
        ...

    def observe(self, candidates: Candidates, index: int, strength: float) -> dict:
        """Learn that ``candidates[index]`` was picked at ``strength``; returns the state it appended."""
        ...

    def state(self) -> list[dict]:
        """One JSON object per choice observed, oldest first (a copy)."""
        ...

    def restore(self, state: Sequence[dict]) -> None:
        """Become the scheme that observed ``state`` (from `state`; ``[]``: none yet).

        Raises:
            InvalidArgument("session", ...): objects this scheme cannot have written.
        """
        ...

    def noise(self) -> Tensor:
        """``[1, C, h, w]``: the initial noise of the current image."""
        ...
