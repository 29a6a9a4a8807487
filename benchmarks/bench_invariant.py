"""Benchmark of seed-invariant embeddings (docs/invariant.md) on the embedded model.

The showcase prompt is "single color ball": it names no colour, so the ball comes out
in a different colour for different seeds. The benchmark picks a target seed whose ball
is clearly coloured (the attribute classifier's most confident colour among candidate
seeds, the reference's 510675 first), runs `invariant` with the reference's curriculum,
and renders the prompt's embedding and the optimised one on fresh seeds (never drawn by
the run). It reports, as a Markdown table:

- colour agreement: the share of fresh seeds whose classified ball colour equals the
  target's (before: about 1 in 10 with ten colours; target after: >= 80%);
- agreement on every attribute the prompt leaves unnamed (colour, background, style,
  modifier);
- the mean world-CLIP distance (`1 - cos`) of the fresh seeds' images to the target
  image, before and after (target: falls by >= 40%);
- one iteration (sampling to the last stage's step with gradients, score, backward) with
  3 seeds in one UNet batch vs the same seeds one by one (median of repeats; target:
  batched >= 1.5x faster);
- the optimisation's wall time.

Run:
    python benchmarks/bench_invariant.py                     # 120 iterations, 20 fresh seeds
    python benchmarks/bench_invariant.py --quick             # 30 iterations, 8 fresh seeds: a few minutes on a CPU
    python benchmarks/bench_invariant.py --iterations 60 --stage-iterations 20 --mode full
On a model without attribute classifier (a Stable Diffusion checkpoint) the agreement
rows read n/a and the target seed defaults to the reference's 510675.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROMPT = "single color ball"
REFERENCE_TARGET = 510675


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model to load (default: the embedded model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--target-seed", type=int, default=None,
                   help="target seed (default: the most confidently coloured of the candidates)")
    p.add_argument("--candidates", type=int, default=16,
                   help="seeds 0..N-1 (after 510675) scanned for a clearly coloured target")
    p.add_argument("--iterations", type=int, default=120)
    p.add_argument("--stage-iterations", type=int, default=40)
    p.add_argument("--max-stage", type=int, default=2)
    p.add_argument("--seeds-per-step", type=int, default=3)
    p.add_argument("--mode", default="single-vector", choices=("single-vector", "full"))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--eval-seeds", type=int, default=20, help="fresh seeds for the before/after evaluation")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--scheduler", default=None, help="scheduler (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched vs one-by-one iteration")
    p.add_argument("--seed", type=int, default=0, help="seeds the run's random seed stream")
    p.add_argument("--quick", action="store_true",
                   help="30 iterations in stages of 10, 8 candidates, 8 fresh seeds, 2 timing repeats")
    p.add_argument("--out", default=None, help="also write before/after/target PNGs and the embedding here")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.stage_iterations, args.candidates, args.eval_seeds, args.repeats = 30, 10, 8, 8, 2
    for name in ("iterations", "stage_iterations", "seeds_per_step", "eval_seeds", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.candidates < 0 or args.max_stage < 0:
        p.error("--candidates and --max-stage must be >= 0")
    return args


def pick_target(model, embedding, candidates: list[int], sample_kwargs: dict) -> tuple[int, str, float]:
    """The candidate whose image the classifier calls a ball of one colour most confidently.

    Returns `(seed, colour, confidence)`. Sketches (no colour) and images not classified as
    a ball are skipped unless nothing else is left.
    """
    import torch

    classifier = model.companions.attributes
    with torch.no_grad():
        images = model.render(embedding, candidates, **sample_kwargs)
        logits = classifier(images)
        predicted = classifier.predict(images)
    colours = classifier.cfg.families["color"]
    probs = logits["color"].softmax(-1)
    ranked = []
    for i, seed in enumerate(candidates):
        p, k = probs[i].max(-1)
        eligible = predicted[i].get("shape") == "ball" and predicted[i].get("style") != "sketch"
        ranked.append((eligible, float(p), seed, colours[int(k)]))
    eligible, conf, seed, colour = max(ranked)
    return seed, colour, conf


def time_iteration(model, embedding, target_latents, seeds, groups, stop_after, sample_kwargs, repeats) -> float:
    """Median wall time of one iteration's forward + backward, the seeds split into `groups` UNet batches."""
    import torch

    from noise2art.methods.invariant import cosine_scores

    noise = {s: n[None] for s, n in zip(seeds, model.initial_noise(seeds))}

    def once() -> float:
        param = embedding.cond.detach().clone().requires_grad_(True)
        emb = embedding.with_tensors(param)
        tick = time.perf_counter()
        for group in groups:
            latents = model.sample(emb, seeds=group, latents=torch.cat([noise[s] for s in group]), grad_steps="all",
                                   stop_after=stop_after, batch_size=len(group), **sample_kwargs)
            (-cosine_scores(target_latents, latents).sum()).backward()
        return time.perf_counter() - tick

    once()  # warm-up: allocator and kernels
    return statistics.median(once() for _ in range(repeats))


def fmt(value, spec=".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    import noise2art
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.invariant import (
        REFERENCE_EVAL_SEEDS,
        InvariantConfig,
        consistency,
        draw_seeds,
        invariant,
        render_target,
    )

    started = time.perf_counter()
    model = noise2art.load_model(args.model, device=args.device, dtype=args.dtype)
    embedding = model.encode([args.prompt])
    sample_kwargs = dict(steps=args.steps, guidance=args.guidance, scheduler=args.scheduler)
    has_classifier = model.companions.attributes is not None

    # -- the target --
    target_note = "given"
    if args.target_seed is not None:
        target_seed = args.target_seed
    elif has_classifier and args.candidates:
        candidates = [REFERENCE_TARGET] + [s for s in range(args.candidates) if s != REFERENCE_TARGET]
        target_seed, colour, confidence = pick_target(model, embedding, candidates, sample_kwargs)
        target_note = f"most confident {colour} ball of {len(candidates)} candidates (p = {confidence:.2f})"
    else:
        target_seed, target_note = REFERENCE_TARGET, "the reference's"
    print(f"[target] seed {target_seed}: {target_note}", file=sys.stderr)

    config = InvariantConfig(target_seed=target_seed, iterations=args.iterations, seeds_per_step=args.seeds_per_step,
                             stage_iterations=args.stage_iterations, max_stage=args.max_stage, mode=args.mode,
                             lr=args.lr, seed=args.seed, sampling=SamplingOverrides(**sample_kwargs))
    target_image = render_target(model, embedding, config)

    # -- the run --
    def progress(i, total, score, stage):
        if (i + 1) % max(1, total // 10) == 0 or i + 1 == total:
            print(f"[invariant] {i + 1}/{total} stage {stage} score {score:.1f}", file=sys.stderr)

    result = invariant(model, embedding, config, callback=progress)

    # -- before / after on fresh seeds --
    used = {target_seed, *REFERENCE_EVAL_SEEDS, *(s for seeds in result.seeds for s in seeds)}
    fresh = draw_seeds(np.random.default_rng([args.seed, 2]), args.eval_seeds, used)
    reports = {}
    for name, emb in (("before", embedding), ("after", result.embedding)):
        reports[name] = consistency(model, emb, target_image, fresh, prompt=args.prompt, **sample_kwargs)
        print(f"[eval] {name}: distance {reports[name].mean_distance:.4f}, "
              f"agreement {reports[name].family_agreement}", file=sys.stderr)
    before, after = reports["before"], reports["after"]
    colour_before = before.family_agreement.get("color") if has_classifier else None
    colour_after = after.family_agreement.get("color") if has_classifier else None
    distance_drop = (before.mean_distance - after.mean_distance) / before.mean_distance * 100

    # -- batched vs one by one --
    timing_seeds = draw_seeds(np.random.default_rng([args.seed, 3]), args.seeds_per_step, used)
    stop_after = args.max_stage + 1
    with torch.no_grad():
        target_latents = model.sample(embedding, [target_seed], stop_after=stop_after, **sample_kwargs)
    t_batched = time_iteration(model, embedding, target_latents, timing_seeds, [timing_seeds], stop_after,
                               sample_kwargs, args.repeats)
    t_single = time_iteration(model, embedding, target_latents, timing_seeds, [[s] for s in timing_seeds], stop_after,
                              sample_kwargs, args.repeats)

    if args.out:
        from noise2art.engine.model import to_pil
        from noise2art.sheet import contact_sheet

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        to_pil(target_image)[0].save(out / "target.png")
        for name, report in reports.items():
            contact_sheet(to_pil(report.images), labels=[f"seed {s}" for s in fresh]).save(out / f"{name}.png")
        result.embedding.save(out / "embedding.safetensors")

    # -- the report --
    steps = args.steps if args.steps is not None else model.defaults.steps
    scheduler = model.resolve(scheduler=args.scheduler).scheduler_label
    guidance = args.guidance if args.guidance is not None else model.defaults.guidance
    print(f"## bench_invariant — {datetime.date.today().isoformat()}\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, device {model.device}, dtype {model.dtype}")
    print(f"- model: {model.model_id}; prompt \"{args.prompt}\"; target seed {target_seed} ({target_note}); "
          f"{args.mode}; {result.iterations} iterations, stages of {args.stage_iterations} up to stage "
          f"{args.max_stage}, {args.seeds_per_step} seeds per step, lr {args.lr}; {steps} {scheduler} steps, "
          f"guidance {guidance}; {len(fresh)} fresh evaluation seeds; features: {before.feature_kind}")
    if has_classifier:
        print(f"- target attributes: {before.target_attributes}; compared families: {', '.join(before.families)}")
    print(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`")
    print(f"- total wall time: {time.perf_counter() - started:.0f} s\n")
    print("| measurement | before | after | target |")
    print("|---|---|---|---|")
    print(f"| fresh seeds whose ball colour matches the target's | {fmt(colour_before, '.0%')} | "
          f"{fmt(colour_after, '.0%')} | >= 80% after (~10% before) |")
    print(f"| fresh seeds matching every unnamed attribute | {fmt(before.agreement, '.0%')} | "
          f"{fmt(after.agreement, '.0%')} | |")
    print(f"| mean {before.feature_kind} distance to the target image | {before.mean_distance:.4f} | "
          f"{after.mean_distance:.4f} ({-distance_drop:+.0f}%) | falls >= 40% |")
    print(f"| one iteration, {len(timing_seeds)} seeds to step {stop_after} (s) | {t_single:.3f} one by one | "
          f"{t_batched:.3f} batched ({t_single / t_batched:.2f}x) | >= 1.5x |")
    print(f"| optimisation wall time (s) | | {result.total_seconds:.1f} ({result.total_seconds / max(1, result.iterations):.2f} "
          f"per iteration) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
