"""Benchmark of metric-based embedding optimisation (docs/optimize.md) on the embedded model.

For each prompt of a set of world prompts (landscapes and still lifes in several
styles) it optimises sharpness, blurriness and the aesthetic score in our default mode
(which keeps the prompt's named attributes: an adherence loss and floor), in the
unconstrained mode (`OptimizeConfig.unconstrained()`: the metric alone) and in the
reference's mode (`OptimizeConfig.reference()`), then reports, as a Markdown table:

- what each mode kept: mean prompt adherence (the attribute classifiers) of the initial
  and the best image, the world-CLIP distance of the best image to the initial one, and
  for sharpness / blurriness runs how many prompts' aesthetic score rose too;

- median % change of sharpness and of the blurriness value (best vs initial, the
  optimised seed);
- the share of prompts whose aesthetic score rose (optimised seed, and mean over
  unseen seeds);
- generalisation: the gain measured on unseen seeds as a share of the gain on the
  optimised seed (mean over runs);
- time to match the reference: wall time our default needs to reach the gain the
  reference reaches in all its iterations, over the reference's total time
  (relative gain for sharpness/blurriness, whose initial values differ between the
  two modes' renders; absolute gain for the aesthetic score);
- peak memory of gradients through all denoising steps (checkpointed) vs the last one
  only, each measured in a fresh subprocess: resident-set high-water mark (Linux
  `VmHWM`, reset through `/proc/self/clear_refs` after a warm-up render) minus the
  resident set before the run; on CUDA, `torch.cuda.max_memory_allocated` minus the
  allocation before the run;
- quartiles of the score at the first, middle and last iteration over the prompt set,
  drawn as box plots (PNG, `--out`).

`--tradeoff` adds a table and a scatter plot (`--out`/tradeoff_sharpness.png) of the
sharpness gain against what the picture kept, for several adherence and picture weights.
`--sweep` adds a table of variants (steps, scheduler, grad_steps, renormalisation)
measured on sharpness: the measurements the default mode was chosen from.

Run:
    python benchmarks/bench_optimize.py                      # full: 20 prompts, 50 iterations
    python benchmarks/bench_optimize.py --quick              # 2 prompts, 6 iterations: minutes on a CPU
    python benchmarks/bench_optimize.py --prompts 5 --iterations 20 --aesthetic-iterations 40 --sweep
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from noise2art.engine.settings import SamplingOverrides

PROMPTS = [
    # landscapes
    "a photo of a mountain range at sunset with a lake",
    "an oil painting of a forest at dawn with a river",
    "a watercolor of snow-capped mountains at night",
    "pixel art of a desert at sunset",
    "a pencil sketch of a meadow with a few trees and clouds",
    "a flat illustration of the sea at noon",
    "a landscape with a river and a forest, overcast",
    "an oil painting of a calm lake at dusk, muted colors",
    "a photo of sand dunes under a clear sky",
    "a watercolor of green fields with scattered trees at sunrise",
    # still lifes
    "a photo of a red ball on a plain background",
    "an oil painting of a blue cube",
    "a watercolor of a yellow pyramid on a gradient background",
    "pixel art of a green sphere",
    "a pencil sketch of a cube",
    "a flat illustration of an orange ball",
    "a still life of a purple pyramid, highly detailed",
    "a studio shot of a white ball, blurry",
    "a photo of a pink cube, vibrant",
    "a single color ball",
]

TARGETS = {
    "sharpness": "≥ +50%",
    "blurriness": "≤ −30%",
    "aesthetic": "≥ 90% of prompts",
    "generalisation": "mean ≥ 50%",
    "time": "≤ 0.5",
    "memory": "≤ 2x",
    "adherence": "default: ≥ 0.9x",
}

# Variants measured by --sweep: (label, OptimizeConfig overrides).
SWEEP = [
    ("ddim 20, last", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="last")),
    ("ddim 20, last-2", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="last-2")),
    ("ddim 20, last-3 (default)", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="last-3")),
    ("ddim 20, all", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="all")),
    ("ddim 20, last-3, renorm 10", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="last-3", renorm_every=10)),
    ("ddim 20, last-3, renorm 1", dict(sampling=SamplingOverrides(steps=20, scheduler="ddim"), grad_steps="last-3", renorm_every=1)),
    ("ddim 10, last-3", dict(sampling=SamplingOverrides(steps=10, scheduler="ddim"), grad_steps="last-3")),
    ("dpm++2m 15, last-3", dict(sampling=SamplingOverrides(steps=15, scheduler="dpm++2m"), grad_steps="last-3")),
    ("lms 70, last, renorm 1 (reference)", dict(sampling=SamplingOverrides(steps=70, scheduler="lms"), grad_steps="last", renorm_every=1)),
]


# Settings measured by --tradeoff on sharpness: (label, OptimizeConfig overrides of the default mode).
TRADEOFF = [
    ("unconstrained", dict(adherence_weight=0.0, picture_weight=0.0, adherence_floor=None)),
    ("default (adherence 1, floor 0.9)", dict()),
    ("adherence 4", dict(adherence_weight=4.0)),
    ("picture 1", dict(picture_weight=1.0)),
    ("picture 4", dict(picture_weight=4.0)),
    ("picture 16", dict(picture_weight=16.0)),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to load (default: the embedded model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"how many of the {len(PROMPTS)} prompts")
    p.add_argument("--iterations", type=int, default=50, help="iterations for sharpness and blurriness")
    p.add_argument("--aesthetic-iterations", type=int, default=100, help="iterations for the aesthetic score")
    p.add_argument("--metrics", default="sharpness,blurriness,aesthetic", help="comma list")
    p.add_argument("--modes", default="default,unconstrained,reference",
                   help="comma list of default (keeps adherence), unconstrained (the metric alone), reference")
    p.add_argument("--tradeoff", action="store_true",
                   help="also sweep the adherence and picture weights on sharpness and plot gain vs what was kept")
    p.add_argument("--tradeoff-prompts", type=int, default=4)
    p.add_argument("--reference-prompts", type=int, default=None,
                   help="run the reference mode on the first N prompts only (default: all; it is 3x slower)")
    p.add_argument("--seed", type=int, default=0, help="the optimised seed")
    p.add_argument("--eval-seeds", type=int, default=10, help="unseen seeds for the generalisation check")
    p.add_argument("--memory-iterations", type=int, default=3, help="iterations per memory measurement (0: skip)")
    p.add_argument("--sweep", action="store_true", help="also measure the variants the default was chosen from")
    p.add_argument("--sweep-prompts", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 prompts, 6 iterations, 2 eval seeds, 2 memory iterations")
    p.add_argument("--out", default="out/bench_optimize", help="folder for the box-plot PNGs")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.iterations, args.aesthetic_iterations = 2, 6, 6
        args.eval_seeds, args.memory_iterations, args.sweep_prompts, args.tradeoff_prompts = 2, 2, 1, 1
    for name in ("prompts", "iterations", "aesthetic_iterations", "eval_seeds", "sweep_prompts"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.prompts = min(args.prompts, len(PROMPTS))
    if args.reference_prompts is None:
        args.reference_prompts = args.prompts
    elif not 1 <= args.reference_prompts:
        p.error("--reference-prompts must be >= 1")
    args.reference_prompts = min(args.reference_prompts, args.prompts)
    return args


# -- one optimisation run --------------------------------------------------------------------------


def config_for(mode: str, metric: str, iterations: int, seed: int, **overrides):
    from noise2art.methods.optimize import OptimizeConfig

    if mode == "reference":
        return OptimizeConfig.reference(metric, seeds=[seed], iterations=iterations, **overrides)
    if mode == "unconstrained":
        return OptimizeConfig.unconstrained(metric, seeds=[seed], iterations=iterations, **overrides)
    return OptimizeConfig(metric=metric, seeds=[seed], iterations=iterations, **overrides)


def run_one(model, prompt: str, config, eval_seeds: list[int]) -> dict:
    """Optimise one prompt; evaluate the initial and best embeddings on unseen seeds."""
    from noise2art.methods.optimize import evaluate_on_seeds, optimize
    from noise2art.metrics import get_metric

    result = optimize(model, prompt, config)
    kwargs = dict(sampling=config.sampling)
    ev_init, _, _ = evaluate_on_seeds(model, result.initial_embedding, config.metric, eval_seeds, **kwargs)
    ev_best, _, _ = evaluate_on_seeds(model, result.embedding, config.metric, eval_seeds, **kwargs)
    # The aesthetic score of the kept images too: a sharpness gain that ruins the picture shows here.
    aesthetic = get_metric("aesthetic", context=model)
    aes = [float(aesthetic(images.to(model.device)).mean()) for images in (result.initial_images, result.best_images)]
    start, kept = result.initial_picture, result.best_picture
    return dict(
        prompt=prompt, scores=result.scores, seconds=result.seconds, initial=result.initial_score,
        best=result.best_score, best_so_far=result.best_so_far(), higher=result.higher_is_better,
        stop=result.stop_reason, eval_initial=ev_init, eval_best=ev_best,
        adherence_initial=start.adherence if start else None, adherence_best=kept.adherence if kept else None,
        distance_best=kept.distance if kept else math.nan, aesthetic_initial=aes[0], aesthetic_best=aes[1],
    )


def oriented_gain(run: dict, best: float | None = None, relative: bool = False) -> float:
    best = run["best"] if best is None else best
    sign = 1.0 if run["higher"] else -1.0
    gain = sign * (best - run["initial"])
    return gain / abs(run["initial"]) if relative and run["initial"] else gain


def percent_change(run: dict) -> float:
    return (run["best"] - run["initial"]) / abs(run["initial"]) * 100 if run["initial"] else math.nan


def generalisation(run: dict) -> float:
    """Gain on unseen seeds / gain on the optimised seed (both oriented)."""
    opt = oriented_gain(run)
    sign = 1.0 if run["higher"] else -1.0
    unseen = sign * (run["eval_best"] - run["eval_initial"])
    return unseen / opt if opt > 0 else math.nan


def time_to_match(ours: dict, ref: dict, relative: bool) -> float:
    """Seconds our run needs to reach the reference run's final gain, over the reference's seconds."""
    goal = oriented_gain(ref, relative=relative)
    elapsed = 0.0
    for best, seconds in zip(ours["best_so_far"], ours["seconds"]):
        elapsed += seconds
        if oriented_gain(ours, best=best, relative=relative) >= goal:
            return elapsed / sum(ref["seconds"])
    return math.inf


# -- memory, in a child process ---------------------------------------------------------------------


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(args) -> None:
    """Measure one setting's peak memory above the steady state; print one JSON line."""
    import resource

    import torch

    import noise2art
    from noise2art.methods.optimize import optimize

    spec = json.loads(args.memory_child)
    model = noise2art.load_model(args.model, device=args.device, dtype=args.dtype)
    config = config_for("default", "sharpness", spec["iterations"], args.seed, **spec["overrides"])
    with torch.no_grad():  # warm-up: allocator pools, scheduler tables, kernels
        model.render(PROMPTS[0], [args.seed], settings=config.sampling)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method = "cuda max_memory_allocated"
    else:
        base = _rss_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            method = "VmHWM after clear_refs"
        except OSError:
            method = "ru_maxrss (not reset: an upper bound)"
    optimize(model, PROMPTS[0], config)
    if cuda:
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        hwm = _rss_kb("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = (hwm - (base or 0)) / 1024
    print(json.dumps({"peak_mb": peak_mb, "method": method}))


def measure_memory(args, overrides: dict) -> dict:
    spec = json.dumps({"iterations": args.memory_iterations, "overrides": overrides})
    cmd = [sys.executable, __file__, "--memory-child", spec, "--device", args.device, "--seed", str(args.seed)]
    if args.model:
        cmd += ["--model", args.model]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report -----------------------------------------------------------------------------------------


def fmt(v: float, spec: str = ".3g", unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "not reached"
    return format(v, spec) + unit


def median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def quartile_text(values: list[float]) -> str:
    from noise2art.plot import quartiles

    q1, q2, q3 = quartiles(values)
    return f"{q1:.4g} / {q2:.4g} / {q3:.4g}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0

    import torch

    import noise2art
    from noise2art.methods.optimize import optimize
    from noise2art.plot import box_plot

    started = time.perf_counter()
    model = noise2art.load_model(args.model, device=args.device, dtype=args.dtype)
    prompts = PROMPTS[: args.prompts]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    eval_seeds = list(range(args.seed + 1, args.seed + 1 + args.eval_seeds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs: dict[tuple[str, str], list[dict]] = {}
    for metric in metrics:
        iterations = args.aesthetic_iterations if metric == "aesthetic" else args.iterations
        for mode in modes:
            key = (metric, mode)
            runs[key] = []
            mode_prompts = prompts[: args.reference_prompts] if mode == "reference" else prompts
            for k, prompt in enumerate(mode_prompts):
                tick = time.perf_counter()
                run = run_one(model, prompt, config_for(mode, metric, iterations, args.seed), eval_seeds)
                runs[key].append(run)
                print(f"[{metric}/{mode} {k + 1}/{len(mode_prompts)}] {run['initial']:.4g} -> {run['best']:.4g} "
                      f"({time.perf_counter() - tick:.1f} s) {prompt}", file=sys.stderr, flush=True)

    rows: list[tuple[str, ...]] = []  # (measurement, one column per mode, target)
    columns = [m for m in ("default", "unconstrained", "reference") if m in modes]

    def each(fn) -> tuple[str, ...]:
        return tuple(fn(runs[(metric, mode)]) if (metric, mode) in runs else "–" for mode in columns)

    def adherence_text(rs) -> str:
        pairs = [(x["adherence_initial"], x["adherence_best"]) for x in rs if x["adherence_initial"] is not None]
        if not pairs:
            return "n/a"
        a0, a1 = statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs)
        return f"{a0:.3f} -> {a1:.3f} ({a1 / a0:.2f}x)" if a0 else f"{a0:.3f} -> {a1:.3f}"

    for metric in metrics:
        if metric in ("sharpness", "blurriness"):
            rows.append((f"median % change of {metric} (optimised seed)",
                         *each(lambda rs: fmt(median([percent_change(x) for x in rs]), "+.1f", "%")), TARGETS[metric]))
            rows.append((f"median % change of {metric} (mean over the unseen seeds)",
                         *each(lambda rs: fmt(median([(x["eval_best"] - x["eval_initial"]) / abs(x["eval_initial"]) * 100
                                                      for x in rs]), "+.1f", "%")), ""))
        elif metric == "aesthetic":
            rows.append(("prompts whose aesthetic score rose (optimised seed)",
                         *each(lambda rs: f"{sum(x['best'] > x['initial'] for x in rs)}/{len(rs)}"), TARGETS["aesthetic"]))
            rows.append(("prompts whose aesthetic score rose (mean over the unseen seeds)",
                         *each(lambda rs: f"{sum(x['eval_best'] > x['eval_initial'] for x in rs)}/{len(rs)}"), ""))
            rows.append(("median aesthetic gain (optimised seed)",
                         *each(lambda rs: fmt(median([x["best"] - x["initial"] for x in rs]), "+.3g")), ""))
        rows.append((f"{metric}: mean prompt adherence, initial -> best (ratio)", *each(adherence_text),
                     TARGETS["adherence"] if metric != "blurriness" else ""))
        rows.append((f"{metric}: mean world-CLIP distance of the best image to the initial one",
                     *each(lambda rs: fmt(mean([x["distance_best"] for x in rs]), ".3f")), ""))
        if metric != "aesthetic":
            rows.append((f"{metric}: prompts whose aesthetic score rose too",
                         *each(lambda rs: f"{sum(x['aesthetic_best'] > x['aesthetic_initial'] for x in rs)}/{len(rs)}"),
                         TARGETS["aesthetic"] if metric == "sharpness" else ""))
        rows.append((f"{metric}: gain on unseen seeds / gain on optimised seed, mean (median)",
                     *each(lambda rs: f"{fmt(mean([generalisation(x) for x in rs]) * 100, '.0f', '%')} "
                                      f"(median {fmt(median([generalisation(x) for x in rs]) * 100, '.0f', '%')})"),
                     TARGETS["generalisation"]))
        rows.append((f"{metric}: seconds per iteration (median)",
                     *each(lambda rs: fmt(median([statistics.fmean(x["seconds"]) for x in rs]), ".3f", " s")), ""))
        if ("default" in modes) and ("reference" in modes):
            ratios = [time_to_match(o, ref, relative=metric != "aesthetic")
                      for o, ref in zip(runs[(metric, "default")], runs[(metric, "reference")])]
            reached = sum(math.isfinite(v) for v in ratios)
            cells = [f"{fmt(median(ratios), '.2f')} ({reached}/{len(ratios)})" if m == "default" else
                     "1" if m == "reference" else "" for m in columns]
            rows.append((f"{metric}: time to reach the reference's final gain / reference time (median; reached)",
                         *cells, TARGETS["time"]))

    if args.memory_iterations > 0:
        last = measure_memory(args, dict(grad_steps="last"))
        all_ = measure_memory(args, dict(grad_steps="all"))
        ratio = all_["peak_mb"] / last["peak_mb"] if last["peak_mb"] > 0 else math.nan
        blank = ("",) * (len(columns) - 1)
        rows.append((f"peak memory above steady state, grad_steps=last ({last['method']})",
                     f"{last['peak_mb']:.0f} MB", *blank, ""))
        rows.append(("peak memory, grad_steps=all with checkpointing", f"{all_['peak_mb']:.0f} MB", *blank, ""))
        rows.append(("memory ratio all (checkpointed) / last", fmt(ratio, ".2f", "x"), *blank, TARGETS["memory"]))

    # Box plots of the score at the first, middle and last iteration over the prompt set.
    quartile_rows = []
    for metric in metrics:
        groups = {}
        for mode in modes:
            n = len(runs[(metric, mode)][0]["scores"])
            for it in sorted({0, (n - 1) // 2, n - 1}):
                values = [x["scores"][it] for x in runs[(metric, mode)] if len(x["scores"]) > it]
                groups[f"{mode} it{it}"] = values
                quartile_rows.append((metric, mode, it, quartile_text(values)))
        box_plot(groups, out / f"box_{metric}.png", title=f"{metric} over {len(prompts)} prompts", ylabel=metric)

    sweep_rows = []
    if args.sweep:
        for label, overrides in SWEEP:
            changes, times = [], []
            for prompt in prompts[: args.sweep_prompts]:
                result = optimize(model, prompt, config_for("default", "sharpness", args.iterations,
                                                                    args.seed, **overrides))
                changes.append((result.best_score - result.initial_score) / abs(result.initial_score) * 100)
                times.append(statistics.fmean(result.seconds))
            sweep_rows.append((label, median(changes), statistics.fmean(times)))
            print(f"[sweep] {label}: {median(changes):+.1f}% {statistics.fmean(times):.3f} s/it", file=sys.stderr)

    tradeoff_rows = []
    if args.tradeoff:
        from noise2art.plot import scatter_plot

        points = {}
        for label, overrides in TRADEOFF:
            rs = [run_one(model, prompt, config_for("default", "sharpness", args.iterations, args.seed, **overrides),
                          eval_seeds[:1]) for prompt in prompts[: args.tradeoff_prompts]]
            gain = median([percent_change(x) for x in rs])
            ratio = mean([x["adherence_best"] / x["adherence_initial"] for x in rs if x["adherence_initial"]])
            distance = mean([x["distance_best"] for x in rs])
            tradeoff_rows.append((label, gain, ratio, distance, sum(x["aesthetic_best"] > x["aesthetic_initial"]
                                                                     for x in rs), len(rs)))
            points[label] = (distance, gain)
            print(f"[tradeoff] {label}: {gain:+.1f}%, adherence {ratio:.2f}x, distance {distance:.3f}",
                  file=sys.stderr)
        scatter_plot(points, out / "tradeoff_sharpness.png", title="sharpness gain vs picture change",
                     xlabel="world-CLIP distance of the best image to the initial one",
                     ylabel="median sharpness change (%)")

    # -- print the report --
    print(f"## bench_optimize — {datetime.date.today().isoformat()}\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, device {model.device}, dtype {model.dtype}")
    print(f"- model: {model.model_id}; {len(prompts)} prompts (reference mode: the first {args.reference_prompts}); "
          f"seed {args.seed}; "
          f"{args.iterations} iterations (aesthetic {args.aesthetic_iterations}); "
          f"unseen seeds {eval_seeds[0]}..{eval_seeds[-1]}")
    print(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`")
    print(f"- total wall time: {time.perf_counter() - started:.0f} s\n")
    print("| measurement | " + " | ".join(columns) + " | target |")
    print("|---|" + "---|" * len(columns) + "---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nScore quartiles (q1 / median / q3) over the prompts, by iteration "
          f"(box plots: {out}/box_<metric>.png):\n")
    print("| metric | mode | iteration | q1 / median / q3 |")
    print("|---|---|---|---|")
    for metric, mode, it, text in quartile_rows:
        print(f"| {metric} | {mode} | {it} | {text} |")
    if sweep_rows:
        print(f"\nVariants on sharpness ({args.sweep_prompts} prompts, {args.iterations} iterations):\n")
        print("| variant | median % change | seconds per iteration |")
        print("|---|---|---|")
        for label, change, seconds in sweep_rows:
            print(f"| {label} | {change:+.1f}% | {seconds:.3f} |")
    if tradeoff_rows:
        print(f"\nSharpness against what the picture kept ({args.tradeoff_prompts} prompts, {args.iterations} "
              f"iterations; plot: {out}/tradeoff_sharpness.png):\n")
        print("| setting | median % change | adherence best / initial | distance to the initial image | "
              "aesthetic rose |")
        print("|---|---|---|---|---|")
        for label, gain, ratio, distance, rose, n in tradeoff_rows:
            print(f"| {label} | {gain:+.1f}% | {fmt(ratio, '.2f', 'x')} | {fmt(distance, '.3f')} | {rose}/{n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
