"""The embedded model's images stay the same across refactors, and bf16 stays close to fp32.

`tests/data/embedded_before/` holds images the embedded model made for a fixed set of
cases (prompts, seeds, schedulers, a negative prompt) before the sampling settings moved
into the engine. They must come out bit for bit the same on the CPU kernels they were
made with; on other kernels (another SIMD level) float results may differ by rounding, so
there the test allows one level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noise2art.engine.tracing import UNetTracer

DATA = Path(__file__).resolve().parents[1] / "data" / "embedded_before"
CASES = json.loads((DATA / "cases.json").read_text())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    import noise2art

    return noise2art.load_model(device="cpu")


@pytest.mark.parametrize("traced", [False, True], ids=["module", "traced"])
@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: f"{c['prompt'][:20]}-{c['settings'].get('scheduler', 'default')}")
def test_images_match_those_made_before(embedded, case, traced):
    """The same images from the UNet module and from its trace (`engine.tracing`)."""
    embedded.tracer = UNetTracer(after=0 if traced else None)
    images = embedded.generate(case["prompt"], case["seeds"], negative=case.get("negative"), **case["settings"])
    assert embedded.tracer.traced == (1 if traced else 0)
    same_kernels = torch.backends.cpu.get_cpu_capability() == CASES["cpu_capability"]
    for image, name in zip(images, case["files"]):
        before = np.asarray(Image.open(DATA / name).convert("RGB")).astype(int)
        now = np.asarray(image).astype(int)
        if same_kernels:
            assert np.array_equal(now, before), f"{name} changed"
        else:
            assert np.abs(now - before).max() <= 1, f"{name} changed by more than rounding"


def test_bf16_precision_is_close_to_fp32(embedded):
    """`precision="bf16"` (what `auto` runs on a CPU with native bf16) moves the embedded model's
    pixels by a few thousandths on average (benchmarks/RESULTS.md), and it did run (they move)."""
    kwargs = dict(seeds=[0, 1, 2, 3], steps=10)
    fp32 = torch.stack([torch.from_numpy(np.array(im)) for im in embedded.generate("a lake at dawn", precision="model", **kwargs)])
    bf16 = torch.stack([torch.from_numpy(np.array(im)) for im in embedded.generate("a lake at dawn", precision="bf16", **kwargs)])
    diff = (fp32.float() - bf16.float()).abs() / 255
    assert diff.mean() < 0.01
    assert diff.max() > 0
