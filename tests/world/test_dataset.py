"""Rendered datasets on disk and in memory, and the `noise2art world` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from noise2art.cli.main import main
from noise2art.errors import InvalidArgument
from noise2art.world.captions import parse
from noise2art.world.dataset import read_records, render_arrays, render_dataset, render_item


def test_render_dataset_writes_pngs_and_records(tmp_path):
    out = render_dataset(8, tmp_path / "ds", seed=2, workers=1, progress=False)
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 8
    records = read_records(out)
    assert [r["index"] for r in records] == list(range(8))
    for record in records:
        assert set(record) >= {"file", "seed", "attributes", "caption", "named"}
        image = np.asarray(Image.open(out / record["file"]))
        assert image.shape == (64, 64, 3)
        expected, item = render_item(2, record["index"])
        assert np.array_equal(image, expected)
        assert record["caption"] == item.caption and parse(record["caption"]) == record["named"]
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [c["caption"] for c in captions] == [r["caption"] for r in records]
    assert json.loads((out / "dataset.json").read_text())["n"] == 8


def test_render_arrays_is_deterministic():
    a = render_arrays(6, seed=3, workers=1)
    b = render_arrays(6, seed=3, workers=1)
    assert a.images.shape == (6, 64, 64, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.attributes == b.attributes
    image, item = render_item(3, 4)
    assert np.array_equal(a.images[4], image) and a.named[4] == item.named
    other = render_arrays(6, seed=4, workers=1)
    assert not np.array_equal(a.images, other.images)


def test_parallel_rendering_matches_serial():
    serial = render_arrays(64, seed=1, workers=1)
    parallel = render_arrays(64, seed=1, workers=2)
    assert np.array_equal(serial.images, parallel.images) and serial.captions == parallel.captions


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 2, "size": 40}, {"n": 2, "seed": -1}, {"n": 2, "workers": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(InvalidArgument):
        render_arrays(**kwargs)


def test_cli_sample_and_render(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["world", "sample", "--n", "3", "--out", str(grid), "--seed", "1"]) == 0
    assert Image.open(grid).size[0] > 3 * 64
    assert main(["world", "render", "--n", "2", "--out", str(tmp_path / "r"), "--workers", "1"]) == 0
    assert len(list((tmp_path / "r" / "images").glob("*.png"))) == 2


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["world", "sample", "--n", "0"], "--n"),
        (["world", "sample", "--size", "40"], "--size"),
        (["world", "render", "--n", "0", "--out", "x"], "--n"),
        (["world", "render", "--n", "2", "--out", "x", "--size", "16"], "--size"),
    ],
)
def test_cli_rejects_bad_values(argv, flag, capsys):
    assert main(argv) == 2
    assert flag in capsys.readouterr().err
