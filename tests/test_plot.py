"""The Pillow charts: each writes a PNG that shows its data, and refuses empty data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from noise2art.errors import InvalidArgument
from noise2art.plot import PALETTE, box_plot, line_chart, scatter_plot


def colour_pixels(path, hex_colour: str) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(-1) < 10).sum())


def test_scatter_draws_one_dot_per_point_in_its_own_colour(tmp_path):
    path = scatter_plot({"a": (0.1, 5.0), "b": (0.3, 50.0), "skipped": (float("nan"), 1.0)}, tmp_path / "s.png",
                        title="t", xlabel="x", ylabel="y")
    assert Image.open(path).size == (640, 400)
    assert colour_pixels(path, PALETTE[0]) > 10 and colour_pixels(path, PALETTE[1]) > 10
    assert colour_pixels(path, PALETTE[2]) == 0  # the non-finite point is not drawn
    with pytest.raises(InvalidArgument):
        scatter_plot({"nan": (float("nan"), 0.0)}, tmp_path / "e.png")


def test_line_and_box_charts_draw_their_series(tmp_path):
    line = line_chart({"score": [1, 2, 3], "best": [1, 3, 3]}, tmp_path / "l.png")
    assert colour_pixels(line, PALETTE[0]) > 10 and colour_pixels(line, PALETTE[1]) > 10
    box = box_plot({"a": [1, 2, 3, 4], "b": [2, 3, 9]}, tmp_path / "b.png")
    assert colour_pixels(box, PALETTE[0]) > 10 and colour_pixels(box, PALETTE[1]) > 10
