"""Device, dtype and sampling precision: `auto` picks cuda > mps > cpu; fp16 on CUDA, fp32 elsewhere."""

from __future__ import annotations

import torch

from noise2art.errors import InvalidArgument

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve `auto` and check that an explicit device exists on this machine."""
    if isinstance(device, torch.device):
        return device
    name = str(device)
    base = name.split(":")[0]
    if base not in DEVICES:
        raise InvalidArgument("device", f"unknown device '{name}'; choose one of {', '.join(DEVICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("device", "cuda was asked for but torch sees no CUDA device")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidArgument("device", "mps was asked for but is not available")
    return torch.device(name)


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp16 on CUDA (as SD is run), fp32 on CPU and MPS, unless `dtype` says otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InvalidArgument("dtype", f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


PRECISIONS = ("auto", "model", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix products natively: a CPU with AVX512-BF16 or AMX."""
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidArgument("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(device: torch.device, dtype: torch.dtype, precision: str = "auto") -> torch.dtype:
    """The dtype the denoiser runs in for no-grad sampling at `precision`.

    "model" is the model's dtype as loaded; "bf16" is bfloat16; "auto" is bfloat16 for an
    fp32 model on a CPU with native bf16 (faster batches, pixels moved by a few thousandths
    on average: benchmarks/RESULTS.md has the measured figures), else the model's dtype.
    """
    check_precision(precision)
    if precision == "auto":
        precision = "bf16" if dtype == torch.float32 and native_bf16(device) else "model"
    return dtype if precision == "model" else torch.bfloat16
