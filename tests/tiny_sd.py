"""Tiny random Stable Diffusion pipelines, built and saved locally (no network).

Random UNet, VAE and CLIP text encoder in SD's architecture, with a small CLIP BPE
vocabulary written here. The VAE has two blocks, so it maps 2 pixels to one latent cell
(not SD's 8): code that hard-codes 8 fails on it.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

VOCAB_WORDS = ["a", "red", "blue", "ball", "cube", "cat", "dog", "photo", "of", "the", "mountain", "lake", "sunset"]


def write_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """A CLIP byte-level BPE vocabulary: single characters, a few whole words, and the merges that build them."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in string.ascii_lowercase + string.digits + ",.!?'-":
        tokens += [ch, ch + "</w>"]
    merges = []
    for word in VOCAB_WORDS:
        if len(word) < 2:
            continue
        # Merge left to right: w o -> wo, wo r -> wor, ..., ending with the </w> form.
        current = word[0]
        for k, ch in enumerate(word[1:], start=1):
            piece = ch + "</w>" if k == len(word) - 1 else ch
            merged = current + piece
            merges.append(f"{current} {piece}")
            if merged not in tokens:
                tokens.append(merged)
            current = merged
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def build_tiny_sd(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a tiny random SD pipeline in diffusers layout; returns the folder.

    epsilon: PNDM scheduler, as SD 1.x ships; v_prediction: DDIM, as SD 2.x (768) ships.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    )
    vocab, merges = write_clip_vocab(folder / "_vocab")
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
            layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3, vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                  prediction_type=prediction_type, set_alpha_to_one=False)
    if prediction_type == "epsilon":
        scheduler = PNDMScheduler(skip_prk_steps=True, **common)
    else:
        scheduler = DDIMScheduler(clip_sample=False, **common)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
