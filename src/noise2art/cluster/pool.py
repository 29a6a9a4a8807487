"""An ordered map over model actors: `fn(model, item)` for every item, each actor loading the
model once. The studies (retrievability over a pairs file, `world eval`) split their work
with it, item by item, so their results come back in the order asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from noise2art.cluster import require_ray
from noise2art.cluster.runtime import ModelSpec, cpus, gpus


class ModelActor:
    """Holds one loaded model; `call(fn, item)` runs `fn(model, item)` on it."""

    def __init__(self, spec: ModelSpec, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = spec.load()

    def call(self, fn: Callable, item):
        import torch

        with torch.no_grad():
            return fn(self.model, item)


def map_on_models(spec: ModelSpec, fn: Callable, items: Sequence, *, actors: int | None = None,
                  threads: int | None = None) -> Iterator:
    """`fn(model, item)` for each item on the connected cluster, yielded in item order.

    `fn` must be a module-level function (workers import it by name). Each actor runs
    `threads` torch threads (default: this process's, so CPU results match the in-process
    run bit for bit) and reserves as many CPUs."""
    ray = require_ray()
    import torch
    from ray.util import ActorPool

    threads = threads or torch.get_num_threads()
    cpus_per_actor = float(threads)

    if not items:
        return
    n_gpus = gpus(ray)
    n = actors or (int(n_gpus) if n_gpus >= 1 else max(1, int(cpus(ray) // cpus_per_actor)))
    n = max(1, min(n, len(items)))
    remote = ray.remote(ModelActor).options(num_cpus=cpus_per_actor, num_gpus=1 if n_gpus >= 1 else 0,
                                             max_restarts=-1, max_task_retries=-1)
    pool_actors = [remote.remote(spec, threads) for _ in range(n)]
    try:
        pool = ActorPool(pool_actors)
        yield from pool.map(lambda actor, item: actor.call.remote(fn, item), list(items))
    finally:
        for actor in pool_actors:
            ray.kill(actor)
