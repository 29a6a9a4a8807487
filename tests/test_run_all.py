"""benchmarks/run_all.py rewrites exactly its own sections of the results file."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("run_all", None)


def test_a_section_is_appended_then_replaced_in_place(run_all):
    text = "# Results\n\n## Hand-written\nkept\n"
    once = run_all.replace_section(text, "invariant", "## Seed-invariant embeddings — m\nold figure\n")
    assert once.startswith(text.rstrip())
    assert "<!-- run_all:invariant -->\n## Seed-invariant" in once and once.endswith("<!-- /run_all:invariant -->\n")
    other = run_all.replace_section(once + "\n## After\nalso kept\n", "optimize", "## Opt\nx\n")
    twice = run_all.replace_section(other, "invariant", "## Seed-invariant embeddings — m\nnew figure\n")
    assert "old figure" not in twice and "new figure" in twice
    assert twice.count("<!-- run_all:invariant -->") == 1
    # Everything outside the block stays, in order.
    assert twice.index("kept") < twice.index("new figure") < twice.index("also kept") < twice.index("## Opt")


def test_the_section_heading_names_the_model_and_protocol(run_all):
    bench = run_all.BENCHES[0]
    body = run_all.section(bench, "world-64, 18 947-step UNet", "## bench_generate — today\n| a | b |\n", True, 12.0)
    first = body.splitlines()[0]
    assert first.startswith(f"## {bench.title} — world-64, 18 947-step UNet (") and first.endswith("quick protocol)")
    assert "bench_generate — today" not in body and "| a | b |" in body


def test_the_embedded_model_label_carries_its_unet_steps(run_all):
    label = run_all.model_label(None)
    assert label.startswith("world-64, ") and label.endswith("-step UNet")


def test_unknown_benchmarks_are_refused(run_all, capsys):
    with pytest.raises(SystemExit):
        run_all.parse_args(["--only", "invariant,nope"])
    assert "nope" in capsys.readouterr().err
