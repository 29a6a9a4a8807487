"""Text encoders behind one interface: prompts -> last hidden states `[B, L, D]`.

Stable Diffusion uses CLIP's text transformer (L=77 rows); the embedded model uses the
MiniLM-L6 BERT encoder padded to its own fixed length. Both pad every prompt to L rows
and the UNet attends to all of them, so every row of the embedding can be manipulated.

The encoder is frozen, so each text's states are kept in a small LRU cache: the service,
a search stream's pages and the feed encode the same prompts (and the empty negative)
again and again, and on a CPU one encode costs about as much as a denoising step.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class EncodedText:
    states: torch.Tensor  # [B, L, D] last hidden states
    mask: torch.Tensor  # [B, L] 1 for real tokens
    dropped: list[int]  # tokens cut from each prompt by truncation


class TextEncoder:
    """A tokenizer and a transformer encoder, padding to `max_length` rows.

    Args:
        tokenizer: a transformers tokenizer.
        model: a transformers encoder whose output[0] is the last hidden state.
        max_length: rows per prompt (L).
        pass_mask: give the attention mask to the encoder. CLIP in SD ignores it unless its
            config says `use_attention_mask` (as diffusers does); BERT needs it so padding
            does not leak into the real tokens' states.
    """

    cache_size: int = 256
    """Texts whose states are kept (per device and dtype); 0 turns the cache off."""

    def __init__(self, tokenizer, model, max_length: int, pass_mask: bool, name: str = ""):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = int(max_length)
        self.pass_mask = pass_mask
        self.name = name or type(model).__name__
        # (text, device, dtype) -> (states [L, D], mask [L], tokens dropped)
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _count_dropped(self, prompts: list[str]) -> list[int]:
        """Tokens lost to truncation, counted on the untruncated ids (with their special tokens)."""
        full = self.tokenizer(prompts, padding=False, truncation=False)["input_ids"]
        return [max(0, len(ids) - self.max_length) for ids in full]

    def __call__(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> EncodedText:
        """Encode `prompts` to states `[B, L, D]`; texts seen recently come from the cache
        (the states are copies, so callers may change them), the rest in one batch."""
        keys = [(p, str(device), dtype) for p in prompts]
        with self._cache_lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            fresh = self._encode([k[0] for k in missing], device, dtype)
            for j, k in enumerate(missing):
                found[k] = (fresh.states[j].clone(), fresh.mask[j].clone(), fresh.dropped[j])
            if self.cache_size > 0:
                with self._cache_lock:
                    for k in missing:
                        self._cache[k] = found[k]
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        cached = [k for k in dict.fromkeys(keys) if k not in missing]
        self._warn_dropped([k[0] for k in cached], [found[k][2] for k in cached], stacklevel=4)
        return EncodedText(states=torch.stack([found[k][0] for k in keys]),
                           mask=torch.stack([found[k][1] for k in keys]),
                           dropped=[found[k][2] for k in keys])

    def _warn_dropped(self, prompts: list[str], dropped: list[int], stacklevel: int) -> None:
        for prompt, n in zip(prompts, dropped):
            if n:
                warnings.warn(
                    f"prompt is longer than the text encoder's {self.max_length} tokens: {n} token(s) dropped "
                    f"from {prompt[:60]!r}",
                    stacklevel=stacklevel,
                )

    @torch.no_grad()
    def _encode(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> EncodedText:
        batch = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        dropped = self._count_dropped(prompts)
        self._warn_dropped(prompts, dropped, stacklevel=5)
        out = self.model(ids, attention_mask=mask if self.pass_mask else None)
        return EncodedText(states=out[0].to(dtype), mask=mask, dropped=dropped)
