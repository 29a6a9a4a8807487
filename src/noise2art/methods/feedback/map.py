"""A 2-D map of a feedback session: where the current embedding went and what it was shown.

Only the data; `noise2art.plot.save_map_png` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from noise2art.engine.embedding import PromptEmbedding

__all__ = ["FeedbackMap", "pca_map"]


@dataclass
class FeedbackMap:
    """A 2-D projection of a session: coordinates plus what each point is.

    Attributes:
        points: ``[N, 2]`` coordinates (PCA of the flattened rows 1..L-1).
        labels: ``N`` short labels ("start", "1", ..., "current", "c1", "v1", ...).
        kinds: ``N`` of "path" (start and the embedding after each choice; the last is
            the current one), "chosen" (the candidate picked in each round) and
            "candidate" (this round's candidates).
        arrows: ``(from, to)`` index pairs along the path of the current embedding.
        explained: fraction of the variance each of the two axes carries.
    """

    points: np.ndarray
    labels: list[str]
    kinds: list[str]
    arrows: list[tuple[int, int]]
    explained: tuple[float, float]


def pca_map(path: Sequence[PromptEmbedding], chosen: Sequence[PromptEmbedding], rounds: Sequence[int],
            candidates: PromptEmbedding) -> FeedbackMap:
    """Principal components (``torch.linalg.svd``) of the flattened rows ``1..L-1`` of a session's embeddings.

    Args:
        path: ``1 + R`` embeddings ``[1, L, D]``: the start, then the one after each choice.
        chosen: ``R`` embeddings ``[1, L, D]``: the candidate picked in each choice.
        rounds: the ``R`` choices' round numbers (their labels).
        candidates: ``[n, L, D]`` this round's candidates.
    """
    cond = torch.cat([e.cond for e in path] + [e.cond for e in chosen] + [candidates.cond])
    x = cond[:, 1:, :].reshape(cond.shape[0], -1).to(torch.float32).cpu()
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(2, vh.shape[0])
    coords = torch.zeros(x.shape[0], 2)
    coords[:, :k] = x @ vh[:k].T
    var = s ** 2
    total = float(var.sum())
    explained = [float(var[i]) / total if total > 0 and i < len(var) else 0.0 for i in range(2)]
    labels = ["start"] + [str(r) for r in rounds]
    labels[-1] = "current"
    kinds = ["path"] * len(path)
    labels += [f"c{r}" for r in rounds] + [f"v{i + 1}" for i in range(len(candidates))]
    kinds += ["chosen"] * len(chosen) + ["candidate"] * len(candidates)
    arrows = [(i, i + 1) for i in range(len(path) - 1)]
    return FeedbackMap(coords.numpy(), labels, kinds, arrows, (explained[0], explained[1]))
