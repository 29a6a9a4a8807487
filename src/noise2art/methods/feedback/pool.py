"""The candidate pool of a feedback session: random prompts, encoded once, and picks from them."""

from __future__ import annotations

import math
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noise2art.errors import InvalidArgument
from noise2art.methods.feedback.config import FeedbackConfig, is_int
from noise2art.methods.vocabulary import default_vocabulary

__all__ = ["CandidatePool", "build_pool", "encode_prompts", "farthest_point_selection", "random_prompt",
           "style_prompt"]

# An independent random stream derived from the session seed (numpy SeedSequence entropy).
_POOL_STREAM = 0x706F6F6C  # "pool"


def random_prompt(rng: np.random.Generator, vocabulary: Sequence[str] | None, words: int,
                  style_terms: Sequence[str], n_style_terms: int) -> str:
    """``words`` random words and ``n_style_terms`` distinct random style terms, comma-joined.

    Without a vocabulary a word is 3-8 random lowercase letters (the reference's random strings).
    """
    if vocabulary:
        picked = [str(vocabulary[i]) for i in rng.integers(len(vocabulary), size=words)]
    else:
        letters = np.array(list(string.ascii_lowercase))
        picked = ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(words)]
    parts = [" ".join(picked)]
    if n_style_terms:
        parts += [str(style_terms[i]) for i in rng.choice(len(style_terms), size=n_style_terms, replace=False)]
    return ", ".join(parts)


def style_prompt(rng: np.random.Generator, prompt: str, config: FeedbackConfig) -> str:
    """The user's prompt plus ``config.n_style_terms`` distinct random style terms."""
    terms = config.style_terms
    picks = [terms[i] for i in rng.choice(len(terms), size=config.n_style_terms, replace=False)]
    return ", ".join([prompt, *picks]) if picks else prompt


def encode_prompts(model, prompts: list[str], batch: int = 64) -> Tensor:
    """Prompt states ``[N, L, D]`` only: the candidates share the session's negative-prompt states,
    so encoding the negatives as `Model.encode` does would double the cost of the pool."""
    parts = []
    with warnings.catch_warnings():
        # Random prompts past the encoder's length are cut silently: their tail is random too.
        warnings.simplefilter("ignore")
        for start in range(0, len(prompts), batch):
            parts.append(model.text_encoder(prompts[start:start + batch], model.device, model.dtype).states)
    return torch.cat(parts)


@dataclass
class CandidatePool:
    """Random prompts and their states, drawn once per session.

    Attributes:
        prompts: ``P`` prompt texts.
        cond: ``[P, L, D]`` their text-encoder states.
        seed: the session seed they were drawn from.
        model_id: the model that encoded them.
    """

    prompts: list[str]
    cond: Tensor
    seed: int
    model_id: str

    def __len__(self) -> int:
        return len(self.prompts)


def build_pool(model, config: FeedbackConfig, seed: int,
               callback: Callable[[int, int], object] | None = None) -> CandidatePool:
    """Draw and encode ``config.pool_size`` random prompts from ``seed`` (``callback(done, total)``)."""
    config.check()
    rng = np.random.default_rng([int(seed), _POOL_STREAM])
    vocabulary = default_vocabulary(model)
    prompts = [
        random_prompt(rng, vocabulary, config.words_per_prompt, config.style_terms, config.n_style_terms)
        for _ in range(config.pool_size)
    ]
    parts, batch = [], 64
    for start in range(0, len(prompts), batch):
        parts.append(encode_prompts(model, prompts[start:start + batch]))
        if callback is not None:
            callback(min(start + batch, len(prompts)), len(prompts))
    return CandidatePool(prompts, torch.cat(parts), int(seed), model.model_id)


def farthest_point_selection(rows: Tensor, n: int, first: int) -> list[int]:
    """Greedy farthest-point selection of ``n`` of ``rows [P, D]`` under ``1 - cos``.

    Starts at ``first``; each next pick maximises its least distance to those picked.
    Returns the indices in pick order.
    """
    if rows.ndim != 2:
        raise InvalidArgument("rows", f"expected [P, D], got {list(rows.shape)}")
    p = rows.shape[0]
    if not is_int(n) or not 1 <= n <= p:
        raise InvalidArgument("n", f"must be an integer in [1, {p}], got {n!r}")
    if not is_int(first) or not 0 <= first < p:
        raise InvalidArgument("first", f"must be an index in [0, {p - 1}], got {first!r}")
    unit = torch.nn.functional.normalize(rows.to(torch.float32), dim=-1)
    picked = [int(first)]
    least = 1.0 - unit @ unit[first]
    least[first] = -math.inf
    for _ in range(n - 1):
        j = int(torch.argmax(least))
        picked.append(j)
        least = torch.minimum(least, 1.0 - unit @ unit[j])
        least[picked] = -math.inf
    return picked
