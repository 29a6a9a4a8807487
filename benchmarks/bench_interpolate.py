"""Benchmark of interpolation: batched frames, constant-speed re-timing, lerp vs slerp smoothness.

    python benchmarks/bench_interpolate.py [--model embedded] [--steps 20] [--frames 50]
        [--retime-frames 24] [--refine 24] [--retime-pairs 6] [--smooth-frames 16] [--pairs 10]

(a) ``--frames`` frames of one path rendered in UNet batches vs one frame per call (the
    same frames): wall-time ratio, target >= 2x;
(b) constant-speed re-timing of "beautiful mountain landscape, lake, snow, oil painting"
    -> "single red ball, flat": max / mean consecutive-frame distance before and after,
    target: cut >= 2x; with ``--retime-pairs N``, also the mean over the first N pairs of (c);
(c) lerp vs slerp smoothness (max and mean consecutive-frame distance, and their ratio)
    on ``--pairs`` prompt pairs of the world (landscapes <-> still lifes, colours,
    styles), and which is smoother.

Distances are `metrics.features.image_distance` (world CLIP on the embedded model,
thumbnails on SD checkpoints). Prints a Markdown table with the date, machine and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

PAIRS = [
    ("beautiful mountain landscape, lake, snow, oil painting", "single red ball, flat"),
    ("a landscape at sunset with a river and a forest", "a still life, a blue cube on a plain background"),
    ("a red ball on a gradient background", "a blue ball on a gradient background"),
    ("a yellow pyramid, a photo", "a yellow pyramid, pixel art"),
    ("a desert at noon, no trees", "a snowfield at night, a pine forest"),
    ("a green cube, a watercolor", "a purple sphere, a pencil sketch"),
    ("mountains and the sea at dawn, a photo", "mountains and the sea at dawn, an oil painting"),
    ("a meadow with a few trees, a clear sky", "a white box on a plain backdrop"),
    ("an overcast day, a lake, flat design", "a sunny day, a lake, flat design"),
    ("an orange orb, vibrant", "a black block, dark"),
]
RETIME_PAIR = PAIRS[0]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def step_distances(distance, images):
    return distance(images[:-1], images[1:]).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=824331, help="the reference's figure seed")
    parser.add_argument("--frames", type=int, default=50, help="(a) frames rendered both ways")
    parser.add_argument("--batch-size", type=int, default=None, help="(a) frames per batch (default: all)")
    parser.add_argument("--retime-frames", type=int, default=24, help="(b) frames of the re-timed path")
    parser.add_argument("--refine", type=int, default=24, help="(b) extra renders for refinement")
    parser.add_argument("--retime-pairs", type=int, default=1,
                        help=f"(b) also re-time the first N prompt pairs of (c) and report the mean (at most {len(PAIRS)})")
    parser.add_argument("--smooth-frames", type=int, default=16, help="(c) frames per path")
    parser.add_argument("--pairs", type=int, default=len(PAIRS), help=f"(c) prompt pairs, at most {len(PAIRS)}")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: a, b, c")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import noise2art
    from noise2art.metrics.features import feature_kind
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.interpolate import InterpolationConfig, InterpolationPath, interpolate, render_frames
    from noise2art.methods.retime import RetimeConfig, model_distance, retime, step_ratio

    model = noise2art.load_model(args.model, device="cpu")
    distance = model_distance(model)
    rows: list[tuple[str, str, str]] = []

    # (a) batched vs one frame per call.
    if "a" not in skip:
        a, b = model.encode([RETIME_PAIR[0]]), model.encode([RETIME_PAIR[1]])
        cfg = InterpolationConfig(frames=args.frames, seed=args.seed, sampling=SamplingOverrides(steps=args.steps))
        path = InterpolationPath(model, [a, b], cfg)
        alphas = path.plan()
        emb, noise = path.embeddings(alphas), path.noises(alphas)
        batch = args.batch_size or args.frames
        batched_cfg = InterpolationConfig(frames=args.frames, seed=args.seed, sampling=SamplingOverrides(steps=args.steps, batch_size=batch))
        single_cfg = InterpolationConfig(frames=args.frames, seed=args.seed, sampling=SamplingOverrides(steps=args.steps, batch_size=1))
        render_frames(model, emb[:2], noise[:2], batched_cfg)  # warm-up
        t_batch, x_batch = timed(lambda: render_frames(model, emb, noise, batched_cfg))
        t_single, x_single = timed(lambda: render_frames(model, emb, noise, single_cfg))
        diff = float((x_batch - x_single).abs().max())
        rows += [
            (f"(a) {args.frames} frames, batches of {batch} (s)", f"{t_batch:.2f}", ""),
            (f"(a) {args.frames} frames, one per call (s)", f"{t_single:.2f}", ""),
            ("(a) speed-up of batching", f"{t_single / t_batch:.2f}x", ">= 2x"),
            ("(a) frames per second, batched", f"{args.frames / t_batch:.2f}", ""),
            ("(a) max abs pixel difference batched vs single", f"{diff:.1e}", "~0"),
        ]

    # (b) constant-speed re-timing.
    if "b" not in skip:
        a, b = model.encode([RETIME_PAIR[0]]), model.encode([RETIME_PAIR[1]])
        cfg = InterpolationConfig(frames=args.retime_frames, seed=args.seed, sampling=SamplingOverrides(steps=args.steps))
        t_retime, res = timed(lambda: retime(model, [a, b], cfg, RetimeConfig(refine=args.refine)))
        rows += [
            (f"(b) max/mean step ratio, even alphas ({args.retime_frames} frames)", f"{res.ratio_before:.2f}", ""),
            (f"(b) max/mean step ratio, re-timed ({res.plan.refine_renders} extra renders)", f"{res.ratio_after:.2f}", ""),
            ("(b) ratio cut", f"{res.ratio_before / res.ratio_after:.2f}x", ">= 2x"),
            # 1 is perfectly even, so the part above 1 is what re-timing can remove.
            ("(b) excess cut, (before - 1) / (after - 1)",
             f"{(res.ratio_before - 1) / max(res.ratio_after - 1, 1e-9):.2f}x", ""),
            ("(b) re-timing wall time incl. first render (s)", f"{t_retime:.1f}", ""),
        ]
        if args.retime_pairs > 1:
            # One pair is one path: its jumps decide its ratio. The mean over several pairs.
            before, after = [], []
            for pa, pb in PAIRS[:args.retime_pairs]:
                res = retime(model, [model.encode([pa]), model.encode([pb])], cfg, RetimeConfig(refine=args.refine))
                before.append(res.ratio_before)
                after.append(res.ratio_after)
            rows += [
                (f"(b) {len(before)} pairs: mean max/mean step ratio, even alphas", f"{statistics.mean(before):.2f}", ""),
                (f"(b) {len(before)} pairs: mean max/mean step ratio, re-timed", f"{statistics.mean(after):.2f}", ""),
                (f"(b) {len(before)} pairs: mean ratio cut", f"{statistics.mean(before) / statistics.mean(after):.2f}x",
                 ">= 2x"),
                (f"(b) {len(before)} pairs: per pair, before -> after",
                 ", ".join(f"{x:.2f} -> {y:.2f}" for x, y in zip(before, after)), ""),
            ]

    # (c) lerp vs slerp smoothness.
    smooth_rows = []
    if "c" not in skip:
        pairs = PAIRS[: max(1, min(args.pairs, len(PAIRS)))]
        stats = {"lerp": [], "slerp": []}
        for pa, pb in pairs:
            a, b = model.encode([pa]), model.encode([pb])
            per = {}
            for method in ("lerp", "slerp"):
                cfg = InterpolationConfig(frames=args.smooth_frames, method=method, seed=args.seed, sampling=SamplingOverrides(steps=args.steps))
                d = step_distances(distance, interpolate(model, [a, b], cfg).images)
                per[method] = (float(d.max()), float(d.mean()), step_ratio(d))
                stats[method].append(per[method])
            smooth_rows.append((pa, pb, per))
        for method in ("lerp", "slerp"):
            mx = statistics.fmean(s[0] for s in stats[method])
            mean = statistics.fmean(s[1] for s in stats[method])
            ratio = statistics.fmean(s[2] for s in stats[method])
            rows.append((f"(c) {method}: mean over pairs of max / mean step distance, max/mean ratio",
                         f"{mx:.4f} / {mean:.4f}, {ratio:.2f}", ""))
        wins = sum(1 for _, _, per in smooth_rows if per["slerp"][0] < per["lerp"][0])
        smoother = "slerp" if wins * 2 > len(smooth_rows) else ("lerp" if wins * 2 < len(smooth_rows) else "tie")
        rows.append(("(c) pairs where slerp has the smaller max step", f"{wins} / {len(smooth_rows)}", ""))
        rows.append(("(c) smoother (by max step, majority of pairs)", smoother, ""))

    print(f"## bench_interpolate — {datetime.date.today()}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/bench_interpolate.py {' '.join(sys.argv[1:])}")
    print(f"model: {model.model_id}, {model.native_size} px, {args.steps} steps, guidance {model.defaults.guidance}, "
          f"scheduler {model.resolve().scheduler_label}, seed {args.seed}, image distance: {feature_kind(model)}\n")
    print("| measurement | value | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    if smooth_rows:
        print("\n| pair | lerp max / mean | slerp max / mean | smoother |")
        print("|---|---|---|---|")
        for pa, pb, per in smooth_rows:
            lm, sm = per["lerp"], per["slerp"]
            print(f"| {pa} -> {pb} | {lm[0]:.4f} / {lm[1]:.4f} | {sm[0]:.4f} / {sm[1]:.4f} | "
                  f"{'slerp' if sm[0] < lm[0] else 'lerp'} |")


if __name__ == "__main__":
    main()
