"""`noise2art generate` and `noise2art info`, run in-process on a tiny SD model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from noise2art.cli.main import main
from noise2art.pngmeta import parse_infotext


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json_metadata_and_grid(tiny_sd_path, tmp_path, capsys):
    code, out, err = run(capsys, "generate", "a red ball", "--model", str(tiny_sd_path), "--seeds", "0..2",
                         "--steps", "3", "--negative", "blue", "--out", str(tmp_path), "--grid", "--json")
    assert code == 0
    data = json.loads(out)  # stdout holds exactly one JSON object
    assert [r["seed"] for r in data["images"]] == [0, 1, 2]
    assert Image.open(data["grid"]).size[0] > 32
    with Image.open(data["images"][1]["path"]) as im:
        text = im.text
    for key in ("prompt", "negative", "seed", "steps", "guidance", "scheduler", "width", "height", "model",
                "version", "embedding_hash"):
        assert key in text
    info = parse_infotext(text["parameters"])
    assert info["prompt"] == "a red ball" and info["negative"] == "blue"
    assert info["Steps"] == "3" and info["Seed"] == "1" and info["Sampler"] == "PLMS" and info["Size"] == "32x32"


def test_progress_total_counts_the_steps_the_scheduler_runs(tiny_sd_path, tmp_path, capsys):
    # PLMS without its Runge-Kutta warm-up runs one UNet step more than asked: 3 steps are
    # 4 calls, so two batches of one image are 8 steps on the bar, not 6.
    code, _, err = run(capsys, "generate", "a red ball", "--model", str(tiny_sd_path), "--seeds", "0..1",
                       "--steps", "3", "--batch-size", "1", "--scheduler", "pndm", "--out", str(tmp_path))
    assert code == 0
    assert "/8 " in err and "/6 " not in err


def test_from_image_reproduces_bit_for_bit(tiny_sd_path, tmp_path, capsys):
    code, out, _ = run(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--seeds", "4..6", "--steps", "3",
                       "--scheduler", "euler-a", "--out", str(tmp_path / "a"), "--json")
    first = json.loads(out)["images"][1]["path"]
    code, out, _ = run(capsys, "generate", "--from", first, "--out", str(tmp_path / "b"), "--json")
    assert code == 0
    again = json.loads(out)["images"]
    assert len(again) == 1 and again[0]["seed"] == 5
    a, b = np.asarray(Image.open(first)), np.asarray(Image.open(again[0]["path"]))
    assert np.array_equal(a, b)


def test_precision_is_recorded_as_resolved_and_reproduced(tiny_sd_path, tmp_path, capsys):
    import torch

    from noise2art.engine.devices import native_bf16

    _, out, _ = run(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--seeds", "0,1", "--steps", "2",
                    "--out", str(tmp_path / "auto"), "--json")
    expected = "bf16" if native_bf16(torch.device("cpu")) else "model"
    assert json.loads(out)["images"][0]["precision"] == expected
    _, out, _ = run(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--seeds", "0,1", "--steps", "2",
                    "--precision", "bf16", "--out", str(tmp_path / "a"), "--json")
    first = json.loads(out)["images"][1]["path"]
    with Image.open(first) as im:
        assert json.loads(im.text["noise2art"])["precision"] == "bf16"
        assert parse_infotext(im.text["parameters"])["Precision"] == "bf16"
    _, out, _ = run(capsys, "generate", "--from", first, "--out", str(tmp_path / "b"), "--json")
    again = json.loads(out)["images"]
    assert again[0]["precision"] == "bf16"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again[0]["path"])))
    _, out, _ = run(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--seeds", "0,1", "--steps", "2",
                    "--precision", "model", "--out", str(tmp_path / "m"), "--json")
    model_path = json.loads(out)["images"][1]["path"]
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(model_path)))


def test_info_prints_parameters(tiny_sd_path, tmp_path, capsys):
    _, out, _ = run(capsys, "generate", "a dog", "--model", str(tiny_sd_path), "--steps", "2", "--seed", "9",
                    "--out", str(tmp_path), "--json")
    path = json.loads(out)["images"][0]["path"]
    code, out, _ = run(capsys, "info", path, "--json")
    assert code == 0 and json.loads(out)["seed"] == 9
    code, out, _ = run(capsys, "info", path)
    assert "a dog" in out


def test_embedding_file_as_prompt(tiny_sd_path, tiny_model, tmp_path, capsys):
    path = tiny_model.encode("a blue cube").save(tmp_path / "e.safetensors")
    code, out, _ = run(capsys, "generate", f"@{path}", "--model", str(tiny_sd_path), "--steps", "2",
                       "--out", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["images"][0]["prompt"] == "a blue cube"


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--size", "33x32"], "width"),
        (["--steps", "0"], "steps"),
        (["--steps", "1001"], "steps"),
        (["--guidance", "nan"], "guidance"),
        (["--guidance", "-2"], "guidance"),
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**63)], "seed"),
        (["--seeds", "5..2"], "seeds"),
        (["--scheduler", "warp"], "scheduler"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny_sd_path, tmp_path, capsys, argv, name):
    code, out, err = run(capsys, "generate", "x", "--model", str(tiny_sd_path), "--out", str(tmp_path), *argv)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and f"{name}:" in lines[0]
    assert not list(tmp_path.glob("*.png"))


def test_unknown_model_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "x", "--model", "no-such-model", "--out", str(tmp_path))
    assert code == 2 and "unknown model 'no-such-model'" in err


def test_image_written_before_precision_was_recorded_reads_as_model(tmp_path):
    from PIL import PngImagePlugin

    from noise2art.pngmeta import read_params

    info = PngImagePlugin.PngInfo()
    info.add_itxt("noise2art", json.dumps({
        "prompt": "a cat", "negative": "", "seed": 1, "steps": 2, "guidance": 7.5, "scheduler": "ddim", "width": 32,
        "height": 32, "model": "m", "version": "0.1.0", "embedding_hash": "abc", "batch_seeds": [1]}))
    Image.new("RGB", (32, 32)).save(tmp_path / "old.png", pnginfo=info)
    assert read_params(tmp_path / "old.png").precision == "model"


def _folder_with_scheduler(tiny_sd_path, tmp_path, config: dict):
    """A copy of the tiny pipeline whose scheduler config is `config` (other files linked)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_path, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    base = json.loads(path.read_text())
    base.update(config)
    path.write_text(json.dumps(base))
    return folder


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def test_folder_scheduler_options_are_kept_without_scheduler_flag(tiny_sd_path, tmp_path, capsys):
    """A folder configured with DPM-Solver++ and Karras sigmas: the CLI without --scheduler runs
    the folder's own config, the same pixels as `load_model(...).generate(...)`."""
    import noise2art

    folder = _folder_with_scheduler(tiny_sd_path, tmp_path, {
        "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "solver_order": 2,
        "use_karras_sigmas": True})
    code, out, _ = run(capsys, "generate", "a red ball", "--model", str(folder), "--seed", "4", "--steps", "5",
                       "--precision", "model", "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    record = json.loads(out)["images"][0]
    assert record["scheduler"] == "default" and record["scheduler_class"] == "DPMSolverMultistepScheduler"
    api = noise2art.load_model(folder, device="cpu").generate("a red ball", [4], steps=5)[0]
    assert np.array_equal(_pixels(record["path"]), np.asarray(api))
    # Karras sigmas matter on this model: the table's plain dpm++2m gives other pixels.
    plain = noise2art.load_model(folder, device="cpu").generate("a red ball", [4], steps=5, scheduler="dpm++2m")[0]
    assert np.abs(np.asarray(plain).astype(int) - np.asarray(api).astype(int)).max() > 1


def test_from_reproduces_an_image_of_a_scheduler_the_table_does_not_know(tiny_sd_path, tmp_path, capsys):
    folder = _folder_with_scheduler(tiny_sd_path, tmp_path, {"_class_name": "KDPM2DiscreteScheduler"})
    code, out, _ = run(capsys, "generate", "a cat", "--model", str(folder), "--seed", "2", "--steps", "4",
                       "--out", str(tmp_path / "a"), "--json")
    assert code == 0
    first = json.loads(out)["images"][0]
    assert first["scheduler"] == "default" and first["scheduler_class"] == "KDPM2DiscreteScheduler"
    code, out, _ = run(capsys, "generate", "--from", first["path"], "--out", str(tmp_path / "b"), "--json")
    assert code == 0
    again = json.loads(out)["images"][0]
    assert np.array_equal(_pixels(first["path"]), _pixels(again["path"]))
    assert again["derived_from"] == ""


def test_flags_beside_from_override_and_are_recorded(tiny_sd_path, tmp_path, capsys):
    code, out, _ = run(capsys, "generate", "a cat", "--model", str(tiny_sd_path), "--seed", "2", "--steps", "4",
                       "--out", str(tmp_path / "a"), "--json")
    first = json.loads(out)["images"][0]
    code, out, err = run(capsys, "generate", "--from", first["path"], "--steps", "6", "--seed", "9",
                         "--out", str(tmp_path / "b"), "--json")
    assert code == 0
    again = json.loads(out)["images"]
    assert [r["seed"] for r in again] == [9] and again[0]["steps"] == 6
    assert again[0]["derived_from"].endswith("(seed, steps)") and "override" in err
    assert again[0]["prompt"] == "a cat" and again[0]["model"] == first["model"]


def test_seed_range_over_the_limit_names_the_limit(capsys):
    code, _, err = run(capsys, "generate", "a cat", "--seeds", "0..100000")
    assert code == 2 and "at most 10000 seeds" in err and len(err.strip().splitlines()) == 1


def test_quality_preview_runs_the_folders_preview_and_from_repeats_it(tiny_sd_path, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_path, folder)
    (folder / "noise2art.json").write_text(json.dumps({"defaults": {"steps": 4},
                                                       "preview": {"steps": 2, "scheduler": "euler"}}))
    code, out, _ = run(capsys, "generate", "a cat", "--model", str(folder), "--seed", "3", "--quality", "preview",
                       "--out", str(tmp_path / "a"), "--json")
    assert code == 0
    made = json.loads(out)["images"][0]
    with Image.open(made["path"]) as im:
        info = parse_infotext(im.text["parameters"])
    assert info["Steps"] == "2" and info["Sampler"] == "Euler"
    code, out, _ = run(capsys, "generate", "--from", made["path"], "--out", str(tmp_path / "b"), "--json")
    again = json.loads(out)["images"][0]["path"]
    assert code == 0 and np.array_equal(np.asarray(Image.open(made["path"])), np.asarray(Image.open(again)))
    code, out, _ = run(capsys, "generate", "a cat", "--model", str(folder), "--seed", "3", "--out",
                       str(tmp_path / "c"), "--json")
    with Image.open(json.loads(out)["images"][0]["path"]) as im:
        assert parse_infotext(im.text["parameters"])["Steps"] == "4"  # full quality: the defaults
