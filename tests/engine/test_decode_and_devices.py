"""Promises of the README without another home: the fp16 VAE decode retried in fp32, a NaN
image never saved, `--device` / `--dtype` selection, and `info` on another tool's infotext."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, PngImagePlugin

import noise2art
from noise2art.cli.main import main
from noise2art.engine import devices
from noise2art.engine.model import Model
from noise2art.errors import InvalidArgument, Noise2ArtError


def _nan_when(dtype_test):
    """A `_vae_decode` that returns NaN images whenever `dtype_test(vae.dtype)` holds."""
    original = Model._vae_decode

    def decode(self, vae, latents):
        images = original(self, vae, latents)
        return torch.full_like(images, float("nan")) if dtype_test(vae.dtype) else images

    return decode


def test_half_precision_decode_that_overflows_is_retried_in_fp32(tiny_sd_path, monkeypatch):
    model = noise2art.load_model(tiny_sd_path, device="cpu", dtype="bf16")
    latents = model.sample("a cat", [0], steps=2)
    expected = model.decode(latents)
    monkeypatch.setattr(Model, "_vae_decode", _nan_when(lambda dt: dt != torch.float32))
    images = model.decode(latents)
    assert torch.isfinite(images).all() and images.dtype == latents.dtype
    # The fp32 copy decodes the same latents to (nearly) the same picture.
    assert (images.float() - expected.float()).abs().mean() < 0.02


def test_nan_image_is_an_error_and_never_saved(tiny_sd_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Model, "_vae_decode", _nan_when(lambda dt: True))
    code = main(["generate", "a cat", "--model", str(tiny_sd_path), "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    # One message line (the progress bar redraws itself with carriage returns, no newlines).
    assert code == 2 and err.count("\n") == 1 and "NaN" in err.splitlines()[-1]
    assert not list(tmp_path.rglob("*.png"))
    with pytest.raises(Noise2ArtError, match="NaN"):
        noise2art.load_model(tiny_sd_path, device="cpu").generate("a cat", [0], steps=2)


def test_device_and_dtype_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.pick_device("auto") == torch.device("cpu")
    with pytest.raises(InvalidArgument, match="cuda"):
        devices.pick_device("cuda")
    with pytest.raises(InvalidArgument, match="unknown device"):
        devices.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device("auto") == torch.device("cuda")
    assert devices.pick_dtype(torch.device("cuda")) == torch.float16  # SD is run in fp16 on CUDA
    assert devices.pick_dtype(torch.device("cpu")) == torch.float32
    assert devices.pick_dtype(torch.device("cuda"), "fp32") == torch.float32
    with pytest.raises(InvalidArgument, match="unknown dtype"):
        devices.pick_dtype(torch.device("cpu"), "fp8")


def test_loaded_model_runs_on_the_chosen_dtype(tiny_sd_path):
    model = noise2art.load_model(tiny_sd_path, device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.bfloat16


def test_cli_device_that_is_missing_is_one_line(tiny_sd_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["generate", "a cat", "--model", str(tiny_sd_path), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "device" in err and len(err.strip().splitlines()) == 1


def test_info_reads_infotext_written_by_another_tool(tmp_path, capsys):
    text = ("a castle on a hill, oil painting\nNegative prompt: blurry, low quality\n"
            "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: abc123")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "other.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompt"] == "a castle on a hill, oil painting" and data["negative"] == "blurry, low quality"
    assert data["Steps"] == "28" and data["Sampler"] == "DPM++ 2M Karras" and data["Seed"] == "1234"
    assert data["Size"] == "512x768" and data["Model hash"] == "abc123"
    # Such an image cannot be reproduced: --from says so in one line.
    assert main(["generate", "--from", str(path)]) == 2
    assert "not written by noise2art" in capsys.readouterr().err
