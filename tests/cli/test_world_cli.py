"""`noise2art world train` and `world export` from the command line, on a tiny run; flags `world train` refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noise2art.cli.main import main


@pytest.mark.slow
def test_train_all_then_export_gives_a_model_that_loads_and_generates(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--runs", str(runs), "--n-images", "16", "--size", "32"]
    assert main(["world", "train", "all", *common, "--steps", "2", "--batch-size", "4"]) == 0
    for stage in ("autoencoder", "unet", "clip", "aesthetic", "attributes"):
        assert any((runs / stage).rglob("*.safetensors")), f"{stage} left no weights"
    out = tmp_path / "model"
    assert main(["world", "export", *common, "--out", str(out), "--notes", '{"hardware": "test"}']) == 0
    capsys.readouterr()
    spec = json.loads((out / "noise2art.json").read_text())
    assert spec["training"]["hardware"] == "test" and set(spec["companions"]) == {"world_clip", "aesthetic", "attributes"}

    import noise2art
    from noise2art.world.training.export import vocabulary_spec

    model = noise2art.load_model(str(out), device="cpu")
    assert model.native_size == 32 and model.vocabulary == {k: v for k, v in vocabulary_spec().items() if k != "_comment"}
    image = model.generate("a red ball", [0], steps=2)[0]
    assert image.size == (32, 32) and np.asarray(image).std() > 0


@pytest.mark.slow
def test_shipped_vocabulary_is_what_export_writes():
    """The embedded model's vocabulary.json and the exporter cannot drift apart."""
    from noise2art.engine.registry import DEFAULT_MODEL, embedded_path
    from noise2art.world.training.export import vocabulary_spec

    shipped = json.loads((embedded_path(DEFAULT_MODEL) / "vocabulary.json").read_text())
    assert shipped == vocabulary_spec()


@pytest.mark.parametrize("stage", ["autoencoder", "clip", "aesthetic", "attributes"])
@pytest.mark.parametrize("flag, value", [("--focus", "snow=3"), ("--init-from", "some/model")])
def test_unet_only_flags_are_refused_for_other_stages(tmp_path, capsys, monkeypatch, stage, flag, value):
    """--focus and --init-from only shape UNet training: on another stage they are refused
    (one stderr line naming the flag, exit 2) before anything is rendered or trained."""
    from noise2art.world.training import autoencoder, companions

    def must_not_run(*args, **kwargs):
        raise AssertionError("training started despite a refused flag")

    for module, name in [(autoencoder, "train"), (companions, "train_clip"), (companions, "train_aesthetic"),
                         (companions, "train_attributes")]:
        monkeypatch.setattr(module, name, must_not_run)
    runs = tmp_path / "runs"
    assert main(["world", "train", stage, "--runs", str(runs), "--n-images", "4", "--size", "32", flag, value]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("noise2art world") and flag in lines[0] and stage in lines[0]
    assert not runs.exists()


def test_unet_only_flags_reach_the_unet_stage(tmp_path, monkeypatch):
    """The same flags on the unet stage are passed on to its training config, not refused."""
    from noise2art.world.training import unet

    seen = {}
    monkeypatch.setattr(unet, "train", lambda cfg: seen.update(init_from=cfg.init_from, focus=cfg.focus))
    argv = ["world", "train", "unet", "--runs", str(tmp_path / "runs"), "--n-images", "4", "--size", "32",
            "--focus", "snow=3", "--init-from", "some/model"]
    assert main(argv) == 0
    assert seen["init_from"] == "some/model" and seen["focus"] == {"snow": 3.0}


@pytest.mark.parametrize("stage", ["unet", "all", "clip"])
@pytest.mark.parametrize("flag, value", [("--teacher", "world-64"), ("--n-trajectories", "8"), ("--detail", "2")])
def test_distillation_flags_are_refused_for_other_stages(tmp_path, capsys, stage, flag, value):
    runs = tmp_path / "runs"
    assert main(["world", "train", stage, "--runs", str(runs), flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and "'fast'" in err and not runs.exists()


def test_the_fast_stage_passes_its_flags_on_and_checks_them(tmp_path, capsys, monkeypatch):
    from noise2art.world.training import distill

    seen = {}
    monkeypatch.setattr(distill, "train", lambda cfg: seen.update(cfg=cfg))
    runs = tmp_path / "runs"
    assert main(["world", "train", "fast", "--runs", str(runs), "--n-trajectories", "64", "--steps", "10",
                 "--batch-size", "8", "--teacher", "embedded"]) == 0
    cfg = seen["cfg"]
    assert (cfg.run_dir, cfg.n_trajectories, cfg.steps, cfg.batch_size, cfg.teacher) == (
        str(runs / "fast"), 64, 10, 8, "embedded")
    assert main(["world", "train", "fast", "--runs", str(runs), "--teacher", "./some/folder"]) == 2
    assert "unknown embedded model './some/folder'" in capsys.readouterr().err
    assert main(["world", "train", "fast", "--runs", str(runs), "--n-trajectories", "0"]) == 2
    assert main(["world", "train", "fast", "--runs", str(runs), "--init-from", "world-64-fast", "--detail", "4"]) == 0
    assert (seen["cfg"].init_from, seen["cfg"].detail_weight) == ("world-64-fast", 4.0)
    assert main(["world", "train", "fast", "--runs", str(runs), "--detail", "-1"]) == 2
    assert main(["world", "export", "--fast", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "m")]) == 2
    assert "train the 'fast' stage first" in capsys.readouterr().err
