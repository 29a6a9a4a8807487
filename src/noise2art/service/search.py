"""Search over what is stored: stored images ranked by a text query or by likeness to an image.

Every image the service stores keeps its feature vector (`metrics.features.image_features`:
world CLIP on the embedded model, a CLIP vision model when one is loaded, else colour
thumbnails). `FeatureIndex` holds them in memory as one float32 matrix per feature kind,
catching up with the store incrementally (only rows newer than the last it read), so a
query is one matrix-vector product: about 100 000 x 256 multiply-adds, a few milliseconds.
"""

from __future__ import annotations

import threading

import numpy as np

from noise2art.store import Store


def image_feature_rows(model, images) -> list[tuple[str, bytes]]:
    """`images [B, 3, H, W]` -> one `(kind, float32 bytes)` per image, as the store keeps them."""
    import torch

    from noise2art.metrics.features import feature_kind, image_features

    with torch.no_grad():
        arr = image_features(model, images.to(model.device)).detach().float().cpu().numpy().astype(np.float32)
    kind = feature_kind(model)
    return [(kind, row.tobytes()) for row in arr]


class FeatureIndex:
    """The feature vectors of stored images, by kind, searchable by cosine similarity."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._kinds: dict[str, dict] = {}

    def _catch_up(self, kind: str) -> dict:
        entry = self._kinds.setdefault(kind, {"rowid": 0, "ids": [], "owners": [], "blocks": [], "matrix": None})
        while True:
            rows = self.store.features_after(entry["rowid"], kind)
            if not rows:
                break
            entry["rowid"] = rows[-1][0]
            entry["ids"] += [r[1] for r in rows]
            entry["owners"] += [r[2] for r in rows]
            entry["blocks"].append(np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows]))
            entry["matrix"] = None
        if entry["matrix"] is None and entry["blocks"]:
            entry["matrix"] = np.concatenate(entry["blocks"])
            entry["blocks"] = [entry["matrix"]]
            entry["owner_array"] = np.asarray(entry["owners"])
            entry["id_array"] = np.asarray(entry["ids"])
        return entry

    def search(self, kind: str, query: np.ndarray, owner: str, limit: int = 24,
               exclude: str | None = None) -> list[tuple[str, float]]:
        """The `limit` stored images of `owner` most similar to `query [F]`: `(image_id, cosine)`."""
        with self._lock:
            entry = self._catch_up(kind)
            matrix = entry["matrix"]
            if matrix is None:
                return []
            q = np.asarray(query, dtype=np.float32).reshape(-1)
            if q.shape[0] != matrix.shape[1]:
                return []
            q = q / max(float(np.linalg.norm(q)), 1e-12)
            scores = matrix @ q
            scores = np.where(entry["owner_array"] == owner, scores, -np.inf)
            if exclude is not None:
                scores = np.where(entry["id_array"] == exclude, -np.inf, scores)
            k = min(limit, int(np.isfinite(scores).sum()))
            if k <= 0:
                return []
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(entry["ids"][i], float(scores[i])) for i in top]
