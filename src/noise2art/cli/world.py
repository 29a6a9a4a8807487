"""`noise2art world ...`: the procedural world the embedded model learns from.

Each subcommand is one ``_add_<name>(world_sub)`` function that adds its parser
and sets ``func``; `SUBCOMMANDS` lists them in the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path

from noise2art.errors import InvalidArgument

MAX_SAMPLE = 1024
# Preview tiles are scaled up to at least this width so their captions fit.
MIN_TILE_WIDTH = 192


def _check_n(n: int, flag: str = "--n", maximum: int | None = None) -> None:
    if n < 1:
        raise InvalidArgument(flag, f"must be >= 1, got {n}")
    if maximum is not None and n > maximum:
        raise InvalidArgument(flag, f"must be <= {maximum}, got {n}")


def _check_size(size: int) -> None:
    from noise2art.world.render import MIN_SIZE, SIZE_STEP

    if size < MIN_SIZE or size % SIZE_STEP:
        raise InvalidArgument("--size", f"must be >= {MIN_SIZE} and a multiple of {SIZE_STEP}, got {size}")


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise InvalidArgument("--seed", f"must be >= 0, got {seed}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=64, help="image edge in pixels, >= 32, multiple of 16 (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: item i uses seed*1e9+i (default 0)")


# ---------------------------------------------------------------------------- render


def _add_render(world_sub) -> None:
    p = world_sub.add_parser(
        "render",
        help="render a dataset of captioned world images to a folder",
        description="Render N random world images as PNG files, with attributes.jsonl, captions.jsonl "
        "and dataset.json beside them.",
    )
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    _add_common(p)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all usable CPUs)")
    p.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    _check_n(args.n)
    _check_size(args.size)
    _check_seed(args.seed)
    if args.workers is not None and args.workers < 1:
        raise InvalidArgument("--workers", f"must be >= 1, got {args.workers}")
    from noise2art.world.dataset import render_dataset

    out = render_dataset(args.n, args.out, size=args.size, seed=args.seed, workers=args.workers, progress=True)
    print(f"wrote {args.n} images to {out}")
    return 0


# ---------------------------------------------------------------------------- sample


def _add_sample(world_sub) -> None:
    p = world_sub.add_parser(
        "sample",
        help="render a captioned preview grid",
        description="Render the first N images of a dataset seed into one PNG, each tile with its caption below.",
    )
    p.add_argument("--n", type=int, default=16, help=f"number of tiles, 1..{MAX_SAMPLE} (default 16)")
    p.add_argument("--out", type=Path, default=Path("grid.png"), help="output PNG (default grid.png)")
    _add_common(p)
    p.add_argument("--columns", type=int, default=None, help="tiles per row (default: about square)")
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> int:
    _check_n(args.n, maximum=MAX_SAMPLE)
    _check_size(args.size)
    _check_seed(args.seed)
    if args.columns is not None:
        _check_n(args.columns, "--columns")
    from noise2art.world.dataset import render_item

    tiles = [render_item(args.seed, i, args.size) for i in range(args.n)]
    grid = caption_grid([img for img, _ in tiles], [item.caption for _, item in tiles], args.columns)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.n} images to {args.out}")
    return 0


def caption_grid(images, captions: list[str], columns: int | None = None):
    """A PIL image laying out uint8 [H, W, 3] images in a grid, each captioned below.

    Images are scaled up by a whole factor (nearest neighbour, so pixels stay
    visible) until a tile is at least `MIN_TILE_WIDTH` wide.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n = len(images)
    columns = columns or math.ceil(math.sqrt(n * 1.5))
    rows = math.ceil(n / columns)
    size = images[0].shape[1]
    factor = max(1, math.ceil(MIN_TILE_WIDTH / size))
    tile_w = size * factor
    pad = 4
    chars = max(8, int(tile_w / max(1.0, font.getlength("abcdefghij") / 10)))
    wrapped = [textwrap.wrap(c, chars) or [""] for c in captions]
    bbox = font.getbbox("Ag")
    line_h = bbox[3] - bbox[1] + 3
    tile_h = tile_w + pad + line_h * max(len(w) for w in wrapped) + pad
    grid = Image.new("RGB", (columns * (tile_w + pad) + pad, rows * tile_h + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, (img, lines) in enumerate(zip(images, wrapped)):
        r, c = divmod(k, columns)
        x, y = pad + c * (tile_w + pad), pad + r * tile_h
        grid.paste(Image.fromarray(img).resize((tile_w, tile_w), Image.NEAREST), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + tile_w + pad + j * line_h), line, fill=(20, 20, 20), font=font)
    return grid


# -------------------------------------------------------------------------- register

from noise2art.cli.world_model import add_eval, add_export, add_train  # noqa: E402

SUBCOMMANDS = [_add_render, _add_sample, add_train, add_export, add_eval]


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``world`` and its subcommands to the main parser's subparsers."""
    parser = subparsers.add_parser(
        "world",
        help="render, train and evaluate the procedural world of the embedded model",
        description="The procedural world (landscapes and still lifes) the embedded model is trained on.",
    )
    world_sub = parser.add_subparsers(dest="world_command", metavar="SUBCOMMAND")

    def _usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_usage)
    for add in SUBCOMMANDS:
        add(world_sub)
    return parser
