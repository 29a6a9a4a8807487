"""Shared fixtures: tiny random SD models saved to temporary folders."""

from __future__ import annotations

import os

import pytest

# No test reaches a network: the hub client fails fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tests.tiny_sd import build_tiny_sd  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """Folder of a tiny random SD 1.x-style pipeline (epsilon, PNDM)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"), "epsilon")


@pytest.fixture(scope="session")
def tiny_sd_v_path(tmp_path_factory):
    """Folder of a tiny random SD 2.x-style pipeline (v-prediction, DDIM)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-v"), "v_prediction", seed=1)


@pytest.fixture(scope="session")
def tiny_model(tiny_sd_path):
    import noise2art

    return noise2art.load_model(tiny_sd_path, device="cpu")


@pytest.fixture(scope="session")
def tiny_student_path(tiny_sd_path, tmp_path_factory):
    """A model folder holding only a UNet: the tiny model's with its weights scaled by 0.9,
    a stand-in for a few-step student (different pictures, same shapes)."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_path, subfolder="unet", use_safetensors=True)
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(0.9)
    folder = tmp_path_factory.mktemp("tiny-fast")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


@pytest.fixture
def with_student(tiny_model, tiny_student_path):
    """The tiny model carrying the stand-in student as "tiny-fast", which its previews run
    (3 steps, guidance 1, DDIM); restored afterwards."""
    from noise2art.engine.settings import SamplingOverrides

    saved = tiny_model.preview, tiny_model.unet_variants
    tiny_model.unet_variants = {"tiny-fast": tiny_student_path}
    tiny_model.preview = SamplingOverrides(steps=3, guidance=1.0, scheduler="ddim", unet="tiny-fast")
    yield tiny_model
    tiny_model.preview, tiny_model.unet_variants = saved
