"""Pieces every command shares: model arguments, prompt resolution, progress bars, JSON output."""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from noise2art.errors import InvalidArgument

# `engine.devices.PRECISIONS`, spelled out so that parsing arguments does not import torch.
PRECISION_CHOICES = ("auto", "model", "bf16")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="embedded model name (default: the embedded model), diffusers folder, hub id or .safetensors file")
    parser.add_argument("--config", default=None, help="diffusers folder or hub id describing a single-file checkpoint")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    parser.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)")


# Sampling flags every command that renders shares. A default of None is "the model's own";
# `sampling_overrides` turns the parsed flags into the engine's `SamplingOverrides`.
SAMPLING_FLAGS = ("steps", "guidance", "scheduler", "size", "batch_size", "precision")


def add_sampling_args(parser: argparse.ArgumentParser, *, steps_help: str = "the model's",
                      scheduler_help: str = "the model folder's own", guidance_help: str = "the model's",
                      size: bool = True, batch: str = "images", precision_note: str = "") -> None:
    """Declare `--steps --guidance --scheduler [--size] --batch-size --precision` on `parser`.

    Every command that renders declares its sampling flags here, so they read and default
    alike everywhere (`sampling_overrides` turns them into `SamplingOverrides`). The
    `*_help` texts name each default in the help ("the model's" unless a method has its
    own); `size=False` leaves `--size` out for commands whose size comes from elsewhere;
    `precision_note` says where the precision applies when not everywhere.
    """
    parser.add_argument("--steps", type=int, default=None, help=f"denoising steps (default: {steps_help})")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"classifier-free guidance scale (default: {guidance_help})")
    parser.add_argument("--scheduler", default=None,
                        help=f"ddim, ddpm, euler, euler-a, heun, dpm++2m, dpm++2m-karras, lms, pndm, unipc "
                        f"(default: {scheduler_help})")
    if size:
        parser.add_argument("--size", default=None, help="WxH in pixels (default: the model's native size)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"{batch} per UNet batch (default: fits memory)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                        help="the denoiser's precision where no gradients flow: auto (default: bf16 for an fp32 "
                        "model on a CPU with native bf16, else the model's dtype), model, bf16; "
                        "benchmarks/RESULTS.md has the speed and pixel differences"
                        + (f"; {precision_note}" if precision_note else ""))
    parser.add_argument("--quality", choices=("full", "preview"), default=None,
                        help="full (default: the model's settings) or preview (its few-step preview settings; "
                        "the settings that ran are recorded, so --from repeats a preview exactly)")


def sampling_overrides(args, **fixed):
    """The parsed sampling flags -> `SamplingOverrides`, checked before any model loads.

    `fixed` sets fields the command decides itself (they win over the flags).
    """
    from noise2art.engine import validation as V
    from noise2art.engine.settings import SamplingOverrides

    height = width = None
    if getattr(args, "size", None):
        height, width = V.parse_size(args.size)
    given = dict(steps=getattr(args, "steps", None), guidance=getattr(args, "guidance", None),
                 scheduler=getattr(args, "scheduler", None), height=height, width=width,
                 batch_size=getattr(args, "batch_size", None), precision=getattr(args, "precision", None) or "auto",
                 quality=getattr(args, "quality", None))
    given.update(fixed)
    if given["batch_size"] is not None and given["batch_size"] < 1:
        raise InvalidArgument("batch-size", f"must be >= 1, got {given['batch_size']}")
    return SamplingOverrides(**given).check()


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


def load_embedding_file(text: str, name: str = "prompt"):
    """`@path.safetensors` -> the `PromptEmbedding` in it, read without a model (cheap, before loading one).

    Lets a command reject an unreadable or foreign file before it spends time loading weights;
    the caller still checks the embedding against the model (`PromptEmbedding.check_compatible`).
    """
    from noise2art.engine.embedding import PromptEmbedding

    path = Path(text[1:]).expanduser()
    if path.suffix != ".safetensors":
        raise InvalidArgument(name, f"an embedding file must be .safetensors, got '{path.name}'")
    return PromptEmbedding.load(path)


# One `PROMPT:WEIGHT` part of a blend, up to the comma that ends it (or the end of the text). The prompt
# is matched lazily, so commas inside a prompt stay in it unless they follow a `:number`.
_BLEND_PART = re.compile(
    r"\s*(?P<prompt>.+?)\s*:\s*(?P<weight>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:,|$)",
    re.DOTALL,
)


def parse_blend(text: str) -> list[tuple[str, float]]:
    """`"a red ball:0.7,a blue cube:0.3"` -> `[("a red ball", 0.7), ("a blue cube", 0.3)]`.

    A prompt may hold commas ("mountain, lake:0.6,red ball:0.4" is two parts) and may be
    `@file.safetensors`. Weights are finite numbers, negative ones push away from that
    prompt; they are normalised to sum 1 when blended, so they must not sum to ~0.

    Raises:
        InvalidArgument("blend", ...) naming the part that does not parse.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("blend", "expected 'PROMPT:WEIGHT,PROMPT:WEIGHT,...', got an empty text")
    pairs: list[tuple[str, float]] = []
    pos = 0
    while pos < len(text):
        match = _BLEND_PART.match(text, pos)
        if match is None or not match.group("prompt").strip():
            rest = text[pos:].strip()
            raise InvalidArgument(
                "blend",
                f"expected 'PROMPT:WEIGHT,PROMPT:WEIGHT,...' with a finite number after each ':', "
                f"could not read '{rest[:60]}'",
            )
        weight = float(match.group("weight"))
        # "a:nan,b:1" would otherwise read as one prompt "a:nan,b": a colon inside a part
        # that a comma follows can only be a weight that is not a number.
        stray = re.search(r":\s*([^,:]*?)\s*,", match.group("prompt"))
        if stray is not None:
            raise InvalidArgument(
                "blend", f"weight '{stray.group(1)}' of part '{match.group('prompt')[:stray.start()].split(',')[-1].strip()}' "
                "is not a finite number (write each part as PROMPT:WEIGHT)",
            )
        if not math.isfinite(weight):
            raise InvalidArgument("blend", f"weight of '{match.group('prompt')}' must be finite, got {weight}")
        pairs.append((match.group("prompt").strip(), weight))
        pos = match.end()
    total = sum(w for _, w in pairs)
    if abs(total) <= 1e-6 * sum(abs(w) for _, w in pairs):
        raise InvalidArgument("blend", f"weights sum to ~0 ({total:g}); they are normalised to sum 1, so they must not cancel")
    return pairs


def blend_embedding(model, pairs: list[tuple[str, float]], negative: str | None = None):
    """A weighted blend of prompts (or `@file.safetensors` embeddings) -> `PromptEmbedding` of batch 1.

    Both the prompt states and the negative states are blended with `space.blend`
    (weights normalised to sum 1, row 0 from the first part), so the result is an affine
    combination that stays on the embeddings' scale.
    """
    from noise2art.methods.blend import blend_embeddings

    if not pairs:
        raise InvalidArgument("blend", "needs at least one PROMPT:WEIGHT part")
    parts = []
    for prompt, _ in pairs:
        if prompt.startswith("@"):
            # The model names both sides when the file comes from another model or shape.
            parts.append(model.as_embedding(load_embedding_file(prompt, "blend")))
        else:
            parts.append(model.encode([prompt], negative))
    label = ", ".join(f"{p}:{w:g}" for p, w in pairs)
    return blend_embeddings(parts, [w for _, w in pairs], f"blend({label})")


def emit_json(obj) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def step_progress(desc: str, calls: int = 1, enabled: bool = True):
    """A tqdm bar on stderr over the denoising steps of `calls` `Model.sample` calls; yields
    the callback `(step, total, latents)` that advances it.

    `Model.sample` counts its steps over all its chunks; the total comes from the first
    callback, since a scheduler may run more UNet steps than asked (PNDM's warm-up,
    Heun's two calls a step).
    """
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, unit="step", file=sys.stderr, disable=not enabled, leave=False)

    def callback(step, total, *_):
        if bar.total is None:
            bar.total = calls * int(total)
            bar.refresh()
        bar.update(1)

    try:
        yield callback
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


def write_text(path: Path, text: str) -> Path:
    """Write a text file under a temporary name, then rename it into place."""
    from noise2art.files import write_text as atomic_text

    return atomic_text(path, text)


def save_image(image, path: Path) -> Path:
    """Save a PIL image as PNG under a temporary name, then rename it into place."""
    from noise2art.files import atomic_write

    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def percent_change(before: float, after: float) -> str:
    """`"+12.5%"`, or "n/a" when `before` is 0 or either value is not finite."""
    if not (math.isfinite(before) and math.isfinite(after)) or before == 0:
        return "n/a"
    return f"{(after - before) / abs(before) * 100:+.1f}%"


class InterruptFlag:
    """A SIGINT handler that sets a flag instead of raising, restored on exit.

    The first Ctrl-C asks the run to stop after the current step (the best so far is then
    written); the previous handler is put back at once, so a second Ctrl-C interrupts
    as usual.
    """

    def __init__(self):
        self.set = False
        self._previous = None
        self._installed = False

    def __call__(self) -> bool:
        return self.set

    def _handle(self, signum, frame):
        self.set = True
        signal.signal(signal.SIGINT, self._previous)
        print("\ninterrupted: stopping after this step and keeping the best so far "
              "(Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread: no handler, cancellation only by other means
            self._installed = False
        return self

    def __exit__(self, *exc):
        if self._installed and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)
        return False


def run_interruptible(run, total: int, desc: str, postfix):
    """`run(callback, cancel)` under a tqdm bar of `total` iterations on stderr, with Ctrl-C
    asking it to stop after the current iteration (see `InterruptFlag`).

    Args:
        run: starts the loop, passing `callback` and `cancel` on to the method.
        postfix: the method's callback arguments -> {name: text} shown beside the bar.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False)

    def callback(*args):
        bar.set_postfix(postfix(*args), refresh=False)
        bar.update(1)

    with InterruptFlag() as interrupted:
        try:
            return run(callback, interrupted)
        finally:
            bar.close()
