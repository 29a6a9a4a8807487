"""What a feedback round shows: `Candidates` (embeddings) and `Variants` (their images)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noise2art.engine.embedding import PromptEmbedding
from noise2art.methods.feedback.term_preferences import Edit

__all__ = ["Candidates", "Variants"]


@dataclass
class Candidates:
    """The candidates of one round (embeddings only; `Variants` adds their images).

    Attributes:
        round: the round they belong to (1 for the first).
        embedding: ``[n, L, D]`` candidate embeddings (the session's negative states).
        similarity: ``[n]`` achieved ``similarity(C, candidate)``.
        target_similarity: the target (None for the bo and terms schemes, which have none).
        t: ``[n, 3]`` steps used (exact: toward B, toward P, final; reference: toward B,
            toward P, NaN); NaN for the bo and terms schemes.
        sources: the pool prompt each candidate came from (BO: a coordinates label; terms:
            the edit, e.g. "+ at sunset").
        style_prompts: the prompt + style terms each candidate moved toward ("" for BO; terms:
            the full text each candidate encodes).
        z: ``[n, k_p + k_n]`` BO coordinates, None for the other schemes.
        noise: ``[n, C, h, w]`` per-candidate initial noise (BO), None when all share the session's.
        edits: the terms scheme's `term_preferences.Edit` per candidate, else None.
        guesses: the terms each candidate adds to the prompt (terms scheme), else None.
    """

    round: int
    embedding: PromptEmbedding
    similarity: Tensor
    target_similarity: float | None
    t: Tensor
    sources: list[str]
    style_prompts: list[str]
    z: np.ndarray | None = None
    noise: Tensor | None = None
    edits: list[Edit] | None = None
    guesses: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.embedding)

    @property
    def similarity_error(self) -> Tensor:
        """``[n]`` ``|achieved - target|`` (NaN without a target)."""
        if self.target_similarity is None:
            return torch.full_like(self.similarity, math.nan)
        return (self.similarity - self.target_similarity).abs()


@dataclass
class Variants:
    """One round as shown: the current image first, then the candidates' images.

    Attributes:
        candidates: the round's `Candidates`.
        images: ``[1 + n, 3, H, W]`` in [0, 1]; index 0 is the current embedding's image.
        seconds: wall time of this round (candidates not cached before + the one render).
    """

    candidates: Candidates
    images: Tensor
    seconds: float

    @property
    def round(self) -> int:
        return self.candidates.round

    @property
    def embeddings(self) -> PromptEmbedding:
        return self.candidates.embedding

    @property
    def similarity(self) -> Tensor:
        return self.candidates.similarity

    @property
    def target_similarity(self) -> float | None:
        return self.candidates.target_similarity

    @property
    def current_image(self) -> Tensor:
        return self.images[:1]

    @property
    def candidate_images(self) -> Tensor:
        return self.images[1:]
