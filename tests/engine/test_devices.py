"""Sampling precision: which context each setting gives, and its errors."""

from __future__ import annotations

import pytest
import torch

from noise2art.engine.devices import native_bf16, sampling_precision
from noise2art.errors import InvalidArgument

CPU = torch.device("cpu")


def autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu")


def test_model_precision_never_autocasts():
    with sampling_precision(CPU, torch.float32, "model"):
        assert not autocast_on()


def test_bf16_autocasts_matrix_products():
    with sampling_precision(CPU, torch.float32, "bf16"):
        assert autocast_on()
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not autocast_on()


def test_auto_follows_the_hardware_and_leaves_reduced_dtypes_alone():
    with sampling_precision(CPU, torch.float32, "auto"):
        assert autocast_on() == native_bf16(CPU)
    with sampling_precision(CPU, torch.bfloat16, "auto"):
        assert not autocast_on()
    assert not native_bf16(torch.device("meta"))


def test_unknown_precision_is_an_error():
    with pytest.raises(InvalidArgument, match="precision"):
        sampling_precision(CPU, torch.float32, "fp8")
