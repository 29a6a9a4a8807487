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
