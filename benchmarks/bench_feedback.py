"""Benchmark of iterative human feedback (docs/feedback.md) with simulated users, on the embedded model.

Each target is a world image: a fully specified caption (hidden from the user) rendered
on the session's hidden noise; the session starts from a vague caption of the same
image (`noise2art.methods.simulated_user.make_task`). A simulated user picks, every
round, the candidate nearest the target (world-CLIP `image_distance`) with strength 0.5.
Reported, as a Markdown table:

- median over targets of the distance after R rounds relative to the start, for the
  random scheme (the reference's), the BO recommender, the terms recommender and the
  prompt-rewriting baseline
  (n + 1 rewrites rendered per round: the same number of images as a feedback round);
  targets: feedback <= 70% and below the baseline;
- the achieved-similarity error ``|similarity(C, candidate) - target|`` of every candidate
  shown (exact rule; target <= 0.02), and of the reference's approximate rule on the
  same rounds' starting points;
- seconds per round (n candidates + the current image, one batched call; target <= 1.5 s
  on 2 CPU cores) against the reference's way (each of the n + 1 images rendered on its
  own with 70 LMS steps; target >= 5x faster), measured back to back on the same session;
- the one-off cost of encoding the candidate pool.

Run:
    python benchmarks/bench_feedback.py                       # 10 targets, 10 rounds
    python benchmarks/bench_feedback.py --quick               # 3 targets, 4 rounds, pool 100: minutes on a CPU
    python benchmarks/bench_feedback.py --threads 2 --json    # one JSON object instead of the table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

TARGETS = {
    "relative": "≤ 70%",
    "vs_baseline": "< 1",
    "similarity_error": "≤ 0.02",
    "seconds": "≤ 1.5 s (2 CPU cores)",
    "speedup": "≥ 5x",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to load (default: the embedded model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--targets", type=int, default=10, help="simulated users (hidden targets)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per session")
    p.add_argument("--variants", type=int, default=5, help="candidates per round")
    p.add_argument("--similarity", type=float, default=0.72, help="target similarity of the candidates")
    p.add_argument("--pool-size", type=int, default=500, help="random prompts in the candidate pool")
    p.add_argument("--strength", type=float, default=0.5, help="strength of the simulated user's choices")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--scheduler", default=None, help="scheduler (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's)")
    p.add_argument("--recommenders", default="random,bo,terms", help="comma list of random, bo, terms")
    p.add_argument("--beta", type=float, default=2.0, help="the BO recommender's exploration weight")
    p.add_argument("--prompt-axes", type=int, default=16, help="the BO recommender's prompt (pool PCA) axes")
    p.add_argument("--noise-axes", type=int, default=16, help="the BO recommender's noise axes (0: prompt only)")
    p.add_argument("--noise-scale", type=float, default=0.3, help="weight of a BO noise coordinate of 1")
    p.add_argument("--timing-rounds", type=int, default=3, help="rounds timed against the reference's way (0: skip)")
    p.add_argument("--reference-steps", type=int, default=70)
    p.add_argument("--reference-scheduler", default="lms")
    p.add_argument("--session-seed", type=int, default=0, help="seed of the candidates (one pool for all targets)")
    p.add_argument("--task-seed", type=int, default=2024, help="seed of the targets")
    p.add_argument("--precision", default="auto", help="precision of the sessions' renders: auto, model or bf16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="3 targets, 4 rounds, pool 100, 1 timing round")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the Markdown report")
    args = p.parse_args(argv)
    if args.quick:
        args.targets, args.rounds, args.pool_size, args.timing_rounds = 3, 4, 100, 1
    return args


def median(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(v: float, spec: str = ".3f") -> str:
    return "n/a" if v != v else format(v, spec)


def pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import noise2art
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.feedback import FeedbackConfig, FeedbackSession, build_pool
    from noise2art.methods.simulated_user import (
        make_task,
        render_target,
        simulate_feedback,
        simulate_prompt_rewriting,
    )

    started = time.perf_counter()
    model = noise2art.load_model(args.model, device=args.device, dtype=args.dtype)
    recommenders = [r.strip() for r in args.recommenders.split(",") if r.strip()]

    def config(**overrides) -> FeedbackConfig:
        precision = overrides.pop("precision", args.precision)
        settings = dict(n_variants=args.variants, similarity=args.similarity, pool_size=args.pool_size,
                        sampling=SamplingOverrides(steps=args.steps, scheduler=args.scheduler, guidance=args.guidance,
                                                   precision=precision),
                        session_seed=args.session_seed, beta=args.beta, prompt_axes=args.prompt_axes,
                        noise_axes=args.noise_axes, noise_scale=args.noise_scale)
        settings.update(overrides)
        return FeedbackConfig(**settings).check()

    base = config()
    kwargs = base.sample_kwargs()
    steps = base.sampling.steps or model.defaults.steps
    scheduler = model.resolve(scheduler=base.sampling.scheduler).scheduler_label

    # One pool for every session: it depends on the session seed only, not on the prompt.
    t0 = time.perf_counter()
    pool = build_pool(model, base, args.session_seed)
    pool_seconds = time.perf_counter() - t0
    print(f"[pool] {args.pool_size} prompts encoded in {pool_seconds:.1f} s", file=sys.stderr)

    rng = np.random.default_rng(args.task_seed)
    tasks = [make_task(rng) for _ in range(args.targets)]
    runs: dict[str, list[list[float]]] = {r: [] for r in recommenders}
    runs["baseline"] = []
    seconds: dict[str, list[float]] = {r: [] for r in recommenders}
    errors_exact: list[float] = []
    errors_reference: list[float] = []
    for k, task in enumerate(tasks):
        seed = 1000 + k
        noise = model.initial_noise([seed])
        target = render_target(model, task.target, noise, **kwargs)
        for rec in recommenders:
            session = FeedbackSession.start(model, task.start, seed, config(recommender=rec), pool=pool)
            result = simulate_feedback(session, target, rounds=args.rounds, strength=args.strength)
            runs[rec].append(result.distances)
            seconds[rec].extend(result.seconds_per_round)
            if rec == "random":
                errors_exact.extend(result.similarity_errors)
                # The reference's rule on the same starting points (every round's C), no render needed.
                for entry in session.history:
                    probe = FeedbackSession(model, task.start, seed, config(step_rule="reference"), entry.previous,
                                            pool=pool, history=())
                    errors_reference.extend(float(e) for e in probe.candidates().similarity_error)
        baseline = simulate_prompt_rewriting(model, task.start, target, noise, rounds=args.rounds,
                                             images_per_round=args.variants + 1, seed=k, **kwargs)
        runs["baseline"].append(baseline.distances)
        print(f"[target {k + 1}/{len(tasks)}] " + ", ".join(
            f"{name} {r[-1][0]:.3f}->{r[-1][-1]:.3f}" for name, r in runs.items() if r) + f"  ({task.target[:60]})",
            file=sys.stderr)

    # -- timing against the reference's way, back to back on one warm session --
    ours_t, ours_model_t, reference_t = [], [], []
    precision_gap = {"mean": float("nan"), "max": float("nan")}
    if args.timing_rounds > 0:
        task = tasks[0]
        session = FeedbackSession.start(model, task.start, 1000, config(recommender="random"), pool=pool)
        # The same rounds at the model's own precision, to show what the session's precision buys.
        at_model = FeedbackSession.start(model, task.start, 1000, config(recommender="random", precision="model"),
                                         pool=pool)
        # Warm-up; the same first round at both precisions also gives the images' difference.
        warm, warm_model = session.variants(), at_model.variants()
        gap = (warm.images.float() - warm_model.images.float()).abs()
        precision_gap = {"mean": float(gap.mean()), "max": float(gap.max())}
        for r in range(args.timing_rounds):
            v = session.variants()
            ours_t.append(v.seconds)
            ours_model_t.append(at_model.variants().seconds)
            at_model.choose(0, 0.5)
            embeddings = [session.current] + [v.embeddings[i] for i in range(len(v.embeddings))]
            t0 = time.perf_counter()
            with torch.no_grad():
                for emb in embeddings:
                    model.decode(model.sample(emb, latents=session.noise, steps=args.reference_steps,
                                              scheduler=args.reference_scheduler, guidance=args.guidance))
            reference_t.append(time.perf_counter() - t0)
            session.choose(0, 0.5)

    def relative_after(name: str, r: int) -> list[float]:
        return [d[r] / d[0] if d[0] > 0 else float("nan") for d in runs[name]]

    rounds = args.rounds
    summary = {
        name: {
            "median_relative_final": median(relative_after(name, rounds)),
            "median_relative_per_round": [median(relative_after(name, r)) for r in range(rounds + 1)],
            "median_distance_per_round": [median([d[r] for d in runs[name]]) for r in range(rounds + 1)],
        }
        for name in runs
    }
    vs_baseline = {
        rec: median([a[-1] / b[-1] if b[-1] > 0 else float("nan") for a, b in zip(runs[rec], runs["baseline"])])
        for rec in recommenders
    }
    wins = {rec: sum(a[-1] < b[-1] for a, b in zip(runs[rec], runs["baseline"])) for rec in recommenders}
    ours_round = median(seconds.get("random") or seconds[recommenders[0]]) if recommenders else float("nan")
    speedup = median(reference_t) / median(ours_t) if ours_t else float("nan")
    # "Ours" in the JSON: the BO recommender when it ran (the best on the shipped model,
    # benchmarks/RESULTS.md), else the terms recommender, else the random scheme.
    main_rec = next((r for r in ("bo", "terms", "random") if r in recommenders), "baseline")
    report = {
        "ours": main_rec,
        "distances": summary[main_rec]["median_distance_per_round"],
        "baseline_distances": summary["baseline"]["median_distance_per_round"],
        "distances_per_target": runs[main_rec],
        "baseline_distances_per_target": runs["baseline"],
        "runs": runs,
        "summary": summary,
        "median_ratio_vs_baseline": vs_baseline,
        "wins_vs_baseline": wins,
        "similarity_error_exact": {"median": median(errors_exact), "max": max(errors_exact, default=float("nan"))},
        "similarity_error_reference": {"median": median(errors_reference),
                                       "max": max(errors_reference, default=float("nan"))},
        "seconds_per_round": ours_round,
        "seconds_per_round_timed": ours_t,
        "seconds_per_round_model_precision": ours_model_t,
        "precision_pixel_difference": precision_gap,
        "reference_seconds_per_round": reference_t,
        "speedup": speedup,
        "pool_seconds": pool_seconds,
        "tasks": [{"start": t.start, "target": t.target} for t in tasks],
        "settings": {"model": model.model_id, "targets": args.targets, "rounds": rounds, "variants": args.variants,
                     "similarity": args.similarity, "pool_size": args.pool_size, "steps": steps,
                     "scheduler": scheduler, "strength": args.strength, "threads": torch.get_num_threads(),
                     "precision": args.precision,
                     "beta": args.beta, "prompt_axes": args.prompt_axes, "noise_axes": args.noise_axes},
    }
    if args.json:
        sys.stdout.write(json.dumps(report, default=float) + "\n")
        return 0

    print(f"## bench_feedback — {datetime.date.today().isoformat()}\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores ({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
          f"device {model.device}, dtype {model.dtype}, session precision {args.precision}")
    print(f"- model: {model.model_id}; {args.targets} targets x {rounds} rounds; {args.variants} variants; "
          f"pool {args.pool_size}; similarity {args.similarity}; {steps} steps {scheduler}; strength {args.strength}; "
          f"bo: beta {args.beta}, {args.prompt_axes} prompt + {args.noise_axes} noise axes")
    print(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`")
    print(f"- total wall time: {time.perf_counter() - started:.0f} s\n")
    print("| measurement | value | target |")
    print("|---|---|---|")
    for name in runs:
        label = "prompt rewriting (baseline)" if name == "baseline" else f"feedback, {name} candidates"
        print(f"| median distance after {rounds} rounds / start, {label} | "
              f"{pct(summary[name]['median_relative_final'])} | {TARGETS['relative'] if name != 'baseline' else '—'} |")
    for rec in recommenders:
        print(f"| median (feedback {rec} / baseline) distance after {rounds} rounds; targets won | "
              f"{fmt(vs_baseline[rec])}; {wins[rec]}/{len(tasks)} | {TARGETS['vs_baseline']} |")
    e = report["similarity_error_exact"]
    print(f"| similarity error of variants, exact rule (median / max) | {fmt(e['median'], '.2e')} / "
          f"{fmt(e['max'], '.2e')} | {TARGETS['similarity_error']} |")
    e = report["similarity_error_reference"]
    print(f"| similarity error, the reference's rule on the same C (median / max) | {fmt(e['median'])} / "
          f"{fmt(e['max'])} | — |")
    print(f"| seconds per round ({args.variants} variants + current, one batch, {steps} {scheduler} steps, "
          f"precision {args.precision}) | {fmt(ours_round, '.2f')} | {TARGETS['seconds']} |")
    if ours_t:
        print(f"| seconds per round, back to back: precision {args.precision} vs the model's | "
              f"{fmt(median(ours_t), '.2f')} vs {fmt(median(ours_model_t), '.2f')} | — |")
        print(f"| image difference, precision {args.precision} vs the model's, one round (mean / max abs pixel) | "
              f"{fmt(precision_gap['mean'], '.4f')} / {fmt(precision_gap['max'], '.4f')} | — |")
        print(f"| seconds per round, the reference's way ({args.variants + 1} separate {args.reference_steps}-step "
              f"{args.reference_scheduler} renders) vs ours back to back | {fmt(median(reference_t), '.2f')} vs "
              f"{fmt(median(ours_t), '.2f')} | — |")
        print(f"| speed-up over the reference's way | {fmt(speedup, '.1f')}x | {TARGETS['speedup']} |")
    print(f"| candidate pool encoding (once per session, {args.pool_size} prompts) | {pool_seconds:.1f} s | — |")
    print(f"\nMedian distance to the target / start, by round ({len(tasks)} targets):\n")
    names = list(runs)
    print("| round | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in range(rounds + 1):
        print(f"| {r} | " + " | ".join(pct(summary[n]["median_relative_per_round"][r]) for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
