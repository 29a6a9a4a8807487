"""Benchmark of seed-invariant embeddings (docs/invariant.md) on the embedded model.

The showcase prompt is "single color ball": it names no colour, so the ball comes out
in a different colour for different seeds. The benchmark picks a target seed whose ball
is clearly coloured (the attribute classifier's most confident colour among candidate
seeds, the reference's 510675 first), runs `invariant` with our default settings and,
on the same target, seeds and sampling, with the reference's curriculum
(`REFERENCE_CURRICULUM`), then renders the prompt's embedding and each optimised one on
fresh seeds (never drawn by any run). It reports, as a Markdown table:

- colour agreement: the share of fresh seeds whose classified ball colour equals the
  target's (before: about 1 in 10 with ten colours; target after: >= 80%);
- agreement on each other attribute the prompt leaves unnamed (background, style,
  modifier) and on all of them at once;
- the mean world-CLIP distance (`1 - cos`) of the fresh seeds' images to the target
  image, before and after (target: falls by >= 40%);
- one iteration of the reference's last stage (sampling to step 3 with gradients,
  score, backward) with 3 seeds in one UNet batch vs the same seeds one by one (median
  of repeats; target: batched >= 1.5x faster);
- each optimisation's wall time.

Run:
    python benchmarks/bench_invariant.py                     # ours and the reference's curriculum, 20 fresh seeds
    python benchmarks/bench_invariant.py --quick             # ours, 30 iterations, 8 fresh seeds: a few minutes on a CPU
    python benchmarks/bench_invariant.py --iterations 60 --stage-iterations 20 --stage-steps 2,4,6 --no-reference
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
    p.add_argument("--iterations", type=int, default=None, help="(default: the config's, 90; reference 120)")
    p.add_argument("--stage-iterations", type=int, default=None, help="(default: the config's, 30; reference 40)")
    p.add_argument("--stage-steps", default=None, help="comma list (default: the config's, 2,4,8)")
    p.add_argument("--compare", default=None, choices=("prediction", "image", "latents"))
    p.add_argument("--seeds-per-step", type=int, default=3)
    p.add_argument("--mode", default=None, choices=("single-vector", "full"))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the run with the reference's curriculum (same target, seeds and sampling)")
    p.add_argument("--eval-seeds", type=int, default=20, help="fresh seeds for the before/after evaluation")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--scheduler", default=None, help="scheduler (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched vs one-by-one iteration")
    p.add_argument("--seed", type=int, default=0, help="seeds the run's random seed stream")
    p.add_argument("--quick", action="store_true",
                   help="30 iterations in stages of 10, 8 candidates, 8 fresh seeds, 2 timing repeats, no "
                        "reference run")
    p.add_argument("--out", default=None, help="also write before/after/target PNGs and the embedding here")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.stage_iterations, args.candidates, args.eval_seeds, args.repeats = 30, 10, 8, 8, 2
        args.no_reference = True
    for name in ("iterations", "stage_iterations", "seeds_per_step", "eval_seeds", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.candidates < 0:
        p.error("--candidates must be >= 0")
    if args.stage_steps is not None:
        try:
            args.stage_steps = tuple(int(k) for k in args.stage_steps.split(","))
        except ValueError:
            p.error("--stage-steps: expected a comma list of integers")
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
        REFERENCE_CURRICULUM,
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

    ours = {k: v for k, v in dict(iterations=args.iterations, stage_iterations=args.stage_iterations,
                                  stage_steps=args.stage_steps, compare=args.compare, mode=args.mode).items()
            if v is not None}
    common = dict(target_seed=target_seed, seeds_per_step=args.seeds_per_step, lr=args.lr, seed=args.seed,
                  sampling=SamplingOverrides(**sample_kwargs))
    configs = {"ours": InvariantConfig(**common, **ours)}
    if not args.no_reference:
        configs["reference curriculum"] = InvariantConfig(**common, **REFERENCE_CURRICULUM)
    target_image = render_target(model, embedding, configs["ours"])

    # -- the runs --
    def progress(i, total, score, stage):
        if (i + 1) % max(1, total // 10) == 0 or i + 1 == total:
            print(f"[invariant] {i + 1}/{total} stage {stage} score {score:.1f}", file=sys.stderr)

    results = {name: invariant(model, embedding, config, callback=progress) for name, config in configs.items()}

    # -- before / after on fresh seeds (none of them drawn by any run) --
    used = {target_seed, *REFERENCE_EVAL_SEEDS, *(s for r in results.values() for s in r.seen_seeds())}
    fresh = draw_seeds(np.random.default_rng([args.seed, 2]), args.eval_seeds, used)
    reports = {"before": consistency(model, embedding, target_image, fresh, prompt=args.prompt, **sample_kwargs)}
    for name, result in results.items():
        reports[name] = consistency(model, result.embedding, target_image, fresh, prompt=args.prompt, **sample_kwargs)
    for name, report in reports.items():
        print(f"[eval] {name}: distance {report.mean_distance:.4f}, agreement {report.family_agreement}",
              file=sys.stderr)
    before = reports["before"]

    # -- batched vs one by one (the reference's comparison at its last stage) --
    timing_seeds = draw_seeds(np.random.default_rng([args.seed, 3]), args.seeds_per_step, used)
    stop_after = 3
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
            contact_sheet(to_pil(report.images), labels=[f"seed {s}" for s in fresh]).save(
                out / f"{name.replace(' ', '_')}.png")
        for name, result in results.items():
            result.embedding.save(out / f"embedding_{name.replace(' ', '_')}.safetensors")

    # -- the report --
    steps = args.steps if args.steps is not None else model.defaults.steps
    scheduler = model.resolve(scheduler=args.scheduler).scheduler_label
    guidance = args.guidance if args.guidance is not None else model.defaults.guidance
    print(f"## bench_invariant — {datetime.date.today().isoformat()}\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, device {model.device}, dtype {model.dtype}")
    print(f"- model: {model.model_id}; prompt \"{args.prompt}\"; target seed {target_seed} ({target_note}); "
          f"{args.seeds_per_step} seeds per step, lr {args.lr}; {steps} {scheduler} steps, guidance {guidance}; "
          f"{len(fresh)} fresh evaluation seeds; features: {before.feature_kind}")
    for name, result in results.items():
        c = configs[name]
        print(f"- {name}: {c.mode}, compare {c.compare}, {result.iterations} iterations in stages of "
              f"{c.stage_iterations} comparing after {', '.join(str(i.stop_after) for i in result.stages)} steps; "
              f"{result.total_seconds:.1f} s ({result.total_seconds / max(1, result.iterations):.2f} s per iteration)")
    if has_classifier:
        print(f"- target attributes: {before.target_attributes}; compared families: {', '.join(before.families)}")
    print(f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`")
    print(f"- total wall time: {time.perf_counter() - started:.0f} s\n")
    names = list(results)
    print("| measurement | before | " + " | ".join(names) + " | target (ours) |")
    print("|---|---|" + "---|" * len(names) + "---|")

    def colour(report):
        return report.family_agreement.get("color") if has_classifier else None

    def drop(report):
        return f"{report.mean_distance:.4f} ({(report.mean_distance / before.mean_distance - 1) * 100:+.0f}%)"

    print(f"| fresh seeds whose ball colour matches the target's | {fmt(colour(before), '.0%')} | "
          + " | ".join(fmt(colour(reports[n]), '.0%') for n in names) + " | >= 80% |")
    for family in (before.families if has_classifier else []):
        if family == "color":
            continue
        print(f"| fresh seeds matching the target's {family} | {fmt(before.family_agreement.get(family), '.0%')} | "
              + " | ".join(fmt(reports[n].family_agreement.get(family), '.0%') for n in names) + " | |")
    print(f"| fresh seeds matching every unnamed attribute | {fmt(before.agreement, '.0%')} | "
          + " | ".join(fmt(reports[n].agreement, '.0%') for n in names) + " | |")
    print(f"| mean {before.feature_kind} distance to the target image | {before.mean_distance:.4f} | "
          + " | ".join(drop(reports[n]) for n in names) + " | falls >= 40% |")
    print(f"\nOne iteration of the reference's last stage, {len(timing_seeds)} seeds to step {stop_after}: "
          f"{t_single:.3f} s one by one, {t_batched:.3f} s batched ({t_single / t_batched:.2f}x; target >= 1.5x).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
