"""`noise2art search` on the tiny SD model: pages, their files and metadata, anchors, argument errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from noise2art.cli.main import main
from noise2art.pngmeta import read_params


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def search(capsys, tiny_sd_path, out, *argv):
    return run(capsys, "search", *argv, "--model", str(tiny_sd_path), "--steps", "2", "--scheduler", "ddim",
               "--out", str(out), "--json")


def test_a_page_is_the_same_for_everyone_and_pages_differ(tiny_sd_path, tmp_path, capsys):
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "a", "a red ball", "--page", "1", "--page-size", "4")
    assert code == 0
    first = json.loads(out)
    assert [e["idx"] for e in first["images"]] == [4, 5, 6, 7]
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "b", "a red ball", "--page", "1", "--page-size", "4")
    again = json.loads(out)
    assert again["stream"] == first["stream"]
    assert [e["seed"] for e in again["images"]] == [e["seed"] for e in first["images"]]
    with Image.open(first["images"][0]["path"]) as a, Image.open(again["images"][0]["path"]) as b:
        assert a.tobytes() == b.tobytes()
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "c", "a red ball", "--page", "0", "--page-size", "4")
    page0 = json.loads(out)
    assert not {e["seed"] for e in page0["images"]} & {e["seed"] for e in first["images"]}
    assert Image.open(first["sheet"]).size[0] > 32
    params = read_params(first["images"][0]["path"])
    assert params.stream == {"stream": first["stream"], "kind": "query", "idx": 4}
    assert params.seed == first["images"][0]["seed"] and params.steps == 2


def test_directed_results_record_the_concept_and_weight(tiny_sd_path, tmp_path, capsys):
    code, out, _ = search(capsys, tiny_sd_path, tmp_path, "a ball", "--toward", "snow", "--page-size", "2")
    assert code == 0
    data = json.loads(out)
    assert data["toward"]["concept"] == "snow" and data["toward"]["weight"] > 0
    params = read_params(data["images"][0]["path"])
    assert params.stream["toward"] == data["toward"]
    assert "Steered: snow" in params.infotext()
    # A steered result is not its prompt on its seed: `generate --from` says so instead of a wrong image.
    code, _, err = run(capsys, "generate", "--from", data["images"][0]["path"], "--model", str(tiny_sd_path),
                       "--out", str(tmp_path / "g"))
    assert code == 2 and "search result" in err


def test_like_and_between_start_from_generated_images(tiny_sd_path, tmp_path, capsys):
    code, out, _ = run(capsys, "generate", "a red ball", "--model", str(tiny_sd_path), "--seeds", "1,2", "--steps",
                       "2", "--scheduler", "ddim", "--out", str(tmp_path / "gen"), "--json")
    paths = [i["path"] for i in json.loads(out)["images"]]
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "like", "--like", paths[0], "--page-size", "2")
    assert code == 0
    like = json.loads(out)
    assert like["kind"] == "like" and like["settings"]["steps"] == 2
    assert read_params(like["images"][0]["path"]).stream["anchor_seed"] == 1
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "between", "--between", *paths, "--page-size", "3")
    between = json.loads(out)
    assert code == 0 and all(0 < e["t"] < 1 for e in between["images"])
    # Without bridges: another stream (its description differs), every result on the path.
    code, out, _ = search(capsys, tiny_sd_path, tmp_path / "plain", "--between", *paths, "--page-size", "3",
                          "--no-bridges")
    plain = json.loads(out)
    assert code == 0 and plain["stream"] != between["stream"]
    assert not any("bridge" in e for e in plain["images"])
    assert all(read_params(e["path"]).stream.get("bridge") is None for e in plain["images"])
    # A between result is not an anchor: its noise is not its seed's.
    code, _, err = search(capsys, tiny_sd_path, tmp_path / "x", "--like", between["images"][0]["path"])
    assert code == 2 and "between result" in err


@pytest.mark.parametrize("argv, field", [
    ([], "query"),
    (["a ball", "--like", "x.png"], "query"),
    (["a ball", "--min-similarity", "0.8"], "min-similarity"),
    (["a ball", "--similarity", "0.8"], "similarity"),
    (["a ball", "--no-bridges"], "no-bridges"),
    (["--like", "missing.png"], "like"),
    (["a ball", "--page", "-1"], "page"),
    (["a ball", "--page-size", "0"], "page_size"),
])
def test_bad_arguments_are_one_line_and_exit_2(tiny_sd_path, tmp_path, capsys, argv, field):
    code, _, err = search(capsys, tiny_sd_path, tmp_path, *argv)
    assert code == 2 and field in err and len(err.strip().splitlines()) == 1
