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


def _probes(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    # Pretend to be a CPU with (or without) each bf16 feature; the real probes answer for this machine.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (True, True)])
def test_a_cpu_with_native_bf16_samples_an_fp32_model_in_bf16(monkeypatch, avx512_bf16, amx):
    """Either probe (AVX512-BF16 or AMX) makes `auto` run an fp32 model in bf16 on the CPU."""
    _probes(monkeypatch, avx512_bf16, amx)
    assert native_bf16(CPU) is True
    assert resolve_precision(CPU, torch.float32, "auto") == torch.bfloat16
    # Explicit settings do not depend on the hardware.
    assert resolve_precision(CPU, torch.float32, "model") == torch.float32
    assert resolve_precision(CPU, torch.float32, "bf16") == torch.bfloat16


def test_a_cpu_without_native_bf16_keeps_fp32(monkeypatch):
    """Without either probe, `auto` keeps the model's fp32 (emulated bf16 would be slower)."""
    _probes(monkeypatch, False, False)
    assert native_bf16(CPU) is False
    assert resolve_precision(CPU, torch.float32, "auto") == torch.float32
    assert resolve_precision(CPU, torch.float32, "bf16") == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_leaves_an_fp16_model_in_fp16(monkeypatch, native):
    """`auto` only ever lowers fp32: an fp16 (or bf16) model keeps its dtype on any CPU."""
    _probes(monkeypatch, native, native)
    assert resolve_precision(CPU, torch.float16, "auto") == torch.float16
    assert resolve_precision(CPU, torch.bfloat16, "auto") == torch.bfloat16


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps", "meta"])
def test_the_cpu_probes_say_nothing_about_other_devices(monkeypatch, name):
    """Device objects that are not the CPU never count as native bf16, even on a bf16 CPU host:
    `auto` keeps the model's dtype there (no GPU is needed to build a cuda device object)."""
    _probes(monkeypatch, True, True)
    device = torch.device(name)
    assert native_bf16(device) is False
    assert resolve_precision(device, torch.float32, "auto") == torch.float32
    assert resolve_precision(device, torch.float16, "auto") == torch.float16


def test_a_torch_without_the_probes_counts_as_no_native_bf16(monkeypatch):
    """An older torch without the private probes must not crash: it means no native bf16."""
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert native_bf16(CPU) is False
    assert resolve_precision(CPU, torch.float32, "auto") == torch.float32
