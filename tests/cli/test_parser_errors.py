"""Bad command lines exit with code 2 and one stderr line naming the argument, for every command."""

from __future__ import annotations

import pytest

from noise2art.cli.main import main

CASES = [
    (["generate", "x", "--steps", "abc"], "--steps"),
    (["generate", "x", "--seed", "1", "--seeds", "2"], "--seed"),
    (["generate", "x", "--precision", "fp8"], "--precision"),
    (["generate", "x", "--bogus"], "--bogus"),
    (["interpolate", "a", "b", "--frames", "x"], "--frames"),
    (["interpolate", "a", "b", "--nope"], "--nope"),
    (["explore", "x", "--seed", "z"], "--seed"),
    (["explore", "x", "--nope"], "--nope"),
    (["optimize", "x"], "--metric"),
    (["optimize", "x", "--metric", "sharpness", "--steps", "many"], "--steps"),
    (["invariant", "x", "--steps", "1.5"], "--steps"),
    (["invariant", "x", "--nope"], "--nope"),
    (["world", "train"], "stage"),
    (["world", "train", "unet", "--bogus", "3"], "--bogus"),
    (["world", "eval", "--nope"], "--nope"),
    (["no-such-command"], "no-such-command"),
]


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_parser_errors_are_one_line_naming_the_argument(capsys, argv, named):
    """No usage block: exactly one line, which names the culprit and points at --help."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert named in lines[0] and "(see --help)" in lines[0]
    assert lines[0].startswith("noise2art")


def test_the_line_names_the_command_it_is_about(capsys):
    """Nested subcommands report under their own name, not the root's."""
    main(["world", "train", "unet", "--bogus"])
    assert capsys.readouterr().err.startswith("noise2art world train: error:")
