"""Scale-out on Ray (optional): the index build, studies and serving across GPUs and machines.

Nothing here imports Ray at module level: without the `cluster` extra every command works
in-process as before, and asking for `--ray` fails with one line naming the extra.

- `runtime`: connecting to a cluster (`--ray auto|local|ADDRESS`), the model a worker loads.
- `index`: the index build as a Ray Data `map_batches` over actors that load the model once.
- `pool`: an ordered map over model actors, for the studies (retrievability, world eval).
- `serving`: a Ray Serve deployment that batches generation requests from many clients.
"""

from __future__ import annotations

from noise2art.errors import Noise2ArtError

EXTRA = 'pip install -e ".[cluster]"'


class RayUnavailable(Noise2ArtError):
    """Ray is not installed (the `cluster` extra)."""


def require_ray():
    """The `ray` module, or `RayUnavailable` with one line naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {EXTRA}") from None
    return ray
