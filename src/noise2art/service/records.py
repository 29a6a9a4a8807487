"""Rendered images -> the store's items: PNG bytes with their metadata, and row fields.

The service's runners and the index build (in-process or on Ray workers) all call
`image_items` and `page_items`, so the same result always becomes the same file, byte for
byte, whichever path rendered it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.model import to_pil
from noise2art.engine.settings import SampleSettings
from noise2art.pngmeta import GenerationParams, png_bytes
from noise2art.service.search import image_feature_rows

FIRST_BATCH = 4
"""A stream page renders its first UNet batch this small, so the first images show soon
(the service streams them out); the index build keeps the same batches, since a sample's
bits can depend on the batch it ran in."""


def image_items(model, images: torch.Tensor, settings: SampleSettings, emb: PromptEmbedding, seeds: list[int], *,
                version: str, method: str, embedding_id: str | None, job_id: str | None, owner: str,
                extra: list[dict] | None = None) -> list[tuple[bytes, dict]]:
    """`images [N, 3, H, W]` in [0, 1] of one embedding on `seeds` (one per image) -> one
    `(png_bytes, fields)` per image, ready for `Store.add_images`."""
    pil = to_pil(images)
    features = image_feature_rows(model, images)
    items = []
    for k, (image, seed) in enumerate(zip(pil, seeds)):
        params = GenerationParams.from_settings(
            settings, prompt=emb.prompts[0], negative=emb.negative[0], seed=seed, model=model.model_id,
            version=version, embedding_hash=emb.hash(), batch_seeds=seeds)
        fields = {"parameters": params.infotext(), **((extra or [{}] * len(pil))[k])}
        items.append((png_bytes(image, params), dict(
            model_id=params.model, embedding_id=embedding_id, prompt=emb.prompts[0], negative=emb.negative[0],
            seed=seed, steps=settings.steps, guidance=settings.guidance, scheduler=settings.scheduler_label,
            width=settings.width, height=settings.height, precision=settings.precision, method=method,
            job_id=job_id, owner=owner, extra=fields, features=features[k])))
    return items


def page_items(model, stream, results: Sequence, images: torch.Tensor, *, version: str, owner: str,
               job_id: str | None, embedding_id: str | None) -> list[tuple[bytes, dict]]:
    """Stream results (`methods.index.Result`) and their images `[N, 3, H, W]` -> store items.

    Each result is its own image record (its batch is itself), with the stream's record of
    it in `extra["stream"]`; `embedding_id` names the stored query embedding (query streams).
    """
    items = []
    for r, image in zip(results, images):
        items += image_items(model, image[None], stream.settings, r.embedding, [r.seed], version=version,
                             method="search", embedding_id=embedding_id if stream.kind == "query" else None,
                             job_id=job_id, owner=owner, extra=[{"stream": r.record}])
    return items
