"""A weighted blend of prompt embeddings, as one embedding (the CLI's `--blend`, the API's blends)."""

from __future__ import annotations

from collections.abc import Sequence

from noise2art import space
from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument


def blend_embeddings(parts: Sequence[PromptEmbedding], weights: Sequence[float], label: str) -> PromptEmbedding:
    """`sum_k w_k E_k` over K embeddings of batch 1 -> one embedding of batch 1, prompt `label`.

    Both the prompt states and the negative states are blended with `space.blend`
    (weights normalised to sum 1, row 0 from the first part), so the result is an affine
    combination that stays on the embeddings' scale.
    """
    if not parts:
        raise InvalidArgument("blend", "needs at least one part")
    if len(parts) != len(weights):
        raise InvalidArgument("blend", f"{len(parts)} parts but {len(weights)} weights")
    first = parts[0]
    for other in parts[1:]:
        first.check_compatible(other)
    cond = space.blend([p.cond[0] for p in parts], list(weights))  # [L, D]
    uncond = space.blend([p.uncond[0] for p in parts], list(weights))
    return first.with_tensors(cond[None], uncond[None], prompts=[label])
