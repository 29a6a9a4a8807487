"""Text encoders behind one interface: prompts -> last hidden states `[B, L, D]`.

Stable Diffusion uses CLIP's text transformer (L=77 rows); the embedded model uses the
MiniLM-L6 BERT encoder padded to its own fixed length. Both pad every prompt to L rows
and the UNet attends to all of them, so every row of the embedding can be manipulated.
"""

from __future__ import annotations

import warnings
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

    def __init__(self, tokenizer, model, max_length: int, pass_mask: bool, name: str = ""):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = int(max_length)
        self.pass_mask = pass_mask
        self.name = name or type(model).__name__

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _count_dropped(self, prompts: list[str]) -> list[int]:
        """Tokens lost to truncation, counted on the untruncated ids (with their special tokens)."""
        full = self.tokenizer(prompts, padding=False, truncation=False)["input_ids"]
        return [max(0, len(ids) - self.max_length) for ids in full]

    @torch.no_grad()
    def __call__(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> EncodedText:
        batch = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        dropped = self._count_dropped(prompts)
        for prompt, n in zip(prompts, dropped):
            if n:
                warnings.warn(
                    f"prompt is longer than the text encoder's {self.max_length} tokens: {n} token(s) dropped "
                    f"from {prompt[:60]!r}",
                    stacklevel=3,
                )
        out = self.model(ids, attention_mask=mask if self.pass_mask else None)
        return EncodedText(states=out[0].to(dtype), mask=mask, dropped=dropped)
