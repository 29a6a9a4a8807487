"""`noise2art world train` and `world export` from the command line, on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noise2art.cli.main import main

pytestmark = pytest.mark.slow


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


def test_shipped_vocabulary_is_what_export_writes():
    """The embedded model's vocabulary.json and the exporter cannot drift apart."""
    from noise2art.engine.registry import DEFAULT_MODEL, embedded_path
    from noise2art.world.training.export import vocabulary_spec

    shipped = json.loads((embedded_path(DEFAULT_MODEL) / "vocabulary.json").read_text())
    assert shipped == vocabulary_spec()
