"""`noise2art invariant`: a prompt embedding that gives one target picture for every seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from noise2art.cli.common import (InterruptFlag, add_model_args, add_sampling_args, emit_json, free_path, load,
                                  load_embedding_file, percent_change, resolve_prompt, run_interruptible,
                                  sampling_overrides, save_image, slug, step_progress, write_text)
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "invariant", help="make a prompt embedding seed-invariant: every seed gives the target's picture",
        description="Optimise the prompt embedding so that random seeds reproduce the picture of one target seed "
                    "(or a target image). Writes target.png, before.png / after.png (the prompt and the result on "
                    "the evaluation seeds), embedding.safetensors, scores.csv and report.json. Ctrl-C stops and "
                    "keeps the best so far.")
    p.add_argument("prompt", help="the prompt, or @file.safetensors for a saved embedding")
    p.add_argument("--negative", default="", help="negative prompt (its embedding stays fixed)")
    p.add_argument("--target-seed", type=int, default=None,
                   help="the seed whose picture every seed should give (default 510675, the reference's)")
    p.add_argument("--target-image", default=None,
                   help="an image file to reproduce instead of a seed's picture (resized to the model's size)")
    p.add_argument("--iterations", type=int, default=None, help="optimiser updates (default 90; reference 120)")
    p.add_argument("--mode", default=None,
                   help="full (every row free; default) or single-vector (one row repeated over rows 1.., the "
                        "reference's)")
    p.add_argument("--compare", default=None,
                   help="prediction: the picture the denoiser predicts at each stage's step vs the target's "
                        "(default); image: world-CLIP features of that prediction; latents: the noisy latents "
                        "after the step (the reference's)")
    p.add_argument("--seeds-per-step", type=int, default=None, help="random seeds per iteration, one batch (default 3)")
    p.add_argument("--stage-iterations", type=int, default=None,
                   help="iterations per curriculum stage (default 30; reference 40)")
    stages = p.add_mutually_exclusive_group()
    stages.add_argument("--stage-steps", default=None,
                        help="denoising steps before each stage compares, a comma list (default 2,4,8)")
    stages.add_argument("--max-stage", type=int, default=None,
                        help="instead of --stage-steps: stages 0..N, stage s comparing after s+1 steps (reference 2)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the random training seeds (and the noise of an image target); default 0")
    p.add_argument("--eval-seeds", type=int, default=4,
                   help="K fresh seeds evaluated besides the reference's 683395, 297009, 23916, 417016 (default 4)")
    presets = p.add_mutually_exclusive_group()
    presets.add_argument("--reference", action="store_true",
                         help="the published run: the reference's curriculum (noisy latents after 1, 2, 3 steps, 40 "
                              "iterations each, one vector) and sampling (70 LMS steps, guidance 7.5); explicit "
                              "flags still override")
    presets.add_argument("--reference-curriculum", action="store_true",
                         help="the reference's curriculum on this model's sampling settings")
    p.add_argument("--out", default=None, help="output folder (default: a new folder out/invariant_<prompt>)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (distances, agreements, seconds, paths) on stdout")
    add_sampling_args(p, steps_help="the model's; reference 70", scheduler_help="the model folder's own; reference lms",
                      guidance_help="the model's; reference 7.5", size=False, batch="evaluation images",
                      precision_note="the optimisation itself always runs the model's dtype; this sets the "
                                     "target and evaluation renders")
    add_model_args(p)
    p.set_defaults(func=run_invariant)


def load_image(path: str):
    """An image file -> `[1, 3, H, W]` float tensor in [0, 1] (RGB; alpha is dropped)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidArgument("target-image", f"no such file: '{path}'")
    try:
        with Image.open(file) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidArgument("target-image", f"cannot read '{path}' as an image ({type(exc).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def build_config(args):
    """An `InvariantConfig` from the arguments, checked (no model needed)."""
    from noise2art.engine import validation as V
    from noise2art.methods.invariant import COMPARES, MODES, REFERENCE_CURRICULUM, REFERENCE_TARGET_SEED, InvariantConfig

    if args.target_seed is not None and args.target_image is not None:
        raise InvalidArgument("target", "give --target-seed or --target-image, not both")
    if args.eval_seeds is None or args.eval_seeds < 0:
        raise InvalidArgument("eval-seeds", f"must be an integer >= 0, got {args.eval_seeds}")
    if args.mode is not None and args.mode not in MODES:
        raise InvalidArgument("mode", f"must be one of {', '.join(MODES)}, got '{args.mode}'")
    if args.compare is not None and args.compare not in COMPARES:
        raise InvalidArgument("compare", f"must be one of {', '.join(COMPARES)}, got '{args.compare}'")
    overrides = dict(REFERENCE_CURRICULUM) if args.reference_curriculum else {}
    for name in ("iterations", "seeds_per_step", "stage_iterations", "max_stage", "lr", "mode", "compare"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.max_stage is not None:
        overrides["stage_steps"] = None
    if args.stage_steps is not None:
        try:
            overrides["stage_steps"] = tuple(int(k) for k in args.stage_steps.split(","))
        except ValueError:
            raise InvalidArgument("stage-steps", f"expected a comma list of step counts, got '{args.stage_steps}'") from None
    if args.target_image is not None:
        target = dict(target_seed=None, target_image=load_image(args.target_image))
    else:
        target = dict(target_seed=V.check_seed(REFERENCE_TARGET_SEED if args.target_seed is None else args.target_seed,
                                               "target-seed"))
    V.check_seed(args.seed, "seed")
    if args.reference:
        config = InvariantConfig.reference(**target, seed=args.seed, **overrides)
    else:
        config = InvariantConfig(**target, seed=args.seed, **overrides)
    config.sampling = config.sampling.merged(sampling_overrides(args))
    return config.check()


def evaluation_seeds(config, result, fresh: int) -> list[int]:
    """The reference's four evaluation seeds plus `fresh` seeds neither the target nor any iteration used."""
    import numpy as np

    from noise2art.methods.invariant import REFERENCE_EVAL_SEEDS, draw_seeds

    used = {config.noise_seed, *REFERENCE_EVAL_SEEDS, *result.seen_seeds()}
    # A generator of its own, so the evaluation seeds do not depend on how long the run was.
    return list(REFERENCE_EVAL_SEEDS) + draw_seeds(np.random.default_rng([config.seed, 1]), fresh, used)


def run_invariant(args) -> int:
    from noise2art.engine.model import to_pil
    from noise2art.errors import Cancelled
    from noise2art.methods.invariant import (
        CANCELLED, COMPLETED, check_stages, consistency, invariant, prepare_image, render_target,
    )
    from noise2art.sheet import contact_sheet

    # Validate cheap arguments (and read the target image) before loading any weights.
    config = build_config(args)
    if args.prompt.startswith("@"):
        load_embedding_file(args.prompt)

    model = load(args)
    embedding, _ = resolve_prompt(model, args.prompt, args.negative)
    prompt = embedding.prompts[0]
    check_stages(model, config)
    if config.target_image is not None:
        image, notice = prepare_image(model, config.target_image)
        if notice:
            print(f"notice: {notice}", file=sys.stderr)
        config.target_image = image  # resized once here, so the method has nothing to warn about

    out = Path(args.out) if args.out else free_path(Path("out"), f"invariant_{slug(prompt)}", "")

    result = run_interruptible(
        lambda callback, cancel: invariant(model, embedding, config, callback=callback, cancel=cancel),
        config.iterations, "invariant", lambda i, total, score, stage: {"stage": stage, "score": f"{score:.1f}"})

    # -- the optimised embedding and the run, written first ------------------------------
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that fails on its arguments leaves no folder
    files: dict[str, str] = {}
    files["embedding"] = str(result.embedding.save(out / "embedding.safetensors"))
    rows = ["iteration,stage,slerp,score,seconds,seeds"]
    rows += [f"{i},{st},{v!r},{s!r},{t:.6f},{' '.join(map(str, seeds))}"
             for i, (st, v, s, t, seeds) in enumerate(zip(result.stage_of, result.slerp, result.scores,
                                                          result.seconds, result.seeds))]
    files["scores"] = str(write_text(out / "scores.csv", "\n".join(rows) + "\n"))

    # -- before / after on the evaluation seeds -------------------------------------------
    eval_seeds = evaluation_seeds(config, result, args.eval_seeds)
    kwargs = dict(sampling=config.sampling, prompt=prompt)
    before = after = None
    with InterruptFlag() as interrupted:
        try:
            target = render_target(model, embedding, config)
            files["target"] = str(save_image(to_pil(target)[0], out / "target.png"))
            with step_progress("evaluate", 2) as step:  # one sampling call before, one after
                before = consistency(model, embedding, target, eval_seeds, callback=step, cancel=interrupted, **kwargs)
                after = consistency(model, result.embedding, target, eval_seeds, callback=step, cancel=interrupted,
                                    **kwargs)
        except Cancelled:
            print("interrupted: evaluation skipped", file=sys.stderr)
    labels = [f"seed {s}" for s in eval_seeds]
    for name, report in (("before", before), ("after", after)):
        if report is not None:
            files[name] = str(save_image(contact_sheet(to_pil(report.images), labels=labels), out / f"{name}.png"))

    cancelled = result.stop_reason == CANCELLED or after is None
    ran = result.settings
    summary = {
        "prompt": prompt,
        "target_seed": config.target_seed,
        "target_image": args.target_image,
        "noise_seed": result.noise_seed,
        "mode": config.mode,
        "iterations": result.iterations,
        "stages": [{"stage": s.stage, "stop_after": s.stop_after, "first_iteration": s.first_iteration,
                    "iterations": s.iterations, "initial_score": s.initial_score, "final_score": s.final_score,
                    "best_score": s.best_score} for s in result.stages],
        "best_iteration": result.best_iteration,
        "best_score": result.best_score,
        "seconds": result.total_seconds,
        "stop_reason": result.stop_reason,
        "stop_message": result.stop_message,
        "eval_seeds": eval_seeds,
        "feature_kind": before.feature_kind if before else None,
        "distance_before": before.mean_distance if before else None,
        "distance_after": after.mean_distance if after else None,
        "agreement_before": before.agreement if before else None,
        "agreement_after": after.agreement if after else None,
        "families": before.families if before else [],
        "family_agreement_before": before.family_agreement if before else {},
        "family_agreement_after": after.family_agreement if after else {},
        "target_attributes": before.target_attributes if before else None,
        "before": before.as_dict() if before else None,
        "after": after.as_dict() if after else None,
        "config": {"steps": ran.steps, "scheduler": ran.scheduler_label, "guidance": ran.guidance,
                   "seeds_per_step": config.seeds_per_step, "stage_iterations": config.stage_iterations,
                   "mode": config.mode, "compare": config.compare,
                   "stage_steps": [info.stop_after for info in result.stages],
                   "anneal": list(config.anneal), "lr": config.lr, "seed": config.seed},
        "out": str(out),
        "files": files,
    }
    files["report"] = str(out / "report.json")
    write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")

    if result.stop_reason not in (COMPLETED, CANCELLED):
        print(f"warning: {result.stop_message}", file=sys.stderr)
    if args.json:
        emit_json(summary)
    else:
        print(f"invariant: {result.iterations} iterations in {result.total_seconds:.1f} s ({result.stop_message}); "
              f"best score {result.best_score:.1f} at iteration {result.best_iteration}")
        if before and after:
            print(f"distance to the target on {len(eval_seeds)} seeds ({before.feature_kind}): "
                  f"{before.mean_distance:.4f} -> {after.mean_distance:.4f} "
                  f"({percent_change(before.mean_distance, after.mean_distance)})")
            if before.agreement is not None and after.agreement is not None:
                per_family = ", ".join(f"{f} {before.family_agreement[f]:.2f} -> {after.family_agreement[f]:.2f}"
                                       for f in before.families)
                print(f"attribute agreement with the target ({', '.join(before.families)}): "
                      f"{before.agreement:.2f} -> {after.agreement:.2f}; {per_family}")
            else:
                print("attribute agreement: n/a (no attribute classifier on this model)")
        print(f"results in {out}")
    return 130 if cancelled else 0
