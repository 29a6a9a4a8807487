"""Settings of one `noise2art serve` process."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from noise2art.errors import InvalidArgument

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_data_dir() -> Path:
    """The user's data folder for noise2art (platformdirs: ~/.local/share/noise2art on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("noise2art", appauthor=False))


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServiceConfig:
    """What a server runs with.

    Attributes:
        data: the data folder (store, files, sessions).
        host, port: where it listens; any non-loopback host needs a `token`.
        model: the model to load (None: the embedded model).
        token: the shared secret API clients send as `Authorization: Bearer` (and the
            login form's password when no named users exist); None on loopback only.
        allowed_hosts: `Host` header values accepted (default: the bind address,
            localhost and 127.0.0.1, with and without the port).
        cors_origins: origins allowed cross-origin requests (default none).
        max_pending, max_pending_per_user: queued + running jobs before a fast 429.
        max_batch: samples per UNet call when compatible generate jobs are batched.
        max_seeds: seeds one generate request may ask for.
        max_upload_bytes: the largest embedding upload.
        max_pixels: width x height x seeds one request may ask for.
    """

    data: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    token: str | None = None
    allowed_hosts: list[str] | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_pending: int = 256
    max_pending_per_user: int = 64
    max_batch: int = 8
    max_seeds: int = 64
    max_upload_bytes: int = 8 * 2**20
    max_pixels: int = 64 * 512 * 512
    device: str | None = None
    dtype: str | None = None

    def check(self) -> ServiceConfig:
        """Refuse a setup that is unsafe or cannot work (one line each)."""
        if not is_loopback(self.host) and not self.token:
            raise InvalidArgument("host", f"binding {self.host} makes the server reachable from other machines; "
                                          "give --token (or bind 127.0.0.1)")
        if self.token is not None and len(self.token) < 16:
            raise InvalidArgument("token", "must be at least 16 characters")
        if not 0 < self.port < 65536:
            raise InvalidArgument("port", f"must be in [1, 65535], got {self.port}")
        for name in ("max_pending", "max_pending_per_user", "max_batch", "max_seeds"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(self, name)}")
        return self

    def hosts(self) -> list[str]:
        """The `Host` header values the server answers."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        names = {self.host, "localhost", "127.0.0.1"} if is_loopback(self.host) else {self.host}
        names.discard("0.0.0.0")
        out = set()
        for n in names:
            shown = f"[{n}]" if ":" in n else n
            out |= {shown, f"{shown}:{self.port}"}
        return sorted(out)
