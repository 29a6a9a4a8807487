"""The training set: rendered images, their attributes and captions, cached in a folder.

Rendering is deterministic from (seed, index), so the cache is only a speed-up: deleting
it and rendering again gives the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class WorldData:
    images: np.ndarray  # [N, S, S, 3] uint8
    attributes: list[dict]
    captions: list[list[str]]  # K captions per image

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: np.ndarray, device) -> torch.Tensor:
        """Images `[B, 3, S, S]` in [-1, 1] (the autoencoder's range)."""
        x = torch.from_numpy(self.images[index]).to(device).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1


def prepare_data(cache: str | Path, n: int, size: int = 64, seed: int = 0, captions_per_image: int = 2,
                 workers: int | None = None) -> WorldData:
    """Render (or read back) `n` images with `captions_per_image` independent captions each."""
    from noise2art.world.captions import caption
    from noise2art.world.dataset import render_arrays

    cache = Path(cache)
    key = f"n{n}-s{size}-seed{seed}-k{captions_per_image}"
    img_path, rec_path = cache / f"{key}.images.npy", cache / f"{key}.records.jsonl"
    if img_path.is_file() and rec_path.is_file():
        images = np.load(img_path)
        records = [json.loads(line) for line in rec_path.read_text().splitlines()]
        return WorldData(images, [r["attributes"] for r in records], [r["captions"] for r in records])
    cache.mkdir(parents=True, exist_ok=True)
    images, attrs, first, _named = render_arrays(n, size=size, seed=seed, workers=workers)
    rng = np.random.default_rng([seed, 7919])
    captions = [[c] + [caption(a, rng) for _ in range(captions_per_image - 1)] for a, c in zip(attrs, first)]
    np.save(img_path, images)
    rec_path.write_text("\n".join(json.dumps({"attributes": a, "captions": c}) for a, c in zip(attrs, captions)) + "\n")
    return WorldData(images, attrs, captions)
