"""`noise2art generate` and `noise2art info`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from noise2art import __version__
from noise2art.cli.common import (add_model_args, add_sampling_args, emit_json, free_path, load, resolve_prompt,
                                   sampling_overrides, slug, step_progress)
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate images from a prompt",
                              description="Generate images; each PNG carries every parameter needed to make it again.")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt, or @file.safetensors for a saved embedding")
    p.add_argument("--negative", default=None, help="negative prompt (default none)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    seeds.add_argument("--seeds", default=None, help="A..B (inclusive) or a comma list")
    add_sampling_args(p)
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


# Flags that `--from` fills from the image; given explicitly, they override the stored value
# and the new PNG names them in `derived_from`.
FROM_FLAGS = ("prompt", "negative", "seed", "seeds", "steps", "guidance", "scheduler", "size", "batch_size", "precision")


def _settings_from_image(args):
    """Fill the unset arguments from a PNG's stored parameters.

    Returns `(params, overridden)`: the stored `GenerationParams` and the names of the
    flags given explicitly beside `--from`, which win over the stored values.
    """
    from noise2art.pngmeta import GenerationParams, read_params

    params = read_params(args.from_image)
    if not isinstance(params, GenerationParams):
        raise InvalidArgument("from", f"'{args.from_image}' was not written by noise2art; only its infotext is readable")
    if params.stream and (params.stream.get("kind") != "query" or params.stream.get("toward")):
        # Its noise or embedding is the stream's, not the seed's and the prompt's own.
        raise InvalidArgument("from", f"'{args.from_image}' is a {params.stream.get('kind')} search result; "
                                      "`noise2art search` remakes it (its stream and idx are in its metadata)")
    overridden = [name for name in FROM_FLAGS if getattr(args, name) is not None]
    stored = {
        "prompt": f"@{params.embedding_file}" if params.embedding_file else params.prompt,
        "negative": params.negative, "steps": params.steps, "guidance": params.guidance,
        "scheduler": params.scheduler, "size": f"{params.width}x{params.height}", "precision": params.precision,
    }
    for name, value in stored.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seed is None and args.seeds is None:
        args.seed = params.seed
        if params.batch_seeds and args.batch_size is None:
            # The whole batch again, so the image's float results are those of its own batch.
            args.seeds = ",".join(str(s) for s in params.batch_seeds)
            args.batch_size = len(params.batch_seeds)
    if args.batch_size is None and params.batch_seeds:
        args.batch_size = len(params.batch_seeds)
    args.model = args.model or params.model
    return params, overridden


def run_generate(args) -> int:
    import torch

    from noise2art.engine import validation as V
    from noise2art.engine.model import to_pil
    from noise2art.pngmeta import GenerationParams, save_png
    from noise2art.sheet import contact_sheet

    source, overridden = _settings_from_image(args) if args.from_image else (None, [])
    if args.prompt is None:
        raise InvalidArgument("prompt", "give a prompt (or --from IMAGE.png)")
    # Validate cheap arguments before loading any weights.
    seeds = V.parse_seed_range(args.seeds) if args.seeds else [V.check_seed(0 if args.seed is None else args.seed)]
    overrides = sampling_overrides(args)

    model = load(args)
    embedding, embedding_file = resolve_prompt(model, args.prompt, args.negative or "")
    with torch.no_grad(), step_progress("generate") as progress:
        latents, settings = model.sample(embedding, seeds, settings=overrides, callback=progress, return_settings=True)
        images = to_pil(model.decode(latents))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb_hash = embedding.hash()
    batch = settings.batch_size
    derived = f"{Path(args.from_image).name} ({', '.join(overridden)})" if overridden else ""
    # With `--from`, only the source image's seed is written back (unless --seed/--seeds
    # asked for others): its batch neighbours ran only so that the batch is the same.
    keep = {source.seed} if source is not None and not {"seed", "seeds"} & set(overridden) else set(seeds)
    records, paths, kept = [], [], []
    for k, (seed, image) in enumerate(zip(seeds, images)):
        if seed not in keep:
            continue
        params = GenerationParams.from_settings(
            settings, prompt=embedding.prompts[0], negative=embedding.negative[0], seed=seed, model=model.model_id,
            version=__version__, embedding_hash=emb_hash, embedding_file=embedding_file,
            batch_seeds=seeds[k - k % batch: k - k % batch + batch], derived_from=derived,
        )
        path = save_png(image, params, free_path(out, f"{slug(params.prompt)}_{seed}", ".png"))
        paths.append(str(path))
        kept.append(image)
        records.append({"path": str(path), **asdict(params)})
    grid = None
    if args.grid:
        grid = free_path(out, "grid", ".png")
        contact_sheet(kept, labels=[f"seed {r['seed']}" for r in records]).save(grid)
    if source is not None and not overridden and source.embedding_hash != emb_hash:
        print(f"warning: the embedding hash differs from the image's ({source.embedding_hash} vs {emb_hash}); "
              "the model or prompt encoding changed", file=sys.stderr)
    if derived:
        print(f"note: {', '.join(overridden)} given beside --from override the image's stored values", file=sys.stderr)
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
