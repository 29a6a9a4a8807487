"""`noise2art generate` and `noise2art info`."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path

from noise2art import __version__
from noise2art.cli.common import (PRECISION_CHOICES, add_model_args, emit_json, free_path, load, resolve_prompt, slug,
                                   step_progress)
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate images from a prompt",
                              description="Generate images; each PNG carries every parameter needed to make it again.")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, or @file.safetensors for a saved embedding")
    p.add_argument("--negative", default="", help="negative prompt")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    seeds.add_argument("--seeds", default=None, help="A..B (inclusive) or a comma list")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--scheduler", default=None, help="ddim, euler, euler-a, dpm++2m, lms, pndm, ... (default: the model's)")
    p.add_argument("--size", default=None, help="WxH in pixels (default: the model's native size)")
    p.add_argument("--batch-size", type=int, default=None, help="images per UNet batch (default: fits memory)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="the denoiser's precision: auto (default: bf16 for an fp32 model on a CPU with native "
                   "bf16, faster batches at about 0.002 mean pixel error; else the model's dtype), model, bf16")
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument("--grid", action="store_true", help="also write a contact sheet grid.png")
    p.add_argument("--from", dest="from_image", default=None, help="reproduce the image whose PNG metadata is given")
    p.add_argument("--json", action="store_true", help="print one JSON object (paths and parameters) on stdout")
    add_model_args(p)
    p.set_defaults(func=run_generate)

    i = subparsers.add_parser("info", help="print the generation parameters stored in a PNG")
    i.add_argument("image", help="a PNG written by noise2art (or another SD tool's infotext)")
    i.add_argument("--json", action="store_true", help="print them as one JSON object")
    i.set_defaults(func=run_info)


def _settings_from_image(args) -> None:
    """Fill the arguments from a PNG's stored parameters (explicit flags still win for the model/device)."""
    from noise2art.pngmeta import GenerationParams, read_params

    params = read_params(args.from_image)
    if not isinstance(params, GenerationParams):
        raise InvalidArgument("from", f"'{args.from_image}' was not written by noise2art; only its infotext is readable")
    args.prompt = f"@{params.embedding_file}" if params.embedding_file else params.prompt
    args.negative = params.negative
    args.seed, args.seeds = params.seed, None
    if params.batch_seeds:
        args.seeds = ",".join(str(s) for s in params.batch_seeds)
        args.batch_size = len(params.batch_seeds)
    args.steps, args.guidance, args.scheduler = params.steps, params.guidance, params.scheduler
    args.size = f"{params.width}x{params.height}"
    args.precision = params.precision
    args.model = args.model or params.model
    return params


def run_generate(args) -> int:
    import torch

    from noise2art.engine import validation as V
    from noise2art.engine.devices import resolve_precision
    from noise2art.engine.model import to_pil
    from noise2art.pngmeta import GenerationParams, save_png
    from noise2art.sheet import contact_sheet

    source = _settings_from_image(args) if args.from_image else None
    if args.prompt is None:
        raise InvalidArgument("prompt", "give a prompt (or --from IMAGE.png)")
    # Validate cheap arguments before loading any weights.
    seeds = V.parse_seed_range(args.seeds) if args.seeds else [V.check_seed(0 if args.seed is None else args.seed)]
    if args.steps is not None:
        V.check_steps(args.steps)
    if args.guidance is not None:
        V.check_guidance(args.guidance)
    if args.scheduler is not None:
        from noise2art.engine.schedulers import check_scheduler

        check_scheduler(args.scheduler)
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidArgument("batch-size", f"must be >= 1, got {args.batch_size}")
    height, width = V.parse_size(args.size) if args.size else (None, None)

    model = load(args)
    embedding, embedding_file = resolve_prompt(model, args.prompt, args.negative)
    height, width = model._resolve_size(height, width)
    steps = args.steps if args.steps is not None else model.defaults.steps
    guidance = args.guidance if args.guidance is not None else model.defaults.guidance
    scheduler = args.scheduler or model.default_scheduler
    batch = args.batch_size or model.auto_batch_size(height, width, guidance)
    # Recorded as resolved on this machine, so `--from` repeats it anywhere.
    precision = "model" if resolve_precision(model.device, model.dtype, args.precision) == model.dtype else "bf16"
    chunks = math.ceil(len(seeds) / batch)

    with torch.no_grad(), step_progress(chunks, "generate") as progress:
        latents = model.sample(embedding, seeds, steps=steps, guidance=guidance, scheduler=scheduler,
                               height=height, width=width, batch_size=batch, precision=precision,
                               callback=progress)
        images = to_pil(model.decode(latents))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb_hash = embedding.hash()
    records, paths = [], []
    for k, (seed, image) in enumerate(zip(seeds, images)):
        if source is not None and seed != source.seed:
            continue  # a batch neighbour, rendered only so the batch is the same
        params = GenerationParams(
            prompt=embedding.prompts[0], negative=embedding.negative[0], seed=seed, steps=steps, guidance=guidance,
            scheduler=scheduler or "default", width=width, height=height, model=model.model_id, version=__version__,
            embedding_hash=emb_hash, embedding_file=embedding_file,
            batch_seeds=seeds[k - k % batch: k - k % batch + batch], precision=precision,
        )
        path = save_png(image, params, free_path(out, f"{slug(params.prompt)}_{seed}", ".png"))
        paths.append(str(path))
        records.append({"path": str(path), **asdict(params)})
    grid = None
    if args.grid:
        images = [im for s, im in zip(seeds, images) if source is None or s == source.seed]
        grid = free_path(out, "grid", ".png")
        contact_sheet(images, labels=[f"seed {r['seed']}" for r in records]).save(grid)
    if source is not None and source.embedding_hash != emb_hash:
        print(f"warning: the embedding hash differs from the image's ({source.embedding_hash} vs {emb_hash}); "
              "the model or prompt encoding changed", file=sys.stderr)
    if args.json:
        emit_json({"images": records, "grid": str(grid) if grid else None})
    else:
        for p in paths:
            print(p)
        if grid:
            print(grid)
    return 0


def run_info(args) -> int:
    from noise2art.pngmeta import GenerationParams, read_params

    params = read_params(args.image)
    data = asdict(params) if isinstance(params, GenerationParams) else params
    if args.json:
        emit_json(data)
    else:
        width = max(len(k) for k in data)
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0
