"""`noise2art optimize`: gradient ascent on a prompt embedding against an image metric."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from noise2art.cli.common import (InterruptFlag, add_model_args, add_sampling_args, emit_json, free_path, load,
                                  percent_change, resolve_prompt, run_interruptible, sampling_overrides, save_image,
                                  slug, write_text)
from noise2art.errors import Cancelled, InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "optimize", help="optimise a prompt embedding for an image metric (aesthetic, sharpness, ...)",
        description="Follow a differentiable image metric's gradient back to the prompt embedding "
                    "(rows 1.. of cond and uncond). Writes trajectory images, scores.csv, scores.png, "
                    "before.png, after.png and best.safetensors. Ctrl-C stops and keeps the best so far.")
    p.add_argument("prompt", help="the prompt, or @file.safetensors for a saved embedding")
    p.add_argument("--negative", default="", help="negative prompt (its embedding is optimised too)")
    p.add_argument("--metric", required=True,
                   help="metric spec: sharpness, blurriness, aesthetic, colorfulness, brightness, contrast, "
                        "text:<prompt>, or a weighted sum such as 'aesthetic+0.5*sharpness'")
    p.add_argument("--iterations", type=int, default=None, help="scored iterations (default 50)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="the seed rendered each iteration (default 0)")
    seeds.add_argument("--seeds", default=None,
                       help="several seeds per iteration, rendered in one batch: A..B (inclusive) or a comma list")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01)")
    p.add_argument("--grad-steps", default=None,
                   help="denoising steps carrying gradients: last, last-K, K or all (default: last-3; reference: last)")
    p.add_argument("--renorm-every", default=None,
                   help="rescale to the initial mean/std every N updates, or 'never' (default never; reference 1)")
    p.add_argument("--proximity", type=float, default=None,
                   help="weight of the penalty on the distance from the initial embedding (default 0)")
    p.add_argument("--loss-scale", type=float, default=None, help="factor on the score in the loss (default: the metric's)")
    p.add_argument("--eval-seeds", type=int, default=None,
                   help="render the initial and best embedding on K seeds not used in the optimisation; report mean/std")
    p.add_argument("--adherence-weight", type=float, default=None,
                   help="weight of the loss that keeps the attributes the prompt names (default 1; 0: off)")
    p.add_argument("--picture-weight", type=float, default=None,
                   help="weight of the loss on the image's distance to the initial image (default 0)")
    p.add_argument("--adherence-floor", default=None,
                   help="the best iterate keeps at least this share of the initial prompt adherence "
                        "(default 0.9; 'none': any iterate)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--unconstrained", action="store_true",
                       help="the metric alone: no adherence loss, no adherence floor (the picture may be lost)")
    modes.add_argument("--reference", action="store_true",
                       help="the reference's settings (70 LMS steps, gradients through the last step, renormalise "
                            "every update, no adherence terms); explicit flags still override")
    p.add_argument("--every", type=int, default=None,
                   help="write a trajectory image every N iterations (default: about 10 images)")
    p.add_argument("--out", default=None, help="output folder (default: a new folder out/optimize_<prompt>)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the scores and paths on stdout")
    add_sampling_args(p, steps_help="20; reference 70", scheduler_help="ddim; reference lms", batch="seeds",
                      precision_note="the optimisation itself always runs the model's dtype; this sets the "
                                     "--eval-seeds renders")
    add_model_args(p)
    p.set_defaults(func=run_optimize)


def build_config(args):
    """An `OptimizeConfig` from the arguments, checked (no model needed)."""
    from noise2art.engine import validation as V
    from noise2art.methods.optimize import OptimizeConfig

    if args.reference:
        config = OptimizeConfig.reference(args.metric)
    elif args.unconstrained:
        config = OptimizeConfig.unconstrained(args.metric)
    else:
        config = OptimizeConfig(metric=args.metric)
    config.seeds = V.parse_seed_range(args.seeds) if args.seeds else [V.check_seed(0 if args.seed is None else args.seed)]
    if args.iterations is not None:
        config.iterations = args.iterations
    if args.lr is not None:
        config.lr = args.lr
    if args.grad_steps is not None:
        text = args.grad_steps.strip()
        config.grad_steps = int(text) if text.isdigit() else text
    config.sampling = config.sampling.merged(sampling_overrides(args))
    if args.renorm_every is not None:
        config.renorm_every = _parse_renorm(args.renorm_every)
    if args.proximity is not None:
        config.proximity = args.proximity
    if args.loss_scale is not None:
        config.loss_scale = args.loss_scale
    if args.adherence_weight is not None:
        config.adherence_weight = args.adherence_weight
    if args.picture_weight is not None:
        config.picture_weight = args.picture_weight
    if args.adherence_floor is not None:
        text = args.adherence_floor.strip().lower()
        try:
            config.adherence_floor = None if text == "none" else float(text)
        except ValueError:
            raise InvalidArgument("adherence-floor", f"expected a number in [0, 1] or 'none', got '{args.adherence_floor}'") from None
    if args.every is not None:
        if args.every < 1:
            raise InvalidArgument("every", f"must be an integer >= 1, got {args.every}")
        config.trajectory_every = args.every
    else:
        config.trajectory_every = max(1, (config.iterations if isinstance(config.iterations, int) else 1) // 10)
    return config.check()


def _parse_renorm(text: str) -> int | None:
    key = text.strip().lower()
    if key in ("never", "none", "0"):
        return None
    if not key.isdigit():
        raise InvalidArgument("renorm-every", f"expected an integer >= 1 or 'never', got '{text}'")
    return int(key)


def unseen_seeds(used: list[int], count: int) -> list[int]:
    """`count` seeds right after the largest seed used: none of them was optimised on."""
    start = max(used) + 1
    return list(range(start, start + count))


def run_optimize(args) -> int:
    import torch

    from noise2art import __version__
    from noise2art.engine.model import to_pil
    from noise2art.methods.optimize import CANCELLED, COMPLETED, evaluate_on_seeds, optimize
    from noise2art.metrics import MetricUnavailable, get_metric
    from noise2art.plot import line_chart

    # Validate cheap arguments before loading any weights.
    config = build_config(args)
    if args.eval_seeds is not None and args.eval_seeds < 1:
        raise InvalidArgument("eval-seeds", f"must be an integer >= 1, got {args.eval_seeds}")
    try:
        get_metric(config.metric)  # unknown names and malformed specs fail here
    except MetricUnavailable:
        pass  # needs a model: checked against the loaded one below

    model = load(args)
    metric = get_metric(config.metric, context=model)  # MetricUnavailable says what to load
    config.metric = metric
    embedding, embedding_file = resolve_prompt(model, args.prompt, args.negative)

    out = Path(args.out) if args.out else free_path(Path("out"), f"optimize_{slug(embedding.prompts[0])}", "")
    out.mkdir(parents=True, exist_ok=True)

    result = run_interruptible(
        lambda callback, cancel: optimize(model, embedding, config, callback=callback, cancel=cancel),
        config.iterations, f"optimize {metric.name}",
        lambda i, total, score, best: {"score": f"{score:.5g}", "best": f"{best:.5g}"})
    # What every iterate ran with (the model's own UNet: gradients flow), as the images record it.
    settings = result.settings
    seeds = list(config.seeds)

    # -- write the results ---------------------------------------------------------------
    paths: dict[str, str] = {}

    def sheet(images: torch.Tensor):
        from noise2art.sheet import contact_sheet

        pil = to_pil(images)
        if len(pil) == 1:
            return pil[0]
        return contact_sheet(pil, labels=[f"seed {s}" for s in seeds])

    for i, images in sorted(result.trajectory.items()):
        path = out / f"traj_{i:04d}.png"
        save_image(sheet(images), path)
        paths.setdefault("trajectory", [])
        paths["trajectory"].append(str(path))

    csv_path = out / "scores.csv"
    best_so_far = result.best_so_far()
    rows = ["iteration,score,seconds,best,adherence,distance"]
    rows += [f"{i},{s!r},{t:.6f},{b!r},{'' if a is None else repr(a)},{d!r}"
             for i, (s, t, b, a, d) in enumerate(zip(result.scores, result.seconds, best_so_far, result.adherence,
                                                     result.distance))]
    write_text(csv_path, "\n".join(rows) + "\n")
    paths["scores"] = str(csv_path)
    if result.scores:
        paths["plot"] = str(line_chart({"best so far": best_so_far, "score": result.scores}, out / "scores.png",
                                       title=f"{metric.name}: {embedding.prompts[0][:60]}",
                                       xlabel="iteration", ylabel=metric.name))

    best_path = result.embedding.save(out / "best.safetensors")
    paths["best"] = str(best_path)
    if result.initial_images is not None:
        paths["before"] = str(_save_result_image(sheet(result.initial_images), out / "before.png", seeds,
                                                 embedding, embedding_file, settings,
                                                 model.model_id, __version__))
    if result.best_images is not None:
        paths["after"] = str(_save_result_image(sheet(result.best_images), out / "after.png", seeds,
                                                result.embedding, str(best_path), settings, model.model_id,
                                                __version__))

    evaluation = None
    cancelled = result.stop_reason == CANCELLED
    if args.eval_seeds:
        # After a Ctrl-C the user wants out: the evaluation is skipped, its keys stay null.
        evaluation = dict(eval_seeds=None, eval_initial_mean=None, eval_initial_std=None, eval_best_mean=None,
                          eval_best_std=None)
    if args.eval_seeds and not cancelled:
        eval_seeds = unseen_seeds(result.seen_seeds() or seeds, args.eval_seeds)
        kwargs = dict(sampling=config.sampling)
        try:
            with InterruptFlag() as interrupted:
                init_mean, init_std, init_scores = evaluate_on_seeds(model, result.initial_embedding, metric,
                                                                     eval_seeds, cancel=interrupted, **kwargs)
                best_mean, best_std, best_scores = evaluate_on_seeds(model, result.embedding, metric, eval_seeds,
                                                                     cancel=interrupted, **kwargs)
            evaluation = dict(eval_seeds=eval_seeds, eval_initial_mean=init_mean, eval_initial_std=init_std,
                              eval_best_mean=best_mean, eval_best_std=best_std, eval_initial_scores=init_scores,
                              eval_best_scores=best_scores)
        except Cancelled:
            cancelled = True  # the optimisation's files are written; only the evaluation is missing

    summary = {
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "prompt": embedding.prompts[0],
        "seeds": seeds,
        "initial_score": result.initial_score,
        "best_score": result.best_score,
        "best_iteration": result.best_iteration,
        "final_score": result.scores[-1] if result.scores else math.nan,
        "iterations": result.iterations,
        "seconds": result.total_seconds,
        "stop_reason": result.stop_reason,
        "stop_message": result.stop_message,
        # What the picture kept: adherence to the named attributes, distance to the first image.
        "named": result.named,
        "initial_adherence": result.initial_picture.adherence if result.initial_picture else None,
        "best_adherence": result.best_picture.adherence if result.best_picture else None,
        "best_distance": result.best_picture.distance if result.best_picture else None,
        "config": {
            "mode": "reference" if args.reference else "unconstrained" if args.unconstrained else "default", "steps": settings.steps,
            "scheduler": settings.scheduler_label, "guidance": settings.guidance, "grad_steps": config.grad_steps, "renorm_every": config.renorm_every,
            "lr": config.lr, "loss_scale": config.loss_scale if config.loss_scale is not None else metric.loss_scale,
            "proximity": config.proximity, "adherence_weight": config.adherence_weight,
            "picture_weight": config.picture_weight,
            "adherence_floor": config.adherence_floor,
        },
        "out": str(out),
        "files": paths,
        **(evaluation or {}),
    }
    if result.stop_reason not in (COMPLETED, CANCELLED):
        print(f"warning: {result.stop_message}", file=sys.stderr)
    if args.json:
        emit_json(summary)
    else:
        change = percent_change(result.initial_score, result.best_score)
        print(f"{metric.name}: {result.initial_score:.5g} -> {result.best_score:.5g} "
              f"(iteration {result.best_iteration}, {change}) in {result.iterations} iterations, "
              f"{result.total_seconds:.1f} s; stopped: {result.stop_message}")
        if result.best_picture is not None:
            kept = result.best_picture
            adherence = ("n/a (the prompt names nothing the classifiers check)" if kept.adherence is None else
                         f"{result.initial_picture.adherence:.2f} -> {kept.adherence:.2f}")
            print(f"prompt adherence {adherence}; distance to the initial image {kept.distance:.3f}")
        if evaluation and evaluation["eval_seeds"]:
            print(f"on {len(evaluation['eval_seeds'])} unseen seeds: "
                  f"{evaluation['eval_initial_mean']:.5g} ± {evaluation['eval_initial_std']:.3g} -> "
                  f"{evaluation['eval_best_mean']:.5g} ± {evaluation['eval_best_std']:.3g}")
        print(f"results in {out}")
    return 130 if cancelled else 0


def _save_result_image(image, path, seeds, embedding, embedding_file, settings,
                       model_id, version) -> Path:
    """A single-seed image carries its generation parameters (so `generate --from` remakes it)."""
    if len(seeds) != 1:
        return save_image(image, path)
    from noise2art.pngmeta import GenerationParams, save_png

    params = GenerationParams.from_settings(
        settings, prompt=embedding.prompts[0], negative=embedding.negative[0], seed=seeds[0], model=model_id,
        version=version, embedding_hash=embedding.hash(), embedding_file=embedding_file, batch_seeds=list(seeds),
    )
    return save_png(image, params, path)
