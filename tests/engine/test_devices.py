"""Sampling precision: which dtype each setting resolves to, and its errors."""

from __future__ import annotations

import pytest
import torch

from noise2art.engine.devices import native_bf16, resolve_precision
from noise2art.errors import InvalidArgument

CPU = torch.device("cpu")


def test_model_precision_keeps_the_model_dtype():
    assert resolve_precision(CPU, torch.float32, "model") == torch.float32
    assert resolve_precision(CPU, torch.float16, "model") == torch.float16


def test_bf16_is_bf16_whatever_the_model():
    assert resolve_precision(CPU, torch.float32, "bf16") == torch.bfloat16


def test_auto_follows_the_hardware_and_leaves_reduced_dtypes_alone():
    expected = torch.bfloat16 if native_bf16(CPU) else torch.float32
    assert resolve_precision(CPU, torch.float32, "auto") == expected
    assert resolve_precision(CPU, torch.float16, "auto") == torch.float16
    assert not native_bf16(torch.device("meta"))


def test_unknown_precision_is_an_error():
    with pytest.raises(InvalidArgument, match="precision"):
        resolve_precision(CPU, torch.float32, "fp8")


def test_cli_precision_choices_match_the_engine():
    from noise2art.cli.common import PRECISION_CHOICES
    from noise2art.engine.devices import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS
