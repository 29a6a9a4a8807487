"""Content-addressed files: each blob lives at `blobs/ab/<sha256>.<ext>` under the data folder.

A blob is written to a temporary name, fsynced and renamed into place before `put`
returns, so a row that names it (committed afterwards) always finds it whole. Identical
content is stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from noise2art.files import is_temporary, write_bytes

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
EXT_RE = re.compile(r"^[a-z0-9]{1,12}$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Files named by their content under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str, ext: str) -> Path:
        """Where blob `digest.ext` lives. Refuses anything but a hex digest and a short
        alphanumeric extension, so no caller can build a path out of the folder."""
        if not SHA_RE.match(digest) or not EXT_RE.match(ext):
            raise ValueError(f"not a blob name: {digest!r}.{ext!r}")
        return self.root / digest[:2] / f"{digest}.{ext}"

    def put(self, data: bytes, ext: str) -> str:
        """Store `data`; returns its sha256. Durable on disk when this returns."""
        digest = sha256(data)
        path = self.path(digest, ext)
        if not path.is_file() or path.stat().st_size != len(data):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, data)
        return digest

    def read(self, digest: str, ext: str) -> bytes:
        return self.path(digest, ext).read_bytes()

    def exists(self, digest: str, ext: str) -> bool:
        return self.path(digest, ext).is_file()

    def verify(self, digest: str, ext: str) -> str | None:
        """None when the blob is present with the right content, else what is wrong."""
        path = self.path(digest, ext)
        if not path.is_file():
            return "missing"
        if sha256(path.read_bytes()) != digest:
            return "content does not match its sha256"
        return None

    def files(self) -> Iterator[tuple[str, str, Path]]:
        """Every finished blob as `(digest, ext, path)`."""
        for path in sorted(self.root.glob("*/*")):
            if not path.is_file() or is_temporary(path):
                continue
            digest, _, ext = path.name.partition(".")
            if SHA_RE.match(digest) and EXT_RE.match(ext):
                yield digest, ext, path

    def temporary_files(self, older_than: float = 0.0) -> list[Path]:
        """Leftovers of interrupted writes (older than `older_than` seconds)."""
        now = time.time()
        return [p for p in self.root.glob("*/*") if p.is_file() and is_temporary(p)
                and now - p.stat().st_mtime >= older_than]

    def remove(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
