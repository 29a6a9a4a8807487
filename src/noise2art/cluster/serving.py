"""Generation on Ray Serve (`noise2art serve --ray ADDRESS`).

The API, the job queue and the store stay in the `serve` process; only the worker's
generate batches (sample + decode) go to a Ray Serve deployment. Its replicas each load
the model once, and `@serve.batch` joins the requests that arrive together, from this
server or from many servers sharing the deployment, into one UNet call per compatible
group (same settings but the batch size). Each answer says which seeds shared its batch,
so every PNG records the batch it really ran in (`GenerationParams.batch_seeds`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from noise2art.cluster import require_ray
from noise2art.cluster.runtime import ModelSpec

APP_NAME = "noise2art-generate"


@dataclass
class ServeConfig:
    """The deployment.

    Attributes:
        name: the Serve application's name (servers sharing one deployment use the same).
        replicas: model replicas (each reserves a GPU when the cluster has any).
        max_batch_size: requests one `@serve.batch` call takes at most.
        batch_wait_timeout_s: how long a batch waits for more requests after its first.
        cpus_per_replica: CPUs each replica reserves.
    """

    name: str = APP_NAME
    replicas: int = 1
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.05
    cpus_per_replica: float = 1.0


def _group_key(settings) -> str:
    return json.dumps(dataclasses.asdict(dataclasses.replace(settings, batch_size=0)), sort_keys=True, default=str)


def render_requests(model, requests: list[dict]) -> list[dict]:
    """Render a batch of requests `{"embeddings": PromptEmbedding [n], "seeds": [n],
    "settings": SampleSettings}` on `model`; one answer per request, in order:
    `{"images": [n, 3, H, W] float32 CPU, "settings": ran, "batch_seeds", "batch": requests joined}`.

    Requests with the same settings (but the batch size) share one `Model.sample` call."""
    import torch

    from noise2art.engine.embedding import PromptEmbedding

    groups: dict[str, list[int]] = {}
    for k, r in enumerate(requests):
        groups.setdefault(_group_key(r["settings"]), []).append(k)
    answers: list[dict | None] = [None] * len(requests)
    for members in groups.values():
        embs = PromptEmbedding.cat([requests[k]["embeddings"] for k in members]).to(model.device, model.dtype)
        seeds = [s for k in members for s in requests[k]["seeds"]]
        settings = requests[members[0]]["settings"]
        with torch.no_grad():
            latents, ran = model.sample(embs, seeds, settings=settings, pairing="zip", batch_size=len(seeds),
                                        return_settings=True)
            images = model.decode(latents, batch_size=len(seeds)).float().cpu()
        start = 0
        for k in members:
            n = len(requests[k]["seeds"])
            answers[k] = {"images": images[start:start + n].clone(), "settings": ran, "batch_seeds": seeds,
                          "batch": len(members)}
            start += n
    return answers


def deployment(spec: ModelSpec, config: ServeConfig | None = None, gpus: float = 0.0):
    """The bound Serve application: a `Generator` deployment on `spec`'s model."""
    config = config or ServeConfig()
    require_ray()
    from ray import serve

    @serve.deployment(name="Generator", num_replicas=config.replicas,
                      ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": 1 if gpus >= 1 else 0},
                      max_ongoing_requests=4 * config.max_batch_size)
    class Generator:
        def __init__(self):
            import torch

            torch.set_num_threads(max(1, int(config.cpus_per_replica)))  # Ray starts workers with one
            self.model = spec.load()
            self.sizes: list[int] = []

        @serve.batch(max_batch_size=config.max_batch_size, batch_wait_timeout_s=config.batch_wait_timeout_s)
        async def generate(self, requests: list[dict]) -> list[dict]:
            import asyncio

            self.sizes.append(len(requests))
            # Off the replica's event loop, so requests keep arriving while a batch renders.
            return await asyncio.to_thread(render_requests, self.model, requests)

        def batch_sizes(self) -> list[int]:
            """Requests per batch so far (what the cluster tests check)."""
            return list(self.sizes)

    return Generator.bind()


def start(spec: ModelSpec, config: ServeConfig | None = None):
    """Deploy (or update) the generator on the connected cluster; its handle."""
    ray = require_ray()
    from ray import serve

    from noise2art.cluster.runtime import gpus

    config = config or ServeConfig()
    serve.start(proxy_location="Disabled")
    return serve.run(deployment(spec, config, gpus(ray)), name=config.name, route_prefix=None)


def stop(config: ServeConfig | None = None) -> None:
    from ray import serve

    serve.delete((config or ServeConfig()).name)


class RemoteGenerator:
    """The worker's generator (`Worker.generator`): one blocking call per generate batch."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, embeddings, seeds: list[int], settings):
        answer = self.handle.generate.remote({"embeddings": embeddings.to("cpu"), "seeds": list(seeds),
                                              "settings": settings}).result()
        return answer["images"], answer["settings"], answer["batch_seeds"]


def attach(app, generator: Callable) -> None:
    """Make the app's worker send its generate batches to `generator` once it starts
    (wraps the app's lifespan; everything else stays as the app built it)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a) -> AsyncIterator:
        async with inner(a) as state:
            a.state.worker.generator = generator
            yield state

    app.router.lifespan_context = lifespan
