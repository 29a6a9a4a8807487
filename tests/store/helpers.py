"""Small builders shared by the store tests."""

from __future__ import annotations

from noise2art.store import Store

BASE_FIELDS = dict(model_id="tiny", embedding_id=None, negative="", steps=4, guidance=7.5, scheduler="pndm",
                   width=16, height=16, precision="fp32", method="generate", job_id=None, owner="")


def image_items(n: int, *, start: int = 0, prompt: str = "a cat", owner: str = "", tag: str = "") -> list:
    """`n` (bytes, fields) pairs with distinct content (the store only hashes the bytes)."""
    return [(f"png {tag} {start + k}".encode(), dict(BASE_FIELDS, prompt=prompt, seed=start + k, owner=owner))
            for k in range(n)]


def add_images(store: Store, n: int, **kwargs) -> list[dict]:
    return store.add_images(image_items(n, **kwargs))
