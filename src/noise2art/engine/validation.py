"""Checks of generation arguments. Each raises `InvalidArgument` naming the argument and its range."""

from __future__ import annotations

import math

from noise2art.errors import InvalidArgument

MAX_SEED = 2**63  # seeds live in [0, 2^63): torch.Generator.manual_seed takes any int64 >= 0
MAX_STEPS = 1000
MAX_SIDE = 4096
MAX_SEEDS = 10000  # seeds one command renders at once


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidArgument("steps", f"must be an integer in [1, {MAX_STEPS}], got {steps!r}")
    return steps


def check_guidance(guidance: float) -> float:
    try:
        g = float(guidance)
    except (TypeError, ValueError):
        raise InvalidArgument("guidance", f"must be a finite number >= 0, got {guidance!r}") from None
    if not math.isfinite(g) or g < 0:
        raise InvalidArgument("guidance", f"must be a finite number >= 0, got {guidance!r}")
    return g


def check_seed(seed: int, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise InvalidArgument(name, f"must be an integer in [0, 2^63), got {seed!r}")
    return seed


def check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise InvalidArgument("seeds", "need at least one seed")
    return [check_seed(s, "seeds") for s in seeds]


def check_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Height and width must be positive multiples of the model's pixels per latent cell."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < factor or value > MAX_SIDE or value % factor:
            raise InvalidArgument(
                name, f"must be a multiple of {factor} in [{factor}, {MAX_SIDE}] for this model, got {value!r}"
            )
    return height, width


def parse_seed_range(text: str) -> list[int]:
    """`"3"` -> [3]; `"0..7"` -> [0..7] inclusive; `"1,5,9"` -> [1, 5, 9]."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            if hi < lo:
                raise ValueError
            seeds = range(lo, hi + 1)
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgument("seeds", f"expected N, A..B (A <= B) or a comma list, got '{text}'") from None
    # Checked outside the parse, so the message names the limit rather than the syntax.
    if len(seeds) > MAX_SEEDS:
        raise InvalidArgument("seeds", f"at most {MAX_SEEDS} seeds at once, got {len(seeds)}")
    return check_seeds(seeds)


def parse_size(text: str) -> tuple[int, int]:
    """`"512x768"` -> (height=768, width=512); `"64"` -> (64, 64). Width comes first, as in WxH."""
    try:
        if "x" in text.lower():
            w, h = (int(x) for x in text.lower().split("x", 1))
        else:
            w = h = int(text)
    except ValueError:
        raise InvalidArgument("size", f"expected WxH such as 512x512, got '{text}'") from None
    return h, w
