"""Connecting to Ray, and what each worker loads.

`--ray local` starts a Ray instance inside this process's machine (and stops it after);
`--ray auto` joins the cluster this machine is part of (`ray start` ran here); any other
value is a cluster address (`HOST:6379` or `ray://HOST:10001`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from noise2art.cluster import require_ray
from noise2art.errors import InvalidArgument


@dataclass(frozen=True)
class ModelSpec:
    """The model a worker loads (`engine.loading.load_model` arguments); plain data, so it
    travels to every node, each of which loads the model once from its own disk."""

    model: str | None = None
    device: str = "auto"
    dtype: str | None = None
    config: str | None = None

    @classmethod
    def from_args(cls, args) -> ModelSpec:
        return cls(getattr(args, "model", None), getattr(args, "device", None) or "auto",
                   getattr(args, "dtype", None), getattr(args, "config", None))

    def load(self):
        from noise2art.engine.loading import load_model

        return load_model(self.model, device=self.device, dtype=self.dtype, config=self.config)


def check_address(value: str) -> str:
    """`auto`, `local` or a cluster address; refuses an empty one."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("ray", "give auto, local or a cluster address (HOST:6379 or ray://HOST:10001)")
    return value.strip()


@contextmanager
def connected(address: str, **init_kwargs) -> Iterator[object]:
    """Ray, connected for the duration: joins a running cluster, or starts a local one.

    A Ray already initialised in this process (a caller's, a test's) is used as it is and
    left running; one started here is shut down on exit.
    """
    ray = require_ray()
    address = check_address(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(init_kwargs)
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    if address != "local":
        kwargs["address"] = address
    ray.init(**kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def gpus(ray) -> float:
    """GPUs the cluster has (0 on CPU-only clusters)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def cpus(ray) -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))
