"""`noise2art world train|export|eval`: training, packaging and evaluating the embedded model.

These subcommands hang under `noise2art world` (see `cli/world.py`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from noise2art.errors import InvalidArgument

STAGES = ("autoencoder", "unet", "clip", "aesthetic", "attributes", "all", "fast")


def add_train(world_sub) -> None:
    p = world_sub.add_parser(
        "train", help="train one network of the embedded model (resumable)",
        description="Train a network of the embedded model. Runs live in --runs/<stage>; an interrupted run "
        "resumes from its last checkpoint when started again with the same arguments. Uses a GPU when present.",
    )
    p.add_argument("stage", choices=STAGES, help="which network ('all' trains the full model's in order; 'fast' "
                   "distils the few-step student world-64-fast from an exported model, see --teacher)")
    p.add_argument("--runs", default="runs", help="folder of the run folders and the rendered data (default ./runs)")
    p.add_argument("--n-images", type=int, default=30000, help="rendered training images (default 30000)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the stage's own)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the stage's own)")
    p.add_argument("--init-from", default=None,
                   help="unet: start from this exported model folder's UNet (e.g. src/noise2art/models/world-64); "
                   "fast: start the student from this model's UNet (e.g. world-64-fast, to fine-tune it) instead "
                   "of the teacher's")
    p.add_argument("--detail", type=float, default=None, metavar="W",
                   help="fast: count the error on the clean latents' finest scale 1 + W times (default 0)")
    p.add_argument("--focus", default=None, metavar="FAMILY=W,...",
                   help="unet, fast: draw captions (fast: trajectories) naming these attribute families W "
                   "times as often (e.g. snow=3,color=2)")
    p.add_argument("--teacher", default=None,
                   help="fast: the model to distil (registry name, default world-64); its trajectories are "
                   "written to --runs/fast/trajectories first")
    p.add_argument("--n-trajectories", type=int, default=None,
                   help="fast: teacher trajectories to distil from (default 8192)")
    p.set_defaults(func=_train)


def add_export(world_sub) -> None:
    p = world_sub.add_parser("export", help="assemble trained runs into a model folder that load_model reads")
    p.add_argument("--runs", default="runs", help="folder of the run folders (default ./runs)")
    p.add_argument("--out", required=True, help="model folder to write (replaced atomically)")
    p.add_argument("--n-images", type=int, default=30000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--notes", default=None, help="JSON object of training notes (wall times, hardware) to record")
    p.add_argument("--fast", action="store_true",
                   help="export the few-step student of --runs/fast (its UNet and defaults; the rest comes from "
                   "its teacher, named as the folder's base)")
    p.set_defaults(func=_export)


def add_eval(world_sub) -> None:
    from noise2art.cli.common import add_model_args, add_sampling_args

    p = world_sub.add_parser(
        "eval", help="prompt adherence, diversity and Frechet distance of a model on the world",
        description="Generate images for held-out prompts and score them with the attribute classifiers.",
    )
    p.add_argument("--prompts", default=None, help="text file, one prompt per line, or JSONL with prompt/attributes "
                   "(default: 40 held-out captions)")
    p.add_argument("--n-prompts", type=int, default=40, help="held-out prompts when --prompts is not given")
    p.add_argument("--seeds", type=int, default=8, help="seeds per prompt (default 8)")
    add_sampling_args(p, size=False, batch="images")
    p.add_argument("--no-frechet", action="store_true", help="skip the Frechet distance")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="render the prompts on a Ray cluster, one prompt per task (the Frechet distance is then "
                        "not computed); needs pip install -e \".[cluster]\"")
    add_model_args(p)
    p.set_defaults(func=_eval)


def _plan(args):
    from noise2art.world.training.pipeline import Plan

    if args.n_images < 1:
        raise InvalidArgument("n-images", f"must be >= 1, got {args.n_images}")
    return Plan(root=args.runs, n_images=args.n_images, size=args.size)


def _override(cfg, args):
    names = {f.name for f in fields(cfg)}
    if args.steps is not None:
        if args.steps < 1:
            raise InvalidArgument("steps", f"must be >= 1, got {args.steps}")
        cfg.steps = args.steps
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise InvalidArgument("batch-size", f"must be >= 1, got {args.batch_size}")
        if "batch_size" in names:
            cfg.batch_size = args.batch_size
    return cfg


def _check_unet_only(args) -> None:
    """Options that shape one stage's training only would be ignored elsewhere, so refuse them there."""
    only = {("unet", "all", "fast"): (("--focus", args.focus), ("--init-from", args.init_from)),
            ("fast",): (("--teacher", args.teacher), ("--n-trajectories", args.n_trajectories),
                        ("--detail", args.detail))}
    for stages, flags in only.items():
        if args.stage in stages:
            continue
        for flag, value in flags:
            if value is not None:
                raise InvalidArgument(flag, f"only the {' or '.join(repr(s) for s in stages)} stage uses it, "
                                      f"not '{args.stage}'")


def _distill_config(args):
    from noise2art.engine import registry
    from noise2art.world.training.distill import DistillConfig, run_config

    run_dir = Path(args.runs) / "fast"
    # A resume goes on with the run's own settings (trajectory count, length, focus) unless told otherwise.
    cfg = run_config(run_dir) if (run_dir / "config.json").is_file() else DistillConfig()
    cfg.run_dir = str(run_dir)  # where the run is now, even if its folder moved
    if args.teacher is not None:
        if registry.canonical_name(args.teacher) is None:
            raise InvalidArgument("teacher", f"unknown embedded model {args.teacher!r}; known: "
                                  f"{', '.join(registry.known_names())}")
        cfg.teacher = args.teacher
    if args.n_trajectories is not None:
        if args.n_trajectories < 1:
            raise InvalidArgument("n-trajectories", f"must be >= 1, got {args.n_trajectories}")
        cfg.n_trajectories = args.n_trajectories
    if args.focus is not None:
        cfg.focus = _parse_focus(args.focus)
    if args.init_from is not None:
        cfg.init_from = args.init_from
    if args.detail is not None:
        if not args.detail >= 0:
            raise InvalidArgument("detail", f"must be a number >= 0, got {args.detail}")
        cfg.detail_weight = args.detail
    return _override(cfg, args)


def _train(args) -> int:
    from noise2art.world.training import autoencoder, companions, unet

    _check_unet_only(args)
    if args.stage == "fast":
        from noise2art.world.training import distill

        distill.train(_distill_config(args))
        return 0
    plan = _plan(args)
    stages = ["autoencoder", "unet", "clip", "aesthetic", "attributes"] if args.stage == "all" else [args.stage]
    clip = None
    for stage in stages:
        if stage == "autoencoder":
            autoencoder.train(_override(plan.autoencoder(), args))
        elif stage == "unet":
            cfg = _override(plan.unet(), args)
            cfg.init_from = args.init_from
            cfg.focus = _parse_focus(args.focus)
            unet.train(cfg)
        elif stage == "clip":
            clip = companions.train_clip(_override(plan.clip(), args))
        elif stage == "aesthetic":
            if clip is None:
                clip = _trained_clip(plan)
            companions.train_aesthetic(_override(plan.aesthetic(), args), clip)
        elif stage == "attributes":
            _, accuracy = companions.train_attributes(_override(plan.attributes(), args))
            Path(plan.dirs()["attributes"], "accuracy.json").write_text(json.dumps(accuracy, indent=2))
            print(json.dumps({"attribute_accuracy": accuracy}))
    return 0


def _parse_focus(text: str | None) -> dict:
    """`"snow=3,color=2"` -> `{"snow": 3.0, "color": 2.0}`, checked before any data loads."""
    from noise2art.world.training.unet import check_focus

    if not text:
        return {}
    focus = {}
    for item in text.split(","):
        family, _, weight = item.strip().partition("=")
        try:
            focus[family] = float(weight)
        except ValueError:  # also a missing "=", which leaves WEIGHT empty
            raise InvalidArgument("focus", f"expected FAMILY=WEIGHT with a number for WEIGHT, got {item!r}") from None
    return check_focus(focus)


def _trained_clip(plan):
    from noise2art.engine.companion_nets import WorldClip
    from noise2art.world.training.checkpoint import load_checkpoint

    ckpt = Path(plan.dirs()["clip"]) / "checkpoint"
    if not ckpt.is_dir():
        raise InvalidArgument("stage", "the aesthetic head trains on world CLIP: train 'clip' first")
    clip = WorldClip(plan.clip().model)
    load_checkpoint(ckpt, {"clip": clip})
    return clip.eval()


def _export(args) -> int:
    from noise2art.world.training.pipeline import export

    notes = {}
    if args.notes:
        try:
            notes = json.loads(args.notes)
        except json.JSONDecodeError as exc:
            raise InvalidArgument("notes", f"not a JSON object: {exc}") from None
    if args.fast:
        from noise2art.world.training.distill import export_student, run_config

        out = export_student(run_config(Path(args.runs) / "fast"), args.out, notes)
    else:
        out = export(_plan(args), args.out, notes)
    print(out)
    return 0


def _eval(args) -> int:
    from tqdm import tqdm

    from noise2art.cli.common import emit_json, load, sampling_overrides
    from noise2art.world.evaluation import evaluate, held_out_prompts, read_prompts

    if args.seeds < 1 or args.seeds > 1000:
        raise InvalidArgument("seeds", f"must be in [1, 1000], got {args.seeds}")
    if args.prompts:
        prompts = read_prompts(args.prompts)
    else:
        if args.n_prompts < 1:
            raise InvalidArgument("n-prompts", f"must be >= 1, got {args.n_prompts}")
        from noise2art.world.captions import parse

        prompts = [(p, parse(p)) for p in held_out_prompts(args.n_prompts)]
    sampling = sampling_overrides(args)
    if getattr(args, "ray", None) is not None:
        from noise2art.cluster import require_ray
        from noise2art.cluster.runtime import ModelSpec, check_address, connected
        from noise2art.cluster.studies import evaluate_on_ray

        check_address(args.ray)
        require_ray()
        if not args.no_frechet:
            print("noise2art world eval: with --ray the Frechet distance is not computed (run in-process for it)",
                  file=sys.stderr)
        bar = tqdm(total=len(prompts), desc="world eval", unit="prompt", file=sys.stderr, leave=False)
        with connected(args.ray):
            report = evaluate_on_ray(ModelSpec.from_args(args), prompts, seeds=args.seeds, sampling=sampling,
                                     progress=lambda k, n: bar.update(1))
        bar.close()
    else:
        model = load(args)
        bar = tqdm(total=len(prompts), desc="world eval", unit="prompt", file=sys.stderr, leave=False)
        report = evaluate(model, prompts, seeds=args.seeds, sampling=sampling, frechet=not args.no_frechet,
                          progress=lambda k, n: bar.update(1))
        bar.close()
    if args.json:
        emit_json(report.to_json())
        return 0
    print(f"prompts {report.n_prompts}, images {report.n_images}")
    print(f"mean adherence  {report.mean_adherence:.3f}")
    for fam, share in report.per_family.items():
        print(f"  {fam:<11} {share:.3f}")
    print(f"diversity of unnamed attributes  {report.diversity:.3f}")
    if report.frechet is not None:
        print(f"Frechet distance (world CLIP)  {report.frechet:.4f}")
    return 0
