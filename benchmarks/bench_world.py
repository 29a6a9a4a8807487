"""Quality and speed of the embedded model.

    python benchmarks/bench_world.py [--model embedded] [--prompts 40] [--seeds 8]

- attribute classifiers: accuracy per family on freshly rendered held-out images (target >= 95%);
- generated images: mean prompt adherence on held-out prompts (target >= 0.90) and per
  family (each >= 0.80), diversity of unnamed attributes, Frechet distance (world CLIP);
- "single color ball" over 20 seeds: number of distinct classified colours (target >= 5);
  "red ball" over 20 seeds: how many are classified red (target >= 18);
- one 20-step image with guidance (target <= 0.5 s at 64 px) and a batch of 8 (target <= 3x one),
  at the model's precision and, on a CPU with native bf16, at `auto` (bf16), the default of
  `noise2art generate`.
Prints a Markdown report with the date, machine and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch


def classifier_accuracy(model, n: int, seed: int) -> dict[str, float]:
    from noise2art.world.attributes import is_defined
    from noise2art.world.dataset import render_arrays

    data = render_arrays(n, size=model.native_size, seed=seed)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(255)
    preds = []
    for s in range(0, n, 250):
        preds += model.companions.attributes.predict(images[s:s + 250])
    hits: dict[str, list[bool]] = {}
    for truth, pred in zip(data.attributes, preds):
        for fam, value in truth.items():
            if is_defined(fam, truth):
                hits.setdefault(fam, []).append(pred[fam] == value)
    return {f: float(np.mean(v)) for f, v in hits.items()}


def timing(model, steps: int, repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Best-of-`repeats` seconds for one image and for 8 seeds batched, per precision.

    The precisions alternate within each repeat so both see the same machine load;
    `auto` is what `noise2art generate` runs by default.
    """
    from noise2art.engine.devices import resolve_precision

    emb = model.encode(["mountain with a sunset and a river"])
    precisions = ["model"]
    if resolve_precision(model.device, model.dtype, "auto") != model.dtype:
        precisions.append("auto")
    times = {(p, n): [] for p in precisions for n in (1, 8)}
    for p in precisions:
        model.generate(emb, seeds=[0], steps=steps, precision=p)  # warm-up (and the bf16 copy)
    for _ in range(repeats):
        for p in precisions:
            for n in (1, 8):
                t0 = time.perf_counter()
                model.generate(emb, seeds=list(range(n)), steps=steps, precision=p)
                times[p, n].append(time.perf_counter() - t0)
    return {p: (min(times[p, 1]), min(times[p, 8])) for p in precisions}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--classifier-images", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own)")
    args = parser.parse_args()

    import noise2art
    from noise2art.world.captions import parse
    from noise2art.world.evaluation import evaluate, held_out_prompts

    model = noise2art.load_model(args.model, device="cpu")
    args.steps = args.steps or model.defaults.steps
    # Timed first, in a fresh process as a `generate` call runs: after the evaluation's
    # large batches one image timed about 25% slower in the same process.
    speed = timing(model, args.steps)
    acc = classifier_accuracy(model, args.classifier_images, seed=777)
    prompts = [(p, parse(p)) for p in held_out_prompts(args.prompts)]
    report = evaluate(model, prompts, seeds=args.seeds, steps=args.steps)
    classify = model.companions.attributes.predict
    with torch.no_grad():
        single = classify(model.render("single color ball", seeds=list(range(20)), steps=args.steps))
        red = classify(model.render("red ball", seeds=list(range(20)), steps=args.steps))
    colours = sorted({p["color"] for p in single if p["scene"] == "still_life"})
    n_red = sum(p["color"] == "red" for p in red)

    print(f"## bench_world — {datetime.date.today()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/bench_world.py {' '.join(sys.argv[1:])}")
    print(f"model: {model.model_id}, {model.native_size} px, {args.steps} steps, guidance {model.defaults.guidance}, "
          f"scheduler {model.resolve().scheduler_label}\n")
    print("| measurement | value | target |")
    print("|---|---|---|")
    print(f"| classifier accuracy, worst family | {min(acc.values()):.3f} ({min(acc, key=acc.get)}) | >= 0.95 |")
    print(f"| classifier accuracy, mean | {np.mean(list(acc.values())):.3f} | |")
    print(f"| mean prompt adherence ({report.n_prompts} prompts x {args.seeds} seeds) | {report.mean_adherence:.3f} | >= 0.90 |")
    worst = min(report.per_family, key=report.per_family.get)
    print(f"| worst family adherence | {report.per_family[worst]:.3f} ({worst}) | >= 0.80 |")
    print(f"| diversity of unnamed attributes | {report.diversity:.3f} | |")
    print(f"| Frechet distance (world CLIP) | {report.frechet:.4f} | |")
    print(f"| 'single color ball', distinct colours in 20 seeds | {len(colours)} ({', '.join(colours)}) | >= 5 |")
    print(f"| 'red ball', red in 20 seeds | {n_red} | >= 18 |")
    for precision, (one, eight) in speed.items():
        guided = "with guidance" if model.defaults.guidance > 1 else "guidance distilled"
        print(f"| one image, {args.steps} steps {guided}, precision {precision} (s) | {one:.3f} | <= 0.5 |")
        print(f"| batch of 8, precision {precision} (s) | {eight:.3f} | |")
        print(f"| batch of 8 / one image, precision {precision} | {eight / one:.2f} | <= 3 |")
    print("\nclassifier accuracy per family: " + ", ".join(f"{f} {a:.3f}" for f, a in acc.items()))
    print("adherence per family: " + ", ".join(f"{f} {a:.3f}" for f, a in report.per_family.items()))


if __name__ == "__main__":
    main()
