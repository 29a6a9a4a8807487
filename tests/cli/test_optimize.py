"""`noise2art optimize`, run in-process on the tiny SD model (2 denoising steps, few iterations)."""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest
from PIL import Image

from noise2art import metrics
from noise2art.cli.main import main
from noise2art.engine.embedding import PromptEmbedding
from noise2art.metrics import sharpness

FAST = ["--steps", "2", "--scheduler", "ddim", "--grad-steps", "last", "--lr", "0.05"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def optimised(tiny_sd_path, tmp_path_factory):
    """One run with two seeds and an evaluation on two unseen seeds."""
    out = tmp_path_factory.mktemp("optimize")
    code = main(["optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "sharpness", "--iterations", "3",
                 "--seeds", "0..1", "--eval-seeds", "2", "--every", "2", "--out", str(out), "--json", *FAST])
    return code, out


def test_writes_every_file_and_json(optimised, capsys):
    code, out = optimised
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"traj_0000.png", "traj_0002.png", "scores.csv", "scores.png", "best.safetensors",
            "before.png", "after.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert max(float(r["score"]) for r in rows) == pytest.approx(float(rows[-1]["best"]))
    assert Image.open(out / "scores.png").size == (640, 400)
    emb = PromptEmbedding.load(out / "best.safetensors")
    assert emb.shape == (77, 32)
    # Two seeds: before/after are contact sheets wider than one 32 px image.
    assert Image.open(out / "after.png").size[0] > 32


def test_json_keys(tiny_sd_path, tmp_path, capsys):
    code, stdout, err = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "sharpness",
                            "--iterations", "2", "--eval-seeds", "2", "--seed", "4", "--out", str(tmp_path), "--json",
                            *FAST)
    assert code == 0
    data = json.loads(stdout)  # exactly one JSON object on stdout
    for key in ("initial_score", "best_score", "iterations", "seconds", "eval_initial_mean", "eval_best_mean",
                "eval_initial_std", "eval_best_std", "stop_reason", "files"):
        assert key in data, key
    assert data["iterations"] == 2 and data["stop_reason"] == "completed"
    assert data["eval_seeds"] == [5, 6]  # unseen: after the optimised seed 4
    assert data["best_score"] >= data["initial_score"]
    assert "optimize sharpness" in err  # the progress bar is on stderr


def test_after_png_is_reproducible_with_generate(tiny_sd_path, tmp_path, capsys):
    code, stdout, _ = run(capsys, "optimize", "a cat", "--model", str(tiny_sd_path), "--metric", "sharpness",
                          "--iterations", "2", "--seed", "3", "--out", str(tmp_path / "o"), "--json", *FAST)
    after = json.loads(stdout)["files"]["after"]
    code, stdout, _ = run(capsys, "generate", "--from", after, "--out", str(tmp_path / "g"), "--json")
    assert code == 0
    again = json.loads(stdout)["images"][0]["path"]
    assert np.array_equal(np.asarray(Image.open(after)), np.asarray(Image.open(again)))


def test_embedding_file_as_prompt(optimised, tiny_sd_path, tmp_path, capsys):
    _, out = optimised
    code, stdout, _ = run(capsys, "optimize", f"@{out / 'best.safetensors'}", "--model", str(tiny_sd_path),
                          "--metric", "sharpness", "--iterations", "1", "--out", str(tmp_path), "--json", *FAST)
    assert code == 0 and json.loads(stdout)["prompt"].startswith("optimize(a red ball")


def test_ctrl_c_keeps_the_best_so_far(tiny_sd_path, tmp_path, capsys):
    calls = {"n": 0}

    def interrupt_on_second(images):
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends
        return sharpness(images)

    before = signal.getsignal(signal.SIGINT)
    metrics.register("interrupt_test", interrupt_on_second, replace=True)
    try:
        code, stdout, err = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path),
                                "--metric", "interrupt_test", "--iterations", "20", "--eval-seeds", "2",
                                "--out", str(tmp_path), "--json", *FAST)
    finally:
        metrics.unregister("interrupt_test")
    assert code == 130
    data = json.loads(stdout)
    assert data["stop_reason"] == "cancelled" and data["iterations"] == 2
    assert data["eval_best_mean"] is None  # the evaluation is skipped after Ctrl-C
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "after.png").is_file()
    assert "interrupted" in err
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--metric", "sharpnes"], "known:"),
        (["--metric", "sharpness", "--iterations", "0"], "iterations"),
        (["--metric", "sharpness", "--lr", "0"], "lr"),
        (["--metric", "sharpness", "--lr", "nan"], "lr"),
        (["--metric", "sharpness", "--grad-steps", "sideways"], "grad_steps"),
        (["--metric", "sharpness", "--grad-steps", "none"], "grad_steps"),
        (["--metric", "sharpness", "--renorm-every", "often"], "renorm-every"),
        (["--metric", "sharpness", "--eval-seeds", "0"], "eval-seeds"),
        (["--metric", "sharpness", "--seeds", "5..1"], "seeds"),
        (["--metric", "sharpness", "--adherence-floor", "lots"], "adherence-floor"),
        (["--metric", "sharpness", "--adherence-floor", "2"], "adherence_floor"),
        (["--metric", "sharpness", "--adherence-weight", "-1"], "adherence_weight"),
    ],
)
def test_bad_input_exits_2_before_loading(args, needle, tmp_path, capsys):
    # A model path that does not exist: these must fail on the argument, not on loading.
    code, stdout, err = run(capsys, "optimize", "a red ball", "--model", str(tmp_path / "no-model"), *args,
                            "--out", str(tmp_path / "o"))
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_metric_needing_a_model_says_what_to_load(tiny_sd_path, tmp_path, capsys):
    code, _, err = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "aesthetic",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "aesthetic" in err and "load" in err
    assert not (tmp_path / "o").exists()


def test_reference_flag_sets_the_reference_settings(tiny_sd_path, tmp_path, capsys):
    code, stdout, _ = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "blurriness",
                          "--reference", "--steps", "2", "--iterations", "1", "--out", str(tmp_path), "--json")
    assert code == 0
    config = json.loads(stdout)["config"]
    assert config["mode"] == "reference" and config["steps"] == 2  # explicit flags override the preset
    assert (config["scheduler"], config["grad_steps"], config["renorm_every"]) == ("lms", "last", 1)
    assert config["loss_scale"] == 10.0  # the metric's own


def test_what_the_picture_kept_is_reported_beside_the_metric(tiny_sd_path, tmp_path, capsys):
    code, stdout, _ = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "sharpness",
                          "--iterations", "2", "--out", str(tmp_path), "--json", *FAST)
    assert code == 0
    data = json.loads(stdout)
    # The tiny model has no attribute classifiers: adherence is null, the distance is measured.
    assert data["named"] == {} and data["initial_adherence"] is None and data["best_adherence"] is None
    assert isinstance(data["best_distance"], float) and data["best_distance"] >= 0
    assert data["config"]["mode"] == "default"
    assert (data["config"]["adherence_weight"], data["config"]["adherence_floor"]) == (1.0, 0.9)
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["adherence"] for r in rows] == ["", ""] and float(rows[0]["distance"]) == 0.0


def test_unconstrained_turns_the_adherence_terms_off(tiny_sd_path, tmp_path, capsys):
    code, stdout, _ = run(capsys, "optimize", "a red ball", "--model", str(tiny_sd_path), "--metric", "sharpness",
                          "--unconstrained", "--iterations", "1", "--out", str(tmp_path), "--json", *FAST)
    assert code == 0
    config = json.loads(stdout)["config"]
    assert config["mode"] == "unconstrained"
    assert (config["adherence_weight"], config["picture_weight"], config["adherence_floor"]) == (0.0, 0.0, None)
