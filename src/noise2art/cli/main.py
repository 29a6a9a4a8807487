"""Entry point of the `noise2art` command.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the handler. Errors this package raises on purpose become one
line on stderr and exit code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from noise2art import __version__
from noise2art.errors import Noise2ArtError

# Command modules, in the order `noise2art --help` lists them.
COMMAND_MODULES = [
    "noise2art.cli.generate",
    "noise2art.cli.interpolate",
    "noise2art.cli.explore",
    "noise2art.cli.optimize",
    "noise2art.cli.invariant",
    "noise2art.cli.world",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noise2art",
        description="User-controlled image generation beyond prompt engineering.",
    )
    parser.add_argument("--version", action="version", version=f"noise2art {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (Noise2ArtError, ValueError) as exc:
        print(f"noise2art {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"noise2art {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
