"""Benchmark of `generate`: against diffusers' pipeline, batched vs single seeds, gradient memory.

    python benchmarks/bench_generate.py [--model embedded] [--steps 20] [--repeats 3]

(a) our `Model.generate` vs diffusers' `StableDiffusionPipeline` on the same model and
    settings (prompt embeddings passed to the pipeline directly, so the text encoder is
    out of the comparison): wall-time ratio, target <= 1.05;
(b) 8 seeds in one batched call vs 8 single calls: speed-up, target >= 2x on 2 CPU cores;
(c) peak memory of a 20-step sample + decode + backward with `grad_steps="all"`
    (checkpointed) vs `"last"`: each in a fresh subprocess, peak resident memory (sampled
    every 2 ms) above the level after loading and one warm-up render.
Prints a Markdown table with the date, machine and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import torch


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pipeline_for(model):
    from diffusers import StableDiffusionPipeline

    from noise2art.engine.schedulers import make_scheduler

    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=None, tokenizer=None, unet=model.unet,
        scheduler=make_scheduler(model.resolve().scheduler, model.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def memory_child(model_name: str, grad_steps: str, steps: int) -> None:
    """Peak resident memory above the level after loading, sampled every 2 ms by a thread
    (the process's own high-water mark already holds the loading peak)."""
    import threading

    import noise2art

    model = noise2art.load_model(model_name, device="cpu")
    emb = model.encode(["a red ball on a gradient background"])
    model.generate(emb, seeds=[0], steps=2)
    base = current_rss_kb()
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_kb())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cond = emb.cond.clone().requires_grad_(True)
    latents = model.sample(emb.with_tensors(cond), seeds=[0], steps=steps, grad_steps=grad_steps)
    model.decode(latents).mean().backward()
    done.set()
    watcher.join()
    print(json.dumps({"peak_kb": max(peak[0], current_rss_kb()) - base}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.model, args.memory_child, args.steps)
        return

    import noise2art

    model = noise2art.load_model(args.model, device="cpu")
    prompt = "mountain with a sunset and a river"
    emb = model.encode([prompt])
    g = model.defaults.guidance
    size = model.native_size
    pipe = pipeline_for(model)
    seeds = list(range(8))

    def ours():
        model.generate(emb, seeds=[0], steps=args.steps, guidance=g)

    def theirs():
        pipe(prompt_embeds=emb.cond, negative_prompt_embeds=emb.uncond, num_inference_steps=args.steps,
             guidance_scale=g, height=size, width=size, generator=[torch.Generator().manual_seed(0)], output_type="pil")

    ours(), theirs()  # warm-up
    t_ours, t_theirs = best_of(ours, args.repeats), best_of(theirs, args.repeats)
    t_batch = best_of(lambda: model.generate(emb, seeds=seeds, steps=args.steps, guidance=g), args.repeats)
    t_single = best_of(lambda: [model.generate(emb, seeds=[s], steps=args.steps, guidance=g) for s in seeds], 1)

    peaks = {}
    for mode in ("last", "all"):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--steps", str(args.steps),
                              "--memory-child", mode], capture_output=True, text=True, check=True)
        peaks[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"] / 1024

    print(f"## bench_generate — {datetime.date.today()}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/bench_generate.py {' '.join(sys.argv[1:])}")
    print(f"model: {model.model_id}, {size} px, {args.steps} steps, guidance {g}, scheduler {model.resolve().scheduler_label}\n")
    print("| measurement | value | target |")
    print("|---|---|---|")
    print(f"| ours, 1 image (s) | {t_ours:.3f} | |")
    print(f"| diffusers pipeline, 1 image (s) | {t_theirs:.3f} | |")
    print(f"| ours / diffusers | {t_ours / t_theirs:.3f} | <= 1.05 |")
    print(f"| 8 seeds batched (s) | {t_batch:.3f} | |")
    print(f"| 8 seeds one by one (s) | {t_single:.3f} | |")
    print(f"| speed-up of batching | {t_single / t_batch:.2f}x | >= 2x |")
    print(f"| peak memory, grad_steps=last (MiB) | {peaks['last']:.0f} | |")
    print(f"| peak memory, grad_steps=all, checkpointed (MiB) | {peaks['all']:.0f} | |")
    print(f"| all / last | {peaks['all'] / max(peaks['last'], 1e-6):.2f} | <= 2 |")


if __name__ == "__main__":
    main()
