"""Atomic file writes: a result is either whole at its name or absent, never half-written;
and `read_entries`, the reader of the line files commands take (queries, pairs).

Every writer in the package goes through `atomic_write`: the content goes to a
temporary name beside the target (same folder, so the rename stays on one file
system), is flushed and fsynced, and is renamed over the target in one step. A crash
leaves at most a `.*.tmp` file, which `is_temporary` recognises so that cleaners can
remove it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable

from noise2art.errors import InvalidArgument

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """`folder/.name.<random>.tmp<suffix>` beside `path`; keeps the suffix so writers that
    pick a format from it (PIL, imageio) still do."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}{path.suffix}")


def is_temporary(path: Path) -> bool:
    """Whether `path` is a leftover of an interrupted `atomic_write`."""
    name = Path(path).name
    return name.startswith(".") and TMP_SUFFIX in name


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, fsync: bool = True) -> Path:
    """Run `write(tmp_path)`, then rename the temporary file to `path`.

    Args:
        path: the target file.
        write: writes the whole content to the path it is given.
        fsync: flush the file and its folder to disk before and after the rename, so the
            target survives a power loss once this returns (the store relies on it).

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2, fsync: bool = True) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n", fsync=fsync)


def read_entries(path: str | os.PathLike, field: str) -> list[tuple[int, str, dict | None]]:
    """The entries of a line file: `(line number, text, JSON object or None)` for each line.

    A line starting with `{` is a JSON object; any other line is plain text. Blank lines and
    lines starting with `#` are skipped. An unreadable file, or a line that is not valid JSON,
    raises `InvalidArgument(field, ...)` naming the line.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(field, f"cannot read '{path}' ({exc.__class__.__name__}: {exc})") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        obj = None
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(field, f"{path.name} line {number}: not valid JSON ({exc.msg})") from None
        entries.append((number, line, obj))
    return entries

