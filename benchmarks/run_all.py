"""Re-measure every method on one model and rewrite its sections of benchmarks/RESULTS.md.

Runs, one after another (never in parallel: they share the CPU cores), the engine,
world, interpolation, optimization, seed-invariance and feedback benchmarks, each as its
own process with the same `--model`. Each benchmark prints one Markdown section; this
script puts it in RESULTS.md between markers of the form

    <!-- run_all:NAME -->
    ## TITLE — MODEL (DATE, PROTOCOL)
    ...the benchmark's own output...
    <!-- /run_all:NAME -->

replacing that block when it is there and appending it otherwise, so rerunning on a new
model rewrites exactly the figures it re-measured. MODEL names the model and, for the
embedded model, its UNet's training steps (figures measured on an older UNet are not
comparable).

Protocols:
- `--quick`: a reduced protocol of every benchmark that fits in about 15 minutes on 2
  CPU cores (small prompt sets, few iterations); its sections say "quick protocol".
- default: each benchmark's full protocol, the one its targets are stated for (about
  2.5 hours on 2 CPU cores).

Run:
    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --model world-64 --only invariant,optimize
    python benchmarks/run_all.py --dry-run          # print the commands, run nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


@dataclass(frozen=True)
class Bench:
    """One benchmark: its script, the section title, and the arguments of each protocol."""

    name: str
    script: str
    title: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()
    model_flag: str = "--model"


BENCHES = (
    Bench("engine", "bench_generate.py", "Engine: generate", ("--repeats", "2")),
    Bench("world", "bench_world.py", "Embedded model: quality and speed",
          ("--prompts", "12", "--seeds", "4", "--classifier-images", "400"), ()),
    Bench("interpolate", "bench_interpolate.py", "Interpolation",
          ("--frames", "12", "--retime-frames", "8", "--refine", "6", "--smooth-frames", "8", "--pairs", "2")),
    Bench("optimize", "bench_optimize.py", "Metric optimization", ("--quick",)),
    Bench("invariant", "bench_invariant.py", "Seed-invariant embeddings", ("--quick",)),
    Bench("feedback", "bench_feedback.py", "Iterative human feedback", ("--quick",)),
    Bench("fewstep", "bench_fewstep.py", "Few-step sampling and world-64-fast",
          ("--prompts", "12", "--steps", "4,6,8", "--schedulers", "ddim,dpm++2m,unipc")),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    p.add_argument("--quick", action="store_true", help="the reduced protocol (about 15 minutes on 2 CPU cores)")
    p.add_argument("--only", default=None, help=f"comma list of {', '.join(b.name for b in BENCHES)}")
    p.add_argument("--results", default=str(RESULTS), help="the results file to rewrite")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    names = [b.name for b in BENCHES]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
        args.only = wanted
    return args


def model_label(model_name: str | None) -> str:
    """The model's id, with its UNet's training steps when its folder records them."""
    from noise2art.engine.registry import DEFAULT_MODEL, local_folder

    model_id = model_name or DEFAULT_MODEL
    folder = local_folder(model_id)
    steps = None
    if (folder / "noise2art.json").is_file():
        steps = json.loads((folder / "noise2art.json").read_text()).get("training", {}).get("unet_steps")
    # Thousands set off by a space, as RESULTS.md writes them ("18 947-step UNet").
    return f"{model_id}, {f'{steps:,}'.replace(',', ' ')}-step UNet" if steps else model_id


def command(bench: Bench, args) -> list[str]:
    # Relative to the repository root (the benchmarks run there), so the report's command reads as typed.
    cmd = [sys.executable, str(Path(HERE.name) / bench.script)]
    if args.model:
        cmd += [bench.model_flag, args.model]
    return cmd + list(bench.quick if args.quick else bench.full)


def replace_section(text: str, name: str, block: str) -> str:
    """`text` with the `run_all:name` block replaced by `block` (appended when absent)."""
    pattern = re.compile(rf"<!-- run_all:{re.escape(name)} -->.*?<!-- /run_all:{re.escape(name)} -->\n?", re.S)
    wrapped = f"<!-- run_all:{name} -->\n{block.rstrip()}\n<!-- /run_all:{name} -->\n"
    if pattern.search(text):
        return pattern.sub(lambda _: wrapped, text, count=1)
    return text.rstrip() + "\n\n" + wrapped


def section(bench: Bench, label: str, output: str, quick: bool, seconds: float, flags: str = "") -> str:
    """The benchmark's Markdown under one heading naming the model; its own heading is dropped."""
    body = re.sub(r"\A\s*## [^\n]*\n", "", output.strip() + "\n").lstrip("\n")
    protocol = "quick protocol" if quick else "full protocol"
    return (f"## {bench.title} — {label} ({datetime.date.today().isoformat()}, {protocol})\n\n"
            f"Re-measured by `python benchmarks/run_all.py{' ' + flags if flags else ''}` "
            f"({seconds:.0f} s).\n\n{body}")


def main(argv=None) -> int:
    args = parse_args(argv)
    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    if args.dry_run:
        for bench in benches:
            print(" ".join(command(bench, args)))
        return 0
    label = model_label(args.model)
    flags = " ".join(argv if argv is not None else sys.argv[1:])
    results = Path(args.results)
    failed = []
    for bench in benches:
        cmd = command(bench, args)
        print(f"[run_all] {bench.name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        tick = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        seconds = time.perf_counter() - tick
        if proc.returncode != 0 or not proc.stdout.strip():
            print(f"[run_all] {bench.name} failed (exit {proc.returncode}); its section is left as it was",
                  file=sys.stderr)
            failed.append(bench.name)
            continue
        # Written after each benchmark, so an interrupted run keeps what it measured.
        text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
        block = section(bench, label, proc.stdout, args.quick, seconds, flags)
        results.write_text(replace_section(text, bench.name, block), encoding="utf-8")
        print(f"[run_all] {bench.name}: {seconds:.0f} s, section written to {results}", file=sys.stderr)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
