"""`noise2art embed`, `interpolate` and `retrievability`, run in-process on a tiny SD model."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from noise2art.cli.common import parse_blend
from noise2art.cli.interpolate import parse_pairs, parse_range
from noise2art.cli.main import main
from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- parsing


def test_parse_blend():
    assert parse_blend("a red ball:0.7,a blue cube:0.3") == [("a red ball", 0.7), ("a blue cube", 0.3)]
    # Commas inside a prompt stay in it; spaces and signs are fine.
    assert parse_blend("mountain, lake, snow:0.6, red ball : -0.2,x:1e-1") == [
        ("mountain, lake, snow", 0.6), ("red ball", -0.2), ("x", 0.1)]
    assert parse_blend("@e.safetensors:1") == [("@e.safetensors", 1.0)]


@pytest.mark.parametrize("text", ["", "a red ball", "a:0.5,b", "a:nan,b:1", "a:inf", "a:1,b:-1", ":1", "a:1e999"])
def test_parse_blend_rejects(text):
    with pytest.raises(InvalidArgument) as err:
        parse_blend(text)
    assert err.value.name == "blend"


def test_parse_range_and_pairs(tmp_path):
    assert parse_range("-0.2..1.2") == (-0.2, 1.2)
    for bad in ("0..nan", "inf..1", "1..0", "0.5", "a..b", "0..1..2"):
        with pytest.raises(InvalidArgument, match="range"):
            parse_range(bad)
    f = tmp_path / "pairs.txt"
    f.write_text('# study\na red ball => a blue cube\n\n{"a": "a cat", "b": "a dog"}\n')
    assert parse_pairs(f) == [("a red ball", "a blue cube"), ("a cat", "a dog")]
    f.write_text("a red ball => \n")
    with pytest.raises(InvalidArgument, match="line 1"):
        parse_pairs(f)


# --------------------------------------------------------------------------- embed


def test_embed_saves_a_prompt_and_a_blend(tiny_sd_path, tiny_model, tmp_path, capsys):
    code, out, _ = run(capsys, "embed", "a red ball", "-o", tmp_path / "a.safetensors", "--model", tiny_sd_path, "--json")
    assert code == 0
    data = json.loads(out)
    emb = PromptEmbedding.load(data["path"])
    assert emb.prompts == ["a red ball"] and torch.allclose(emb.cond, tiny_model.encode("a red ball").cond)

    code, out, _ = run(capsys, "embed", "--blend", f"@{tmp_path / 'a.safetensors'}:0.7,a blue cube:0.3",
                       "-o", tmp_path / "mix.safetensors", "--model", tiny_sd_path, "--json")
    assert code == 0
    mix = PromptEmbedding.load(json.loads(out)["path"])
    a, b = tiny_model.encode("a red ball").cond[0], tiny_model.encode("a blue cube").cond[0]
    assert torch.allclose(mix.cond[0, 1:], 0.7 * a[1:] + 0.3 * b[1:], atol=1e-5)
    assert mix.prompts[0].startswith("blend(")


# --------------------------------------------------------------------------- interpolate


def test_interpolate_writes_every_format_and_a_manifest(tiny_sd_path, tiny_model, tmp_path, capsys):
    kf = tiny_model.encode("a cat").save(tmp_path / "cat.safetensors")
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "interpolate", "a red ball", "a blue cube", f"@{kf}", "--model", tiny_sd_path,
                         "--frames", 5, "--steps", 2, "--seed", 1, "--seed-to", 2, "--format", "gif,mp4",
                         "--format", "png", "--format", "sheet", "--fps", 8, "--out", out_dir, "--json")
    assert code == 0, err
    data = json.loads(out)  # stdout holds exactly one JSON object
    assert data["frames"] == 5 and data["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    manifest = json.loads(open(data["manifest"]).read())
    frames = manifest["frames"]
    assert [f["index"] for f in frames] == [0, 1, 2, 3, 4]
    assert [f["segment"] for f in frames] == [0, 0, 1, 1, 1]
    assert frames[2]["prompts"] == ["a blue cube", "a cat"] and frames[2]["t"] == 0.0
    assert all(f["seed"] == 1 and f["seed_to"] == 2 and f["noise_alpha"] == f["alpha"] for f in frames)
    assert manifest["keyframes"][2]["source"] == f"@{kf}"
    for f in frames:
        with Image.open(f["file"]) as im:
            assert im.size == (32, 32)
    with Image.open(data["files"]["gif"]) as gif:
        assert gif.n_frames == 5 and 120 <= gif.info["duration"] <= 130 and gif.info["loop"] == 0
    mp4 = out_dir / "interpolation.mp4"
    assert mp4.stat().st_size > 0 and mp4.read_bytes()[4:8] == b"ftyp"
    with Image.open(data["files"]["sheet"]) as sheet:
        assert sheet.size[0] > 32 * 2
    assert not [p for p in out_dir.rglob("*") if ".tmp" in p.name]  # no temporary file left behind


def test_constant_speed_reports_ratios(tiny_sd_path, tmp_path, capsys):
    code, out, err = run(capsys, "interpolate", "a red ball", "--seed", 3, "--seed-to", 4, "--model", tiny_sd_path,
                         "--frames", 4, "--steps", 2, "--constant-speed", "--refine", 2, "--format", "gif",
                         "--out", tmp_path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["frames"] == 4 and data["alphas"][0] == 0.0 and data["alphas"][-1] == 1.0
    assert data["alphas"] == sorted(data["alphas"])
    assert data["ratio_before"] >= 1.0 and data["ratio_after"] >= 1.0
    manifest = json.loads(open(data["manifest"]).read())
    assert manifest["constant_speed"] is True and len(manifest["frames"]) == 4


# --------------------------------------------------------------------------- retrievability


def test_retrievability_single_and_pairs(tiny_sd_path, tmp_path, capsys):
    code, out, err = run(capsys, "retrievability", "a red ball", "a blue cube", "--model", tiny_sd_path, "--fine", 4,
                         "--steps", 2, "--out", tmp_path / "one", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["max_mean_ratio"] >= 1.0 and data["basins"] and {"start", "end", "share"} <= data["basins"][0].keys()
    rows = list(csv.DictReader(open(data["csv"])))
    assert len(rows) == 3 and rows[0]["alpha_start"] == "0.000000"
    with Image.open(tmp_path / "one" / "speed.png") as plot:
        assert plot.size[0] >= 300

    pairs = tmp_path / "pairs.txt"
    pairs.write_text('a red ball => a blue cube\n{"a": "a cat", "b": "a dog"}\n')
    code, out, err = run(capsys, "retrievability", "--pairs", pairs, "--model", tiny_sd_path, "--fine", 3,
                         "--steps", 2, "--out", tmp_path / "many", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [p["a"] for p in data["pairs"]] == ["a red ball", "a cat"]
    s = data["summary"]
    assert s["pairs"] == 2 and s["max_mean_ratio"]["max"] == max(p["max_mean_ratio"] for p in data["pairs"])
    assert {"mean", "median", "max"} <= s["basins"].keys() and "largest_basin_share" in s
    assert len(list(csv.DictReader(open(data["csv"])))) == 4


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def foreign_files(tmp_path):
    """Embedding files: one from another model (other shape), one from a third model, one corrupt."""
    other = PromptEmbedding(torch.zeros(1, 77, 16), torch.zeros(1, 77, 16), torch.ones(1, 77), "other-model")
    other_path = other.save(tmp_path / "other.safetensors")
    third = PromptEmbedding(torch.ones(1, 77, 32), torch.zeros(1, 77, 32), torch.ones(1, 77), "third-model")
    third.save(tmp_path / "third.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    return other_path, bad


@pytest.mark.parametrize("argv, name", [
    (["a", "b", "--range", "nan..1"], "range"),
    (["a", "b", "--range=-inf..1"], "range"),
    (["a", "b", "--range", "1..0"], "range"),
    (["a", "b", "--range", "0-1"], "range"),
    (["a", "b", "--frames", "1"], "frames"),
    (["a", "b", "--frames", "10001"], "frames"),
    (["a", "b", "--method", "cubic"], "method"),
    (["a", "b", "--format", "gif,avi"], "format"),
    (["a", "b", "--fps", "0"], "fps"),
    (["a", "b", "--seed", "-1"], "seed"),
    (["a", "b", "--refine", "3"], "refine"),
    (["a"], "prompts"),
    (["a", "@{bad}"], "embedding"),
    (["a", "@{missing}"], "embedding"),
    (["@{other}", "@{third}"], "other-model' [77, 16] vs model 'third-model"),
])
def test_interpolate_bad_input_exits_2_before_loading(argv, name, foreign_files, tmp_path, capsys):
    other, bad = foreign_files
    argv = [a.format(bad=bad, other=other, third=tmp_path / "third.safetensors", missing=tmp_path / "missing.safetensors")
            for a in argv]
    out_dir = tmp_path / "out"
    # A model path that does not exist: reaching the model load would fail differently.
    code, out, err = run(capsys, "interpolate", *argv, "--model", tmp_path / "no-model", "--out", out_dir)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and (f"{name}:" in err or "' [" in name and name in err)
    assert not out_dir.exists()


def test_embeddings_from_different_models_are_named(tiny_sd_path, foreign_files, tmp_path, capsys):
    other, _ = foreign_files
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "interpolate", "a red ball", f"@{other}", "--model", tiny_sd_path, "--steps", 2,
                         "--out", out_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other-model" in err and str(tiny_sd_path) in err
    assert not out_dir.exists()
    code, _, err = run(capsys, "embed", "--blend", f"a:1,@{other}:1", "-o", tmp_path / "x.safetensors",
                       "--model", tiny_sd_path)
    assert code == 2 and "other-model" in err and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv, name", [
    (["a", "b", "--fine", "2"], "fine"),
    (["a", "b", "--jump-factor", "nan"], "jump_factor"),
    (["a"], "prompts"),
    (["a", "b", "--pairs", "{pairs}"], "pairs"),
    (["--pairs", "{missing}"], "pairs"),
    (["--pairs", "{badpairs}"], "pairs"),
    (["a", "b", "--range", "0..inf"], "range"),
])
def test_retrievability_bad_input(argv, name, tmp_path, capsys):
    pairs, badpairs = tmp_path / "p.txt", tmp_path / "bad.txt"
    pairs.write_text("a => b\n")
    badpairs.write_text('{"a": "x"}\n')
    argv = [a.format(pairs=pairs, badpairs=badpairs, missing=tmp_path / "none.txt") for a in argv]
    code, out, err = run(capsys, "retrievability", *argv, "--model", tmp_path / "no-model", "--out", tmp_path / "o")
    assert code == 2 and out == "" and f"{name}:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, name", [
    (["a", "-o", "x.bin"], "output"),
    (["-o", "x.safetensors"], "prompt"),
    (["a", "--blend", "b:1", "-o", "x.safetensors"], "prompt"),
    (["--blend", "b:1,c", "-o", "x.safetensors"], "blend"),
])
def test_embed_bad_input(argv, name, tmp_path, capsys):
    code, out, err = run(capsys, "embed", *argv, "--model", tmp_path / "no-model")
    assert code == 2 and out == "" and f"{name}:" in err
