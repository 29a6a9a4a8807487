"""Pieces every command shares: model arguments, prompt resolution, progress bars, JSON output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from noise2art.errors import InvalidArgument


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="embedded model name (default: the embedded model), diffusers folder, hub id or .safetensors file")
    parser.add_argument("--config", default=None, help="diffusers folder or hub id describing a single-file checkpoint")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    parser.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)")


def load(args):
    from noise2art.engine.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, config=args.config)


def resolve_prompt(model, text: str, negative: str | None = None):
    """A prompt, or `@path.safetensors` for a saved embedding -> `PromptEmbedding` of batch 1.

    Returns `(embedding, source_file)`; `source_file` is "" for a text prompt.
    """
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if path.suffix != ".safetensors":
            raise InvalidArgument("prompt", f"an embedding file must be .safetensors, got '{path.name}'")
        return model.load_embedding(path), str(path)
    return model.encode([text], negative), ""


def emit_json(obj) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def step_progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr; yields a denoising callback `(step, total, latents)` that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not enabled, leave=False)
    try:
        yield lambda *_: bar.update(1)
    finally:
        bar.close()


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe stem from a prompt."""
    s = re.sub(r"[^a-zA-Z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "image"


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem.suffix`, or `stem_1`, `stem_2`, ... if taken: never overwrite a result."""
    path = folder / f"{stem}{suffix}"
    k = 1
    while path.exists():
        path = folder / f"{stem}_{k}{suffix}"
        k += 1
    return path
