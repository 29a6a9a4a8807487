"""Entry point of the `noise2art` command.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the handler. Bad arguments, whether the parser finds them or the
command does, become one line on stderr and exit code 2; Ctrl-C exits with 130.
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
    "noise2art.cli.search",
    "noise2art.cli.index",
    "noise2art.cli.interpolate",
    "noise2art.cli.explore",
    "noise2art.cli.optimize",
    "noise2art.cli.invariant",
    "noise2art.cli.feed",
    "noise2art.cli.world",
    "noise2art.cli.serve",
    "noise2art.cli.store",
    "noise2art.cli.user",
]


class ArgumentError(Exception):
    """A command line the parser rejects; `main` prints it as one line and returns 2."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog

    def line(self) -> str:
        message = " ".join(str(self).split())  # some argparse messages span lines
        return f"{self.prog}: error: {message} (see --help)"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line instead of a usage block.

    `add_subparsers` builds subparsers of the parent's class, so every command and
    nested subcommand (`world train`, ...) is a `Parser` too.
    """

    def error(self, message: str):
        raise ArgumentError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="noise2art",
        description="User-controlled image generation beyond prompt engineering.",
    )
    parser.add_argument("--version", action="version", version=f"noise2art {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _command_prog(args) -> str:
    """`noise2art COMMAND [SUBCOMMAND]` as parsed, for messages about the whole line."""
    words = [getattr(args, "command", None)] + [getattr(args, f"{name}_command", None)
                                                 for name in ("world", "store", "user")]
    return " ".join(["noise2art"] + [w for w in words if w])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Reported here rather than by the root parser, so the line names the command.
            raise ArgumentError(_command_prog(args), f"unrecognized arguments: {' '.join(extra)}")
    except ArgumentError as exc:
        print(exc.line(), file=sys.stderr)
        return 2
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
