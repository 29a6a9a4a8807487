"""`noise2art invariant`, run in-process on the tiny SD model (3 denoising steps, 2-3 iterations)."""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest
from PIL import Image

import noise2art.cli.invariant as cli_invariant
from noise2art.cli.main import main
from noise2art.engine.embedding import PromptEmbedding

FAST = ["--steps", "3", "--stage-iterations", "2", "--max-stage", "1", "--eval-seeds", "1"]
JSON_KEYS = ("distance_before", "distance_after", "agreement_before", "agreement_after", "seconds")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def seed_run(tiny_sd_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("invariant")
    code = main(["invariant", "single color ball", "--model", str(tiny_sd_path), "--target-seed", "7",
                 "--iterations", "3", "--out", str(out), "--json", *FAST])
    return code, out


def test_writes_every_file(seed_run):
    code, out = seed_run
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"target.png", "before.png", "after.png", "embedding.safetensors", "scores.csv", "report.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert Image.open(out / "target.png").size == (32, 32)
    # Five evaluation seeds (the reference's four and one fresh one) in a contact sheet.
    assert Image.open(out / "after.png").size[0] > 2 * 32
    emb = PromptEmbedding.load(out / "embedding.safetensors")
    assert emb.shape == (77, 32) and "invariant(single color ball, seed 7)" in emb.prompts[0]
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["iteration"]), int(r["stage"])) for r in rows] == [(0, 0), (1, 0), (2, 1)]
    assert all(len(r["seeds"].split()) == 3 for r in rows)


def test_report_holds_distances_before_and_after(seed_run):
    _, out = seed_run
    report = json.loads((out / "report.json").read_text())
    for key in JSON_KEYS:
        assert key in report, key
    assert report["eval_seeds"][:4] == [683395, 297009, 23916, 417016] and len(report["eval_seeds"]) == 5
    assert 7 not in report["eval_seeds"]
    assert report["feature_kind"] == "thumbnail"
    assert report["agreement_before"] is None and report["agreement_after"] is None  # no attribute classifier
    assert report["distance_before"] == pytest.approx(np.mean(report["before"]["distances"]))
    assert report["stop_reason"] == "completed" and [s["stop_after"] for s in report["stages"]] == [1, 2]


def test_json_on_stdout_and_progress_on_stderr(tiny_sd_path, tmp_path, capsys):
    code, stdout, err = run(capsys, "invariant", "a ball", "--model", str(tiny_sd_path), "--target-seed", "3",
                            "--iterations", "2", "--mode", "full", "--seeds-per-step", "2", "--out", str(tmp_path),
                            "--json", *FAST)
    assert code == 0
    data = json.loads(stdout)  # exactly one JSON object
    for key in JSON_KEYS:
        assert key in data, key
    assert data["mode"] == "full" and data["iterations"] == 2 and data["seconds"] > 0
    assert "invariant" in err  # the progress bar


def test_text_output(tiny_sd_path, tmp_path, capsys):
    code, stdout, _ = run(capsys, "invariant", "a ball", "--model", str(tiny_sd_path), "--iterations", "1",
                          "--out", str(tmp_path), *FAST)
    assert code == 0
    assert "distance to the target on 5 seeds (thumbnail)" in stdout
    assert "attribute agreement: n/a" in stdout


def test_target_image_of_another_size_is_resized_with_a_notice(tiny_sd_path, tmp_path, capsys):
    path = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    code, stdout, err = run(capsys, "invariant", "a ball", "--model", str(tiny_sd_path), "--target-image", str(path),
                            "--iterations", "2", "--out", str(tmp_path / "o"), "--json", *FAST)
    assert code == 0
    assert "notice: target image is 48x40; resized" in err
    data = json.loads(stdout)
    assert data["target_seed"] is None and data["target_image"] == str(path) and data["noise_seed"] == 0
    assert Image.open(tmp_path / "o" / "target.png").size == (32, 32)


def test_ctrl_c_keeps_the_best_so_far_and_writes_outputs(tiny_sd_path, tmp_path, capsys, monkeypatch):
    load = cli_invariant.load

    def load_with_interrupt(args):
        model = load(args)
        calls = {"n": 0}

        def interrupt(module, inputs):
            calls["n"] += 1
            # The target (rendered to the end: 3 calls), iteration 0 (its call and the checkpointed
            # recompute in the backward pass), then Ctrl-C during iteration 1.
            if calls["n"] == 6:
                signal.raise_signal(signal.SIGINT)

        model.unet.register_forward_pre_hook(interrupt)
        return model

    monkeypatch.setattr(cli_invariant, "load", load_with_interrupt)
    before = signal.getsignal(signal.SIGINT)
    code, stdout, err = run(capsys, "invariant", "a ball", "--model", str(tiny_sd_path), "--iterations", "3",
                            "--out", str(tmp_path), "--json", *FAST)
    assert code == 130
    data = json.loads(stdout)
    assert data["stop_reason"] == "cancelled" and data["iterations"] == 2
    assert data["distance_after"] is not None  # the evaluation still ran
    assert {"embedding.safetensors", "before.png", "after.png", "report.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "interrupted" in err
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--target-seed", "1", "--target-image", "x.png"], "target"),
        (["--iterations", "0"], "iterations"),
        (["--target-seed", str(2**63)], "target-seed"),
        (["--target-seed", "-1"], "target-seed"),
        (["--seed", "-5"], "seed"),
        (["--seeds-per-step", "0"], "seeds_per_step"),
        (["--mode", "diagonal"], "mode"),
        (["--eval-seeds", "-1"], "eval-seeds"),
        (["--steps", "0"], "steps"),
        (["--target-image", "missing.png"], "target-image"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_loading(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A model path that does not exist: these must fail on the argument, not on loading.
    code, stdout, err = run(capsys, "invariant", "a ball", "--model", str(tmp_path / "no-model"), *args,
                            "--out", str(tmp_path / "o"))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


def test_unreadable_image_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.png"
    path.write_text("not an image")
    code, _, err = run(capsys, "invariant", "a ball", "--model", str(tmp_path / "no-model"), "--target-image",
                       str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot read" in err and "broken.png" in err


def test_max_stage_beyond_the_steps_exits_2(tiny_sd_path, tmp_path, capsys):
    code, _, err = run(capsys, "invariant", "a ball", "--model", str(tiny_sd_path), "--steps", "2", "--scheduler",
                       "ddim", "--max-stage", "2", "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "max_stage" in err
    assert not (tmp_path / "o").exists()
