"""Rendered datasets of the world: in memory for training, or as PNG files on disk.

Item ``i`` of a dataset with seed ``s`` is rendered with seed
``s * ITEM_SEED_STRIDE + i`` (attributes, layout and caption all follow from it),
so any item can be re-rendered alone, and datasets with different seeds do not
share images as long as they hold fewer than `ITEM_SEED_STRIDE` items.
Rendering is spread over processes in chunks; results come back in order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from noise2art.errors import InvalidArgument
from noise2art.world.attributes import Attributes
from noise2art.world.captions import make_caption
from noise2art.world.render import check_size, render_random

ITEM_SEED_STRIDE = 1_000_000_000
_CAPTION_STREAM = 100
# Below this many images the cost of starting worker processes outweighs the gain.
_MIN_PARALLEL = 64
IMAGE_DIR = "images"
ATTRIBUTES_FILE = "attributes.jsonl"
CAPTIONS_FILE = "captions.jsonl"
MANIFEST_FILE = "dataset.json"


@dataclass(frozen=True)
class WorldItem:
    """What one rendered image shows and how it is described."""

    index: int
    seed: int
    attributes: Attributes
    caption: str
    named: Attributes


class WorldArrays(NamedTuple):
    """A dataset in memory. images: uint8 [n, size, size, 3]; the lists have n entries."""

    images: np.ndarray
    attributes: list[Attributes]
    captions: list[str]
    named: list[Attributes]


def item_seed(seed: int, index: int) -> int:
    """The render seed of item ``index`` of a dataset with ``seed``."""
    return seed * ITEM_SEED_STRIDE + index


def render_item(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, WorldItem]:
    """Render item ``index`` of the dataset with ``seed``: (uint8 [size, size, 3], its record)."""
    s = item_seed(seed, index)
    image, attrs = render_random(s, size)
    cap = make_caption(attrs, np.random.default_rng([s, _CAPTION_STREAM]))
    return image, WorldItem(index=index, seed=s, attributes=attrs, caption=cap.text, named=cap.named)


def _check(n: int, size: int, seed: int, workers: int | None) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgument("n", f"must be an integer >= 1, got {n!r}")
    check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgument("seed", f"must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise InvalidArgument("workers", f"must be an integer >= 1, got {workers!r}")
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(workers or available)
    return 1 if n < _MIN_PARALLEL else min(workers, n)


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    # Several chunks per worker balance the load; capped so progress moves often.
    step = int(min(256, max(8, -(-n // (workers * 4)))))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _render_chunk(job: tuple[int, int, int, int]) -> tuple[np.ndarray, list[WorldItem]]:
    seed, start, stop, size = job
    images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    items = []
    for k, index in enumerate(range(start, stop)):
        images[k], item = render_item(seed, index, size)
        items.append(item)
    return images, items


def _write_chunk(job: tuple[int, int, int, int, str]) -> list[WorldItem]:
    seed, start, stop, size, out = job
    images, items = _render_chunk((seed, start, stop, size))
    for image, item in zip(images, items):
        Image.fromarray(image).save(Path(out) / _image_name(item.index), optimize=False)
    return items


def _image_name(index: int) -> str:
    return f"{IMAGE_DIR}/{index:08d}.png"


def _run(function, jobs: list, workers: int) -> Iterator:
    """Results of ``function`` over ``jobs``, in order, across ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    # fork where there is one: spawn would demand an `if __name__ == "__main__"`
    # guard in every calling script. Workers touch only numpy and Pillow, so
    # thread pools (torch's) the parent holds do not matter to them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(function, jobs)


def render_arrays(
    n: int, size: int = 64, seed: int = 0, workers: int | None = None, progress: bool = False
) -> WorldArrays:
    """Render ``n`` random world images in memory (items 0..n-1 of dataset ``seed``).

    Returns `WorldArrays` (images uint8 [n, size, size, 3], attribute dicts,
    captions, named-attribute dicts), identical for identical (n, size, seed)
    whatever ``workers`` is. ``workers`` defaults to the usable CPU count.
    """
    workers = _check(n, size, seed, workers)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    items: list[WorldItem] = []
    jobs = [(seed, a, b, size) for a, b in _chunks(n, workers)]
    with tqdm(total=n, disable=not progress, unit="img", desc="rendering") as bar:
        for (_, start, stop, _), (chunk, chunk_items) in zip(jobs, _run(_render_chunk, jobs, workers)):
            images[start:stop] = chunk
            items.extend(chunk_items)
            bar.update(stop - start)
    return WorldArrays(
        images,
        [it.attributes for it in items],
        [it.caption for it in items],
        [it.named for it in items],
    )


def render_dataset(
    n: int,
    out: Path | str,
    size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render ``n`` images into ``out/images/NNNNNNNN.png`` with their records.

    Writes ``attributes.jsonl`` (per image: file, index, seed, attributes,
    caption, named), ``captions.jsonl`` (per image: file, caption) and
    ``dataset.json`` (n, size, seed). Returns ``out``.
    """
    workers = _check(n, size, seed, workers)
    out = Path(out)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(seed, a, b, size, str(out)) for a, b in _chunks(n, workers)]
    with (
        open(out / ATTRIBUTES_FILE, "w", encoding="utf-8") as attributes_file,
        open(out / CAPTIONS_FILE, "w", encoding="utf-8") as captions_file,
        tqdm(total=n, disable=not progress, unit="img", desc="rendering") as bar,
    ):
        for items in _run(_write_chunk, jobs, workers):
            for item in items:
                record = {"file": _image_name(item.index), **asdict(item)}
                attributes_file.write(json.dumps(record) + "\n")
                captions_file.write(json.dumps({"file": record["file"], "caption": item.caption}) + "\n")
            bar.update(len(items))
    manifest = {"n": n, "size": size, "seed": seed, "item_seed": f"seed * {ITEM_SEED_STRIDE} + index"}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def read_records(out: Path | str) -> list[dict]:
    """The per-image records `render_dataset` wrote to ``out/attributes.jsonl``."""
    with open(Path(out) / ATTRIBUTES_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
