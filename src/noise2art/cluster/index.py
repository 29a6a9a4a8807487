"""The index build on Ray Data: page tasks -> `map_batches` over model actors -> the store.

Each actor loads the model once (`ModelSpec.load`) and renders whole pages with the same
`indexing.build.PageRenderer` the in-process build uses, so a page's files are the same
bytes on either path. Only the process that runs the build writes the store: workers send
back each page's PNG bytes and row fields, so the store needs no locking across machines
and a worker that dies mid-page leaves nothing behind. Ray Data restarts a dead actor and
runs its unfinished batches again (actors of `map_batches` restart without limit); a page
that still arrives twice is written once (`indexing.build.write_page`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

from noise2art.cluster import require_ray
from noise2art.cluster.runtime import ModelSpec, cpus, gpus
from noise2art.indexing.build import PageOutput, PageTask, Runner

MAX_BLOCKS = 20_000


@dataclass
class RayIndexConfig:
    """How the build spreads over the cluster.

    Attributes:
        actors: model actors (default: one per GPU, else one per `cpus_per_actor` CPUs).
        pages_per_batch: pages one `map_batches` call renders (default: 1 on CPUs, where a
            page of 24 already fills a UNet batch; 4 on GPUs, which take more work per call).
            A page's own UNet batches never change, so neither do its bytes.
        threads: torch threads of each actor (default: this process's, as the in-process
            build runs). CPU matrix products split their sums by thread count, so a sample's
            last bits depend on it: the same count gives the same files.
        cpus_per_actor: CPUs each actor reserves (default: `threads`).
    """

    actors: int | None = None
    pages_per_batch: int | None = None
    threads: int | None = None
    cpus_per_actor: float | None = None

    def resolved(self) -> tuple[int, float]:
        """`(threads, cpus_per_actor)` with the defaults filled in."""
        import torch

        threads = self.threads or torch.get_num_threads()
        return threads, float(self.cpus_per_actor or threads)


def encode_output(out: PageOutput) -> dict:
    """A rendered page as plain columns: `meta` (JSON) and `blob` (its PNGs and feature rows).

    Explicit, so no object is ever unpickled on the way back; `decode_output` inverts it.
    """
    blobs: list[bytes] = []
    items = []
    for png, fields in out.items:
        fields = dict(fields)
        kind, vector = fields.pop("features")
        items.append({"fields": fields, "feature_kind": kind})
        blobs += [png, vector]
    meta = {"stream_id": out.stream_id, "page": out.page, "owner": out.owner, "idxs": out.idxs,
            "seeds": out.seeds, "worker": out.worker, "items": items, "lengths": [len(b) for b in blobs]}
    return {"meta": json.dumps(meta), "blob": b"".join(blobs)}


def decode_output(meta_text: str, blob: bytes) -> PageOutput:
    """The `PageOutput` that `encode_output` wrote as `(meta, blob)`."""
    meta = json.loads(meta_text)
    parts, start = [], 0
    for length in meta["lengths"]:
        parts.append(bytes(blob[start:start + length]))
        start += length
    items = [(parts[2 * k], {**item["fields"], "features": (item["feature_kind"], parts[2 * k + 1])})
             for k, item in enumerate(meta["items"])]
    return PageOutput(meta["stream_id"], meta["page"], meta["owner"], meta["idxs"], meta["seeds"], items,
                      meta["worker"])


class PageWorker:
    """A Ray Data actor: `{"task": [json]}` batches -> `{"meta": [json], "blob": [bytes]}` (`encode_output`)."""

    def __init__(self, spec: ModelSpec, threads: int | None = None):
        import torch

        from noise2art.indexing.build import PageRenderer

        if threads:
            torch.set_num_threads(threads)
        self.renderer = PageRenderer(spec.load())

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        outs = [encode_output(self.renderer.render(PageTask.from_row({"task": str(t)}))) for t in batch["task"]]
        return {"meta": np.array([o["meta"] for o in outs], dtype=object),
                "blob": np.array([o["blob"] for o in outs], dtype=object)}


def ray_runner(spec: ModelSpec, config: RayIndexConfig | None = None) -> Runner:
    """A runner for `indexing.build.build_index` that renders on the connected Ray cluster."""
    config = config or RayIndexConfig()
    require_ray()  # fail here, before any planning, when Ray is missing

    def run(tasks: list[PageTask]) -> Iterator[PageOutput]:
        import ray
        import ray.data

        n_gpus = gpus(ray)
        threads, cpus_per_actor = config.resolved()
        actors = config.actors or (int(n_gpus) if n_gpus >= 1 else max(1, int(cpus(ray) // cpus_per_actor)))
        actors = max(1, min(actors, len(tasks)))
        per_batch = config.pages_per_batch or (4 if n_gpus >= 1 else 1)
        blocks = max(1, min(MAX_BLOCKS, math.ceil(len(tasks) / per_batch)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the build shows its own, per page written
        ds = ray.data.from_items([t.to_row() for t in tasks], override_num_blocks=blocks)
        # Ray Data restarts a dead actor of the pool and retries its batches (its defaults:
        # max_restarts=-1, max_task_retries=-1).
        ds = ds.map_batches(
            PageWorker, batch_size=per_batch, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor, num_gpus=1 if n_gpus >= 1 else 0, batch_format="numpy",
            fn_constructor_kwargs={"spec": spec, "threads": threads})
        for row in ds.iter_rows():
            yield decode_output(row["meta"], row["blob"])

    return run
