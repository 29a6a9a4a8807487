"""`noise2art embed`, `noise2art interpolate` and `noise2art retrievability`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from noise2art.cli.common import (
    add_model_args,
    add_sampling_args,
    blend_embedding,
    emit_json,
    free_path,
    load,
    load_embedding_file,
    parse_blend,
    resolve_prompt,
    sampling_overrides,
    save_image,
    slug,
    step_progress,
    write_text,
)
from noise2art.errors import InvalidArgument
from noise2art.files import read_entries, write_bytes

DEFAULT_FPS = 12.0


# --------------------------------------------------------------------------- argument helpers


def parse_range(text: str) -> tuple[float, float]:
    """`"-0.2..1.2"` -> (-0.2, 1.2): finite numbers with lo < hi."""
    parts = str(text).split("..")
    if len(parts) != 2:
        raise InvalidArgument("range", f"expected LO..HI such as 0..1 or -0.2..1.2, got '{text}'")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidArgument("range", f"expected LO..HI with two numbers, got '{text}'") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidArgument("range", f"LO and HI must be finite numbers, got '{text}'")
    if not lo < hi:
        raise InvalidArgument("range", f"needs LO < HI, got '{text}'")
    return lo, hi


def parse_pairs(path: str) -> list[tuple[str, str]]:
    """A pairs file: one `A => B` per line, or JSON lines `{"a": ..., "b": ...}`; blank and `#` lines skipped."""
    pairs = []
    for number, line, obj in read_entries(path, "pairs"):
        if obj is not None:
            a, b = obj.get("a"), obj.get("b")
            if not (isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip()):
                raise InvalidArgument("pairs", f"line {number}: expected {{\"a\": \"prompt\", \"b\": \"prompt\"}}")
            pairs.append((a.strip(), b.strip()))
            continue
        parts = line.split("=>")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise InvalidArgument("pairs", f"line {number}: expected 'PROMPT A => PROMPT B', got '{line[:60]}'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    if not pairs:
        raise InvalidArgument("pairs", f"'{path}' holds no pairs")
    return pairs


def _add_path_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    p.add_argument("--seed-to", type=int, default=None,
                   help="second seed: the noise moves from --seed to this one along the path (seed slerp)")
    p.add_argument("--method", default="slerp", help="slerp (default), lerp or blend (std-preserving lerp)")
    p.add_argument("--range", default="0..1",
                   help="LO..HI global alphas of the first and last frame, e.g. --range=-0.2..1.2 to extrapolate "
                        "(write it with '=' when LO is negative)")
    p.add_argument("--negative", default="", help="negative prompt for the text keyframes")
    add_sampling_args(p, batch="frames")


def _config(args, frames: int):
    """An `InterpolationConfig` from the shared arguments (validated here, before any model loads)."""
    from noise2art.methods.interpolate import InterpolationConfig

    return InterpolationConfig(frames=frames, method=args.method, range=parse_range(args.range), seed=args.seed,
                               seed_to=args.seed_to, sampling=sampling_overrides(args))


def _preload_files(prompts: list[str]) -> dict[int, object]:
    """Read every `@file.safetensors` keyframe now, and check them against each other, before loading weights."""
    files = {i: load_embedding_file(p) for i, p in enumerate(prompts) if p.startswith("@")}
    items = list(files.values())
    for other in items[1:]:
        items[0].check_compatible(other)
    return files


def _keyframes(model, prompts: list[str], files: dict, negative: str):
    return [files[i] if i in files else resolve_prompt(model, p, negative)[0] for i, p in enumerate(prompts)]


def _out_folder(args, stem: str) -> Path:
    """`--out` as given, or a fresh `out/<stem>` (`_1`, `_2`, ... if taken) so no result is overwritten."""
    if args.out:
        out = Path(args.out).expanduser()
    else:
        out = free_path(Path("out"), stem, "")
    if out.exists() and not out.is_dir():
        raise InvalidArgument("out", f"'{out}' exists and is not a folder")
    return out


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument("out", f"cannot create '{out}' ({exc.strerror or exc})") from None


def _builds(frames: int) -> int:
    """`Model.sample` rounds a render of `frames` frames takes (one per build of frames)."""
    from noise2art.methods.interpolate import FRAMES_PER_BUILD

    return math.ceil(frames / FRAMES_PER_BUILD)


def _render_settings(model, config):
    """The `SampleSettings` the renders will use."""
    return model.resolve(config.sampling)


# --------------------------------------------------------------------------- register


def register(subparsers) -> None:
    e = subparsers.add_parser("embed", help="save a prompt's (or a blend's) embedding as .safetensors",
                              description="Encode a prompt, or a weighted blend of prompts, and save the embedding "
                                          "as a .safetensors artifact that any command takes as @file.safetensors.")
    e.add_argument("prompt", nargs="?", default=None, help="the prompt (or @file.safetensors)")
    e.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    e.add_argument("--negative", default="", help="negative prompt")
    e.add_argument("--blend", default=None,
                   help="weighted blend instead of a prompt: 'a red ball:0.7,a blue cube:0.3' (weights normalised to sum 1)")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_model_args(e)
    e.set_defaults(func=run_embed)

    p = subparsers.add_parser("interpolate", help="animate a path between prompts (and seeds)",
                              description="Render frames along a path through prompt embeddings (and between two "
                                          "seeds' noise) as GIF / MP4 / PNG frames / contact sheet, with manifest.json.")
    p.add_argument("prompts", nargs="+", metavar="PROMPT",
                   help="keyframes A B [C ...] (text or @file.safetensors); one keyframe needs --seed-to")
    p.add_argument("--frames", type=int, default=24, help="number of frames in total, 2..10000 (default 24)")
    _add_path_args(p)
    p.add_argument("--constant-speed", action="store_true",
                   help="re-time the frames so each step changes the image by the same amount")
    p.add_argument("--refine", type=int, default=None,
                   help="with --constant-speed: extra renders spent where the image jumps (default: frames / 2)")
    p.add_argument("--format", action="append", default=None,
                   help="gif, mp4, png (frames) or sheet; repeatable or a comma list (default gif,sheet)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames per second of GIF / MP4 (default {DEFAULT_FPS:g})")
    p.add_argument("--out", default=None, help="output folder (default: a new folder under ./out)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_model_args(p)
    p.set_defaults(func=run_interpolate)

    r = subparsers.add_parser("retrievability", help="image-space speed along an interpolation: jumps and basins",
                              description="Render the path A -> B at fine alphas, measure how fast the image changes, "
                                          "and report jumps and stable basins (speed.csv, a speed plot, JSON).")
    r.add_argument("a", nargs="?", default=None, help="prompt A (or @file.safetensors)")
    r.add_argument("b", nargs="?", default=None, help="prompt B (or @file.safetensors)")
    r.add_argument("--pairs", default=None, help="file of pairs: 'A => B' per line, or JSON lines {\"a\":..,\"b\":..}")
    r.add_argument("--fine", type=int, default=64, help="samples along each path (default 64)")
    r.add_argument("--jump-factor", type=float, default=3.0,
                   help="a step is a jump when its speed exceeds this times the median speed (default 3)")
    _add_path_args(r)
    r.add_argument("--out", default=None, help="output folder (default: a new folder under ./out)")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="render the pairs on a Ray cluster, one pair per task: local, auto or an address; "
                        "needs pip install -e \".[cluster]\"")
    add_model_args(r)
    r.set_defaults(func=run_retrievability)


# --------------------------------------------------------------------------- embed


def run_embed(args) -> int:
    if (args.prompt is None) == (args.blend is None):
        raise InvalidArgument("prompt", "give either a prompt or --blend (not both)")
    output = Path(args.output).expanduser()
    if output.suffix != ".safetensors":
        raise InvalidArgument("output", f"embeddings are saved as .safetensors, got '{output.name}'")
    pairs = parse_blend(args.blend) if args.blend is not None else None
    for prompt, _ in pairs or [(args.prompt, 1.0)]:
        if prompt.startswith("@"):
            load_embedding_file(prompt, "blend" if pairs else "prompt")
    model = load(args)
    if pairs is not None:
        emb = blend_embedding(model, pairs, args.negative)
    else:
        emb = resolve_prompt(model, args.prompt, args.negative)[0]
        emb = model.as_embedding(emb)
    path = emb.save(output)
    record = {"path": str(path), "model": emb.model_id, "prompt": emb.prompts[0], "negative": emb.negative[0],
              "shape": list(emb.shape), "hash": emb.hash()}
    if pairs is not None:
        record["blend"] = [{"prompt": p, "weight": w} for p, w in pairs]
    if args.json:
        emit_json(record)
    else:
        print(path)
    return 0


# --------------------------------------------------------------------------- interpolate


def run_interpolate(args) -> int:
    import torch

    from noise2art import media
    from noise2art.methods.interpolate import InterpolationPath
    from noise2art.methods.retime import RetimeConfig, retime

    # 1. Everything cheap is checked before any weights load.
    formats = media.parse_formats(args.format, default=("gif", "sheet"))
    fps = media.check_fps(args.fps)
    config = _config(args, args.frames)
    retime_config = None
    if args.constant_speed:
        refine = args.refine if args.refine is not None else max(4, args.frames // 2)
        retime_config = RetimeConfig(refine=refine)
    elif args.refine is not None:
        raise InvalidArgument("refine", "only applies with --constant-speed")
    if len(args.prompts) == 1 and args.seed_to is None:
        raise InvalidArgument("prompts", "give two or more keyframes, or one keyframe with --seed-to")
    files = _preload_files(args.prompts)
    out = _out_folder(args, f"interpolate-{slug(args.prompts[0], 24)}--{slug(args.prompts[-1], 24)}")

    # 2. Model, keyframes, and the path (which checks the keyframes against each other and the model).
    model = load(args)
    keyframes = _keyframes(model, args.prompts, files, args.negative)
    path = InterpolationPath(model, keyframes, config)
    settings = _render_settings(model, config)

    # 3. Render.
    calls = _builds(config.frames)
    if retime_config is not None:
        # An upper bound: refinement may stop early and reuse frames.
        per_round = config.sampling.batch_size or 8
        calls += math.ceil(retime_config.refine / per_round) + calls
    with torch.no_grad(), step_progress("interpolate", calls) as progress:
        alphas = path.plan()
        result = path.result(alphas, path.render(alphas, callback=progress))
        ratios = {}
        if retime_config is not None:
            timed = retime(model, keyframes, config, retime_config, initial=result, callback=progress)
            result = timed.interpolation
            ratios = {"ratio_before": timed.ratio_before, "ratio_after": timed.ratio_after,
                      "refine_renders": timed.plan.refine_renders}

    # 4. Write: media first, each to a temporary name; the manifest last.
    _make_folder(out)
    frames = media.to_frames(result.images)
    labels = [f"{a:.3f}" for a in result.alphas.tolist()]
    files_out: dict[str, object] = {}
    frame_files: list[str | None] = [None] * len(frames)
    for fmt in formats:
        if fmt == "gif":
            files_out["gif"] = str(media.write_gif(frames, out / "interpolation.gif", fps))
        elif fmt == "mp4":
            files_out["mp4"] = str(media.write_mp4(frames, out / "interpolation.mp4", fps))
        elif fmt == "png":
            written = media.write_png_frames(frames, out / "frames")
            frame_files = [str(p) for p in written]
            # A longer earlier run into the same folder would leave frames this manifest does not list.
            for stale in set((out / "frames").glob("frame_*.png")) - set(written):
                stale.unlink()
            files_out["png"] = str(out / "frames")
        elif fmt == "sheet":
            files_out["sheet"] = str(media.write_sheet(frames, out / "sheet.png", labels=labels))
    records = result.frame_records()
    for record, file in zip(records, frame_files):
        record["file"] = file
    manifest = {
        "command": "interpolate",
        "model": model.model_id,
        "keyframes": [{"prompt": k.prompts[0], "negative": k.negative[0], "source": p if p.startswith("@") else "",
                       "embedding_hash": k.hash()} for k, p in zip(path.keyframes, args.prompts)],
        "method": config.method, "range": list(config.range), "seed": config.seed, "seed_to": config.seed_to,
        "steps": settings.steps, "guidance": settings.guidance, "scheduler": settings.scheduler_label,
        "scheduler_class": settings.scheduler_class,
        "width": path.width, "height": path.height, "fps": fps, "constant_speed": bool(args.constant_speed),
        **ratios, "files": files_out, "frames": records,
    }
    manifest_path = write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    if args.json:
        emit_json({"frames": len(records), "alphas": [r["alpha"] for r in records], "manifest": str(manifest_path),
                   "out": str(out), "files": files_out, **ratios})
    else:
        for value in files_out.values():
            print(value)
        print(manifest_path)
        if ratios:
            print(f"max/mean step ratio: {ratios['ratio_before']:.2f} -> {ratios['ratio_after']:.2f}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- retrievability


def run_retrievability(args) -> int:
    import torch

    from noise2art import media
    from noise2art.methods.retrievability import RetrievabilityConfig, retrievability, summarize

    # 1. Cheap checks first.
    if args.pairs is not None:
        if args.a is not None or args.b is not None:
            raise InvalidArgument("pairs", "give either A B or --pairs FILE, not both")
        pairs = parse_pairs(args.pairs)
    else:
        if args.a is None or args.b is None:
            raise InvalidArgument("prompts", "give two prompts A B (or --pairs FILE)")
        pairs = [(args.a, args.b)]
    config = _config(args, 2)
    study = RetrievabilityConfig(fine=args.fine, jump_factor=args.jump_factor)
    if getattr(args, "ray", None) is not None:
        from noise2art.cluster import require_ray
        from noise2art.cluster.runtime import check_address

        check_address(args.ray)
        require_ray()
    files = _preload_files([p for pair in pairs for p in pair])
    stem = f"retrievability-{slug(pairs[0][0], 24)}--{slug(pairs[0][1], 24)}" if len(pairs) == 1 else "retrievability-study"
    out = _out_folder(args, stem)

    # 2. Model and every pair's keyframes (checked against the model before anything renders).
    model = load(args)
    flat = _keyframes(model, [p for pair in pairs for p in pair], files, args.negative)
    keyed = [(flat[2 * k], flat[2 * k + 1]) for k in range(len(pairs))]
    from noise2art.methods.interpolate import InterpolationPath

    for a, b in keyed:
        InterpolationPath(model, [a, b], config)
    steps = _render_settings(model, config).steps
    # 3. Render and measure each path.
    results = []
    if getattr(args, "ray", None) is not None:
        from tqdm import tqdm

        from noise2art.cluster.runtime import ModelSpec, connected
        from noise2art.cluster.studies import retrievability_on_ray

        with connected(args.ray), tqdm(total=len(keyed), desc="retrievability", unit="pair", file=sys.stderr,
                                       leave=False) as bar:
            results = retrievability_on_ray(ModelSpec.from_args(args), keyed, config, study,
                                            progress=lambda n: bar.update(n - bar.n))
    else:
        with torch.no_grad(), step_progress("retrievability", len(pairs) * _builds(study.fine)) as progress:
            for a, b in keyed:
                results.append(retrievability(model, a, b, config, study, callback=progress))

    # 4. Write the CSV, the plots and the JSON record.
    _make_folder(out)
    csv_path = out / "speed.csv"
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["pair", "a", "b", "step", "alpha_start", "alpha_end", "distance", "speed", "jump"])
    for k, res in enumerate(results):
        prof = res.profile
        jumps = set(prof.jumps)
        for i in range(prof.distances.shape[0]):
            w.writerow([k, res.prompts[0], res.prompts[1], i, f"{float(prof.alphas[i]):.6f}",
                        f"{float(prof.alphas[i + 1]):.6f}", f"{float(prof.distances[i]):.6g}",
                        f"{float(prof.speeds[i]):.6g}", int(i in jumps)])
    write_bytes(csv_path, rows.getvalue().encode("utf-8"))
    plots = []
    for k, res in enumerate(results):
        prof = res.profile
        image = media.plot_speed(prof.alphas.tolist(), prof.speeds.tolist(), threshold=prof.threshold, jumps=prof.jumps,
                                 basins=[(b.start, b.end) for b in prof.basins],
                                 title=f"speed: {res.prompts[0]} -> {res.prompts[1]}")
        name = "speed.png" if len(results) == 1 else f"speed_{k:03d}.png"
        plots.append(str(save_image(image, out / name)))
    sheet = None
    if len(results) == 1 and results[0].images is not None:
        prof = results[0].profile
        sheet = str(media.write_sheet(results[0].images, out / "frames.png",
                                      labels=[f"{a:.3f}" for a in prof.alphas.tolist()]))
    per_pair = [{**res.summary(), "plot": plot} for res, plot in zip(results, plots)]
    record = {
        "model": model.model_id, "method": config.method, "range": list(config.range), "seed": config.seed,
        "seed_to": config.seed_to, "steps": steps, "fine": study.fine, "jump_factor": study.jump_factor,
        "csv": str(csv_path), "out": str(out),
    }
    if len(results) == 1:
        record.update(per_pair[0])
        record["frames"] = sheet
    else:
        record["pairs"] = per_pair
        record["summary"] = summarize(results).to_dict()
    json_path = write_text(out / "retrievability.json", json.dumps(record, indent=2) + "\n")
    record["json"] = str(json_path)
    if args.json:
        emit_json(record)
    else:
        print(csv_path)
        for plot in plots:
            print(plot)
        print(json_path)
        if len(results) == 1:
            r0 = results[0]
            print(f"max/mean step ratio {r0.max_mean_ratio:.2f}; {len(r0.basins)} basins, "
                  f"largest holds {r0.profile.largest_basin_share:.0%} of the path", file=sys.stderr)
        else:
            s = summarize(results)
            print(f"{s.pairs} pairs: max/mean ratio mean {s.max_mean_ratio.mean:.2f}, median {s.max_mean_ratio.median:.2f}, "
                  f"max {s.max_mean_ratio.max:.2f}", file=sys.stderr)
    return 0
