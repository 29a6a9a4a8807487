"""Few-step sampling: quality and time per scheduler and step count, and the distilled model.

    python benchmarks/bench_fewstep.py [--prompts 40] [--seeds 2] [--steps 2,3,4,6,8,12]
        [--schedulers ddim,euler,...] [--fast world-64-fast]
    python benchmarks/bench_fewstep.py --time-only

For every scheduler at every step count, on the full model with its guidance: mean prompt
adherence and the lowest families on held-out prompts (`world.evaluation.evaluate`), the
world-CLIP Frechet distance to rendered references, UNet evaluations per image, and the
time of one image (a new prompt, its encoding included; `--time-only` also with the empty
negative prompt already encoded, as in a session after its first image), of the next image
of a prompt already encoded and of a page of 24 (best of two), its UNet traced as in a warm
service (`engine/tracing.py`); `--time-only` measures only the times of the model's default
and of the distilled model, traced and untraced (a one-off command). The reference row is the model's own
default (DDIM, 20 steps). The distilled model (`--fast`) is measured the same way at its
defaults, and its frames against the full model on the same seeds.

The pick is the setting with the fewest UNet evaluations per image whose mean adherence
is within 0.01 of the reference, every family >= 0.80 (or, where the reference itself is
below 0.85 on a few prompts, within 0.05 of the reference's figure for it) and Frechet
distance <= 1.5x the reference's: the preview setting. Prints a Markdown report with date, machine and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

# UNet evaluations per step; Heun's first step is one call, every other two.
CALLS_PER_STEP = {"heun": 2}


def unet_calls(scheduler: str, steps: int, guidance: float) -> int:
    calls = steps * CALLS_PER_STEP.get(scheduler, 1) - (1 if scheduler == "heun" else 0)
    return calls * (2 if guidance > 1 else 1)


def timed(model, traced: bool = True, **settings) -> tuple[float, float, float, float]:
    """Best of two: seconds for one image of a prompt not seen before with its negative
    prompt not seen either (both encoded), for one image of a new prompt in a session
    that has drawn before (the empty negative prompt is in the encoder's cache after a
    session's first image, so only the prompt is encoded), for the next image of a prompt
    already encoded (a stream's next result, a scrubbed frame) and for a page of 24.

    `traced`: as in a warm service, the UNet replays a trace made in the warm-up
    (`engine.tracing`, `Model.warm_up`); else as a one-off command, untraced."""
    prompt = "a snow-capped mountain above a lake at sunset"
    model.tracer.after = 64 if traced else None
    with model.tracer.tracing_now():
        model.generate(prompt, seeds=[0], **settings)  # warm-up
    one, new, nxt, page = [], [], [], []
    for k in range(2):
        model.text_encoder._cache.clear()
        t0 = time.perf_counter()
        model.generate(prompt, seeds=[0], **settings)
        one.append(time.perf_counter() - t0)
        model.text_encoder._cache.pop((prompt, str(model.device), model.dtype))
        t0 = time.perf_counter()
        model.generate(prompt, seeds=[0], **settings)
        new.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.generate(prompt, seeds=[k + 1], **settings)
        nxt.append(time.perf_counter() - t0)
        model.text_encoder._cache.clear()
        t0 = time.perf_counter()
        model.generate(prompt, seeds=list(range(24)), **settings)
        page.append(time.perf_counter() - t0)
    return min(one), min(new), min(nxt), min(page)


def row(model, prompts, seeds: int, label: str, calls: int, **settings) -> dict:
    from noise2art.world.evaluation import evaluate

    one, _, nxt, page = timed(model, **settings)
    from noise2art.engine.settings import SamplingOverrides

    report = evaluate(model, prompts, seeds=seeds, sampling=SamplingOverrides(**settings))
    worst = sorted(report.per_family.items(), key=lambda kv: kv[1])[:2]
    return {"label": label, "calls": calls, "adherence": report.mean_adherence, "worst": worst,
            "families": report.per_family, "frechet": report.frechet, "one": one, "next": nxt, "page": page}


def same_picture(fast, full, prompts, seeds: int) -> float:
    """Mean world-CLIP cosine between the fast model's image and the full model's on the same prompt and seed."""
    clip = full.companions.world_clip
    sims = []
    with torch.no_grad():
        for prompt, _ in prompts:
            a = clip.encode_image(fast.render(prompt, seeds=list(range(seeds))))
            b = clip.encode_image(full.render(prompt, seeds=list(range(seeds))))
            sims.append(torch.nn.functional.cosine_similarity(a, b).mean().item())
    return sum(sims) / len(sims)


def header(args, model) -> None:
    print(f"## bench_fewstep — {datetime.date.today()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/bench_fewstep.py {' '.join(sys.argv[1:])}")


def time_only(args) -> None:
    """Times of each model at its defaults, three rounds interleaved (the machine is noisy)."""
    import noise2art

    models = [noise2art.load_model(name, device="cpu") for name in (args.model, args.fast) if name]
    runs = {(m.model_id, traced): [] for m in models for traced in (True, False)}
    for _ in range(3):
        for m in models:
            for traced in (True, False):
                runs[m.model_id, traced].append(timed(m, traced))
    header(args, models[0])
    print()
    print("| model (defaults) | UNet | one image, new prompt and negative (s) | one image, new prompt (s) "
          "| next image, prompt encoded (s) | page of 24 (s) |")
    print("|---|---|---|---|---|---|")
    for m in models:
        for traced in (True, False):
            one, new, nxt, page = (min(r[k] for r in runs[m.model_id, traced]) for k in range(4))
            print(f"| {m.model_id}: {m.defaults.scheduler} {m.defaults.steps}, guidance {m.defaults.guidance:g} "
                  f"| {'traced (warm service)' if traced else 'untraced (one-off command)'} "
                  f"| {one:.3f} | {new:.3f} | {nxt:.3f} | {page:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="world-64")
    parser.add_argument("--fast", default="world-64-fast", help="the distilled model ('' to skip)")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", default="2,3,4,6,8,12")
    parser.add_argument("--schedulers", default="ddim,euler,euler-a,dpm++2m,dpm++2m-karras,unipc,lms,pndm,heun")
    parser.add_argument("--time-only", action="store_true",
                        help="only the times of the model's default and of the distilled model (no quality)")
    args = parser.parse_args()
    if args.time_only:
        time_only(args)
        return

    import noise2art
    from noise2art.world.captions import parse
    from noise2art.world.evaluation import held_out_prompts

    model = noise2art.load_model(args.model, device="cpu")
    prompts = [(p, parse(p)) for p in held_out_prompts(args.prompts)]
    d = model.defaults
    rows = [row(model, prompts, args.seeds, f"{d.scheduler} {d.steps} (default)",
                unet_calls(d.scheduler, d.steps, d.guidance))]
    ref = rows[0]
    for scheduler in args.schedulers.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            print(f"[bench_fewstep] {scheduler} {steps}", file=sys.stderr, flush=True)
            rows.append(row(model, prompts, args.seeds, f"{scheduler} {steps}",
                            unet_calls(scheduler, steps, d.guidance), scheduler=scheduler, steps=steps))
    fast_rows, similarity = [], None
    if args.fast:
        fast = noise2art.load_model(args.fast, device="cpu")
        fd = fast.defaults
        fast_rows.append(row(fast, prompts, args.seeds, f"{fast.model_id}: {fd.scheduler} {fd.steps}, guidance "
                             f"{fd.guidance:g}", unet_calls(fd.scheduler, fd.steps, fd.guidance)))
        similarity = same_picture(fast, model, prompts[:10], 4)

    def keeps(r):
        # A family is kept at 0.80, or near the reference's own figure where that is lower:
        # on a dozen prompts a family can rest on a few images, so even the reference misses 0.80.
        families = all(v >= min(0.80, ref["families"].get(f, 1.0) - 0.05) for f, v in r["families"].items())
        return r["adherence"] >= ref["adherence"] - 0.01 and families and r["frechet"] <= 1.5 * ref["frechet"]

    passing = [r for r in rows[1:] if keeps(r)]
    pick = min(passing, key=lambda r: (r["calls"], r["one"])) if passing else None

    header(args, model)
    print(f"model: {model.model_id}, guidance {d.guidance:g}; {args.prompts} held-out prompts x {args.seeds} seeds\n")
    print("| setting | UNet calls | adherence | lowest families | Frechet | one image (s) | next image (s) "
          "| page of 24 (s) | keeps quality |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows + fast_rows:
        worst = ", ".join(f"{f} {v:.2f}" for f, v in r["worst"])
        print(f"| {r['label']} | {r['calls']} | {r['adherence']:.3f} | {worst} | {r['frechet']:.4f} | "
              f"{r['one']:.3f} | {r['next']:.3f} | {r['page']:.2f} | {'yes' if r is ref or keeps(r) else 'no'} |")
    print()
    if pick is not None:
        print(f"preview pick (fewest UNet calls that keeps quality): **{pick['label']}** "
              f"({pick['calls']} calls, one image {pick['one']:.3f} s, page {pick['page']:.2f} s)")
    else:
        print("preview pick: no setting keeps quality")
    if fast_rows:
        r = fast_rows[0]
        print(f"\n{r['label']}: every family: " + ", ".join(f"{f} {v:.2f}" for f, v in r["families"].items()))
        print(f"\nsame picture: world-CLIP cosine of {args.fast}'s image to {model.model_id}'s on the same prompt "
              f"and seed, 10 prompts x 4 seeds: {similarity:.3f}")


if __name__ == "__main__":
    main()
