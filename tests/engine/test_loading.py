"""load_model: folders, hub ids offline, refused pickles, unknown names."""

from __future__ import annotations

import pytest

import noise2art
from noise2art import ModelLoadError
from noise2art.engine import registry


def test_loads_diffusers_folder(tiny_sd_path):
    model = noise2art.load_model(tiny_sd_path, device="cpu")
    assert model.embedding_shape == (77, 32)
    assert model.scheduler_class == "PNDMScheduler" and model.resolve().scheduler is None  # the folder's own config
    assert model.dtype.is_floating_point and str(model.device) == "cpu"


def test_hub_id_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        noise2art.load_model("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cpu")
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "could not fetch" in message
    assert "\n" not in message


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickled_checkpoints_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="refusing"):
        noise2art.load_model(path, device="cpu")


def test_unknown_model_lists_embedded_names():
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'.*embedded"):
        noise2art.load_model("no-such-model", device="cpu")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        noise2art.load_model(tmp_path, device="cpu")


def test_missing_safetensors_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such checkpoint"):
        noise2art.load_model(tmp_path / "x.safetensors", device="cpu")


def test_registry_aliases():
    assert registry.canonical_name("embedded") == registry.DEFAULT_MODEL
    assert registry.canonical_name("default") == registry.DEFAULT_MODEL
    assert registry.canonical_name("stable-diffusion") is None


def test_unknown_device():
    with pytest.raises(ValueError, match="^device: "):
        noise2art.load_model("embedded", device="tpu")
