"""`PromptEmbedding`: the conditional and unconditional text-encoder states of a batch of prompts.

This is the object every method manipulates. It is saved as a `.safetensors` artifact
with its model id and prompts in the metadata, so an embedding made by one model is
never silently fed to another.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file
from safetensors.torch import save as save_bytes
from safetensors import safe_open

from noise2art.errors import InvalidArgument
from noise2art.files import atomic_write

FORMAT = "noise2art.prompt-embedding"
FORMAT_VERSION = "1"


def _header_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file held in memory (the header is JSON, read
    without touching the tensors)."""
    if len(data) < 8:
        raise ValueError("too short for a safetensors file")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 1 << 20:
        raise ValueError("the header length is out of range")
    header = json.loads(data[8:8 + size])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict):
        raise ValueError("the metadata is not a table")
    return meta


@dataclass
class PromptEmbedding:
    """Text-encoder states of B prompts.

    Attributes:
        cond: `[B, L, D]` last hidden states of the prompts (SD 1.x: L=77, D=768).
        uncond: `[B, L, D]` states of the negative prompts ("" when none), used by
            classifier-free guidance.
        mask: `[B, L]` token mask of `cond` (1 for real tokens, 0 for padding). The UNet
            attends to every row regardless, as Stable Diffusion does; the mask is kept
            for methods that want to know where the prompt ends.
        model_id: id of the model whose text encoder made the states.
        prompts: the B prompt texts (or descriptions such as "slerp(a, b, 0.5)").
        negative: the B negative prompt texts.
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    mask: torch.Tensor
    model_id: str
    prompts: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.cond.ndim == 2:
            self.cond = self.cond[None]
        if self.uncond.ndim == 2:
            self.uncond = self.uncond[None]
        if self.mask.ndim == 1:
            self.mask = self.mask[None]
        if self.cond.ndim != 3 or self.cond.shape != self.uncond.shape:
            raise InvalidArgument(
                "embedding",
                f"cond and uncond must both be [B, L, D] of one shape, got {tuple(self.cond.shape)} "
                f"and {tuple(self.uncond.shape)}",
            )
        b = self.cond.shape[0]
        if self.mask.shape != self.cond.shape[:2]:
            raise InvalidArgument(
                "embedding", f"mask must be [B, L] = {tuple(self.cond.shape[:2])}, got {tuple(self.mask.shape)}"
            )
        if not self.prompts:
            self.prompts = [""] * b
        if not self.negative:
            self.negative = [""] * b
        if len(self.prompts) != b or len(self.negative) != b:
            raise InvalidArgument("embedding", f"expected {b} prompts and negatives, got {len(self.prompts)}/{len(self.negative)}")

    # -- shape helpers -----------------------------------------------------------------

    def __len__(self) -> int:
        return self.cond.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """`(L, D)`: rows per prompt and width of each row."""
        return tuple(self.cond.shape[1:])  # type: ignore[return-value]

    def __getitem__(self, index) -> "PromptEmbedding":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        idx = range(len(self))[index]
        return PromptEmbedding(
            cond=self.cond[index],
            uncond=self.uncond[index],
            mask=self.mask[index],
            model_id=self.model_id,
            prompts=[self.prompts[i] for i in idx],
            negative=[self.negative[i] for i in idx],
        )

    @staticmethod
    def cat(items: list["PromptEmbedding"]) -> "PromptEmbedding":
        """Concatenate embeddings of one model along the batch dimension."""
        if not items:
            raise InvalidArgument("embeddings", "need at least one embedding")
        first = items[0]
        for other in items[1:]:
            first.check_compatible(other)
        return PromptEmbedding(
            cond=torch.cat([e.cond for e in items]),
            uncond=torch.cat([e.uncond for e in items]),
            mask=torch.cat([e.mask for e in items]),
            model_id=first.model_id,
            prompts=[p for e in items for p in e.prompts],
            negative=[p for e in items for p in e.negative],
        )

    def with_tensors(self, cond: torch.Tensor, uncond: torch.Tensor | None = None, prompts=None) -> "PromptEmbedding":
        """A copy with new state tensors (same model, mask broadcast to the new batch)."""
        uncond = self.uncond if uncond is None else uncond
        b = cond.shape[0] if cond.ndim == 3 else 1
        mask = self.mask if self.mask.shape[0] == b else self.mask[:1].expand(b, -1)
        if uncond.shape[0] != b and uncond.shape[0] == 1:
            uncond = uncond.expand(b, -1, -1)
        prompts = prompts if prompts is not None else (self.prompts if len(self.prompts) == b else [self.prompts[0]] * b)
        negative = self.negative if len(self.negative) == b else [self.negative[0]] * b
        return PromptEmbedding(cond, uncond, mask, self.model_id, list(prompts), list(negative))

    def to(self, device=None, dtype=None) -> "PromptEmbedding":
        return replace(self, cond=self.cond.to(device=device, dtype=dtype), uncond=self.uncond.to(device=device, dtype=dtype),
                       mask=self.mask.to(device=device))

    def detach(self) -> "PromptEmbedding":
        return replace(self, cond=self.cond.detach(), uncond=self.uncond.detach())

    def check_compatible(self, other: "PromptEmbedding") -> None:
        """Raise `InvalidArgument` naming both sides if `other` comes from another model or shape."""
        if other.model_id != self.model_id or other.shape != self.shape:
            raise InvalidArgument(
                "embedding",
                f"embeddings differ: model '{self.model_id}' {list(self.shape)} vs model "
                f"'{other.model_id}' {list(other.shape)}",
            )

    # -- identity and files --------------------------------------------------------------

    def hash(self) -> str:
        """16 hex digits of SHA-256 over the float32 states: names this embedding in metadata."""
        h = hashlib.sha256()
        for t in (self.cond, self.uncond):
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _file_parts(self) -> tuple[dict, dict]:
        tensors = {
            "cond": self.cond.detach().to("cpu", torch.float32).contiguous(),
            "uncond": self.uncond.detach().to("cpu", torch.float32).contiguous(),
            "mask": self.mask.detach().to("cpu", torch.int64).contiguous(),
        }
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "prompts": json.dumps(self.prompts),
            "negative": json.dumps(self.negative),
        }
        return tensors, metadata

    def to_bytes(self) -> bytes:
        """The `.safetensors` file `save` writes, as bytes."""
        tensors, metadata = self._file_parts()
        return save_bytes(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, model_id: str | None = None, shape: tuple[int, int] | None = None,
                   name: str = "embedding") -> "PromptEmbedding":
        """Read `to_bytes` output (or an uploaded file): safetensors only, never a pickle.

        Checks the format, the model and the shape like `load`, and that every value is
        finite. `name` is how errors call the data.
        """
        try:
            metadata = _header_metadata(data)
            tensors = load_bytes(data)
        except (SafetensorError, ValueError, OSError) as exc:
            raise InvalidArgument("embedding", f"{name} is not a readable .safetensors embedding ({exc})") from None
        return cls._from_parts(tensors, metadata, model_id, shape, name)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a `.safetensors` file (float32 states; model id and prompts in the metadata).

        The file is written next to its target and renamed into place, so an interrupted
        save never leaves a half-written artifact.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            raise InvalidArgument("path", f"embeddings are saved as .safetensors, got '{path.name}'")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, metadata = self._file_parts()
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike, model_id: str | None = None, shape: tuple[int, int] | None = None) -> "PromptEmbedding":
        """Read an embedding saved by `save`.

        Args:
            model_id: when given, the file must come from this model (else `InvalidArgument`).
            shape: when given, the file's `(L, D)` must match.
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidArgument("embedding", f"no such file: '{path}'")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InvalidArgument("embedding", f"'{path}' is not a readable .safetensors embedding ({exc})") from None
        return cls._from_parts(tensors, metadata, model_id, shape, f"'{path.name}'")

    @classmethod
    def _from_parts(cls, tensors: dict, metadata: dict, model_id: str | None, shape: tuple[int, int] | None,
                    name: str) -> "PromptEmbedding":
        if metadata.get("format") != FORMAT or not {"cond", "uncond", "mask"} <= tensors.keys():
            raise InvalidArgument("embedding", f"{name} is not a noise2art prompt embedding")
        for key in ("cond", "uncond"):
            t = tensors[key]
            if t.ndim != 3 or not t.is_floating_point() or not torch.isfinite(t).all():
                raise InvalidArgument("embedding", f"{name}: '{key}' must be a finite float tensor [B, L, D]")
        try:
            emb = cls(
                cond=tensors["cond"],
                uncond=tensors["uncond"],
                mask=tensors["mask"],
                model_id=metadata.get("model_id", ""),
                prompts=json.loads(metadata.get("prompts", "[]")),
                negative=json.loads(metadata.get("negative", "[]")),
            )
        except (ValueError, TypeError) as exc:  # shapes that do not agree, metadata that is not JSON
            raise InvalidArgument("embedding", f"{name} is not a valid prompt embedding ({exc})") from None
        if model_id is not None and emb.model_id != model_id:
            raise InvalidArgument(
                "embedding", f"{name} was made by model '{emb.model_id}', not by the loaded model '{model_id}'"
            )
        if shape is not None and emb.shape != tuple(shape):
            raise InvalidArgument("embedding", f"{name} has shape {list(emb.shape)}, the model expects {list(shape)}")
        return emb
