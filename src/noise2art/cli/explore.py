"""`noise2art explore`: iterative human feedback in the terminal (pick a variant, move toward it).

Each round writes a contact sheet (the current image, then candidates 1..n) and a 2-D
map of the session into the session folder and prints their paths; the user answers
with a candidate number and a strength (``3 0.5``), ``u`` to undo or ``q`` to quit. Every
choice is saved before the next round is rendered, so ``--session DIR`` resumes after a
quit or a crash. ``--auto-target PROMPT`` lets a simulated user with that hidden target
choose instead, and compares it with prompt rewriting.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from noise2art.cli.common import (add_model_args, add_sampling_args, emit_json, free_path, load, sampling_overrides,
                                  save_image, slug,
                                  step_progress)
from noise2art.errors import InvalidArgument

HELP = ("answer with a candidate number and a strength in [0, 1] (e.g. '3 0.5'; the strength defaults to 0.5), "
        "'u' to undo the last choice, 'q' to quit (the session is saved after every choice)")

# Flag -> FeedbackConfig field, for the flags that shape a session's candidates.
CONFIG_FLAGS = {
    "variants": "n_variants",
    "similarity": "similarity",
    "pool_size": "pool_size",
    "step_rule": "step_rule",
    "recommender": "recommender",
    "beta": "beta",
    "session_seed": "session_seed",
}
# Sampling flags (`common.add_sampling_args`) -> fields of `FeedbackConfig.sampling`.
SAMPLING_FLAGS = ("steps", "guidance", "scheduler", "batch_size", "precision")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explore", help="iterative feedback: pick one of several variants, move the prompt embedding toward it",
        description="Show the current image and candidate variants (all from the same hidden noise, so they differ "
                    "only by prompt embedding); the chosen one pulls the embedding toward it by a strength you give. "
                    "Sessions live in a folder and resume from it.")
    p.add_argument("prompt", nargs="?", default=None, help="the start prompt (not needed to resume a --session)")
    p.add_argument("--negative", default=None, help="negative prompt (default none)")
    p.add_argument("--seed", type=int, default=None, help="the hidden noise seed (default 0)")
    p.add_argument("--session", default=None,
                   help="session folder: resumed if it holds a session, else created (default: a new folder in --out)")
    p.add_argument("--out", default="out", help="where a new session folder is made without --session (default ./out)")
    p.add_argument("--variants", type=int, default=None, help="candidates per round (default 5)")
    p.add_argument("--similarity", type=float, default=None,
                   help="target similarity of each candidate to the current embedding (default 0.72)")
    p.add_argument("--pool-size", type=int, default=None, help="random prompts in the candidate pool (default 500)")
    p.add_argument("--step-rule", choices=("exact", "reference"), default=None,
                   help="exact: solve the step for the target similarity (default); reference: t=(1-s)/(1-cos)")
    p.add_argument("--recommender", choices=("random", "bo", "terms"), default=None,
                   help="bo: a GP-UCB recommender that learns from your choices (default: it ends nearest the "
                        "target in docs/feedback.md); random: the reference's candidates; terms: candidates that "
                        "add, swap or drop terms, learning which ones you favour")
    p.add_argument("--beta", type=float, default=None, help="bo recommender: exploration weight (default 2)")
    p.add_argument("--session-seed", type=int, default=None, help="seed of the candidates (default: --seed)")
    p.add_argument("--auto-target", default=None, metavar="PROMPT",
                   help="a simulated user with this hidden target prompt chooses (nearest candidate, strength "
                        "--strength) and prompt rewriting runs as a baseline")
    p.add_argument("--rounds", type=int, default=10, help="rounds of --auto-target (default 10)")
    p.add_argument("--strength", type=float, default=0.5, help="strength of the simulated user's choices (default 0.5)")
    p.add_argument("--no-baseline", action="store_true", help="with --auto-target: skip the prompt-rewriting baseline")
    p.add_argument("--json", action="store_true", help="with --auto-target: print one JSON object on stdout")
    add_sampling_args(p, size=False, batch="images (default: current + candidates in one batch)")
    add_model_args(p)
    p.set_defaults(func=run_explore)


def build_config(args):
    """A `FeedbackConfig` from the flags, checked (no model needed)."""
    from noise2art.methods.feedback import FeedbackConfig

    config = FeedbackConfig()
    for flag, name in CONFIG_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(config, name, value)
    config.sampling = config.sampling.merged(sampling_overrides(args))
    return config.check()


def _check_resume_flags(args, state: dict, folder: Path) -> None:
    """Flags that contradict the stored session are an error, not silently ignored."""
    from noise2art.methods.feedback import FeedbackConfig

    defaults = FeedbackConfig()  # a setting newer than the session file has its default there
    stored_config = FeedbackConfig.from_dict(state["config"])
    given = [(flag, getattr(args, flag), state["config"].get(name, getattr(defaults, name)))
             for flag, name in CONFIG_FLAGS.items()]
    given += [(flag, getattr(args, flag), getattr(stored_config.sampling, flag)) for flag in SAMPLING_FLAGS]
    for flag, value, stored in given:
        if value is not None and value != stored:
            raise InvalidArgument(flag.replace("_", "-"), f"the session in '{folder}' uses {stored!r}, got {value!r}; "
                                                          "omit the flag to resume it")
    for flag, key in (("prompt", "prompt"), ("seed", "seed"), ("negative", "negative")):
        value = getattr(args, flag)
        if value is not None and value != state[key]:
            raise InvalidArgument(flag, f"the session in '{folder}' was started with {state[key]!r}, got {value!r}; "
                                        "omit it to resume the session")


def _save_png(image, path: Path) -> Path:
    return save_image(image, path)


def _pool_progress():
    """A `(done, total)` callback drawing a bar on stderr, created on its first call (the first round only)."""
    from tqdm import tqdm

    bar = None

    def update(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="encoding the candidate pool", unit="prompt", file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _render_round(session, folder: Path):
    """Render one round; write its contact sheet and the map. Returns (variants, sheet path, map path)."""
    from noise2art.engine.model import to_pil
    from noise2art.plot import save_map_png
    from noise2art.sheet import contact_sheet

    with step_progress(f"round {session.round}") as progress:  # one batched call per round
        variants = session.variants(callback=progress, pool_callback=_pool_progress())
    labels = ["current"] + [f"{i + 1} ({float(s):.2f})" for i, s in enumerate(variants.similarity)]
    sheet = contact_sheet(to_pil(variants.images), cols=len(labels), labels=labels)
    sheet_path = _save_png(sheet, folder / f"round_{session.round:04d}.png")
    map_path = save_map_png(session.map(), folder / "map.png")
    return variants, sheet_path, map_path


def _parse_answer(line: str, n: int) -> tuple[str, int, float]:
    """``"3 0.5"`` -> ("choose", 2, 0.5); ``"u"`` -> ("undo", ...); ``"q"`` -> ("quit", ...)."""
    words = line.strip().lower().replace(",", " ").split()
    if not words:
        raise InvalidArgument("answer", HELP)
    if words[0] in ("q", "quit", "exit"):
        return "quit", -1, math.nan
    if words[0] in ("u", "undo"):
        return "undo", -1, math.nan
    if words[0] in ("h", "help", "?"):
        raise InvalidArgument("answer", HELP)
    if len(words) > 2:
        raise InvalidArgument("answer", f"expected a candidate number and a strength, got '{line.strip()}'")
    try:
        choice = int(words[0])
    except ValueError:
        raise InvalidArgument(
            "choice", f"must be a candidate number in [1, {n}], 'u' or 'q', got '{words[0]}'"
        ) from None
    if not 1 <= choice <= n:
        raise InvalidArgument("choice", f"must be a candidate number in [1, {n}], got {choice}")
    strength = 0.5
    if len(words) == 2:
        try:
            strength = float(words[1])
        except ValueError:
            raise InvalidArgument("strength", f"must be a number in [0, 1], got '{words[1]}'") from None
        if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
            raise InvalidArgument("strength", f"must be a number in [0, 1], got {words[1]}")
    return "choose", choice - 1, strength


def _interactive(session, folder: Path) -> int:
    n = session.config.n_variants
    while True:
        variants, sheet_path, map_path = _render_round(session, folder)
        sims = " ".join(f"{float(s):.3f}" for s in variants.similarity)
        target = variants.target_similarity
        print(f"round {session.round}: {sheet_path}  (map: {map_path})")
        print(f"  similarity of candidates 1..{n} to the current embedding: {sims}"
              + (f" (target {target:g})" if target is not None else ""))
        if variants.candidates.edits is not None:
            print("  candidates: " + "; ".join(f"{i + 1} {src}" for i, src in enumerate(variants.candidates.sources)))
        while True:
            try:
                line = input(f"choice 1-{n} and strength, u = undo, q = quit > ")
            except EOFError:
                line = "q"
            try:
                action, index, strength = _parse_answer(line, n)
                if action == "quit":
                    print(f"session saved in {folder}; current embedding: {folder / 'current.safetensors'}")
                    print(f"resume with: noise2art explore --session {folder}")
                    return 0
                if action == "undo":
                    entry = session.undo()
                    print(f"undid the choice of round {entry.round}")
                else:
                    entry = session.choose(index, strength)
                    print(f"moved {strength:g} of the way toward candidate {index + 1}")
                break
            except InvalidArgument as exc:
                print(f"error: {exc}", file=sys.stderr)


def _auto_target(args, session, model, folder: Path) -> int:
    import torch

    from noise2art.engine.model import to_pil
    from noise2art.methods.simulated_user import render_target, simulate_feedback, simulate_prompt_rewriting
    from noise2art.sheet import contact_sheet

    kwargs = session.config.sample_kwargs()
    noise = model.initial_noise([session.seed])
    target_image = render_target(model, args.auto_target, noise, **kwargs)
    start_image = session.render_current()
    ours = simulate_feedback(session, target_image, rounds=args.rounds, strength=args.strength)
    baseline = None
    if not args.no_baseline:
        baseline = simulate_prompt_rewriting(model, session.prompt, target_image, noise, rounds=args.rounds,
                                             images_per_round=session.config.n_variants + 1, seed=session.session_seed,
                                             batch_size=session.config.sampling.batch_size, **kwargs)
    images = torch.cat([target_image, start_image, ours.final_image])
    sheet = contact_sheet(to_pil(images), cols=3, labels=["target", "start", "final"])
    sheet_path = _save_png(sheet, folder / "auto_target.png")
    d0 = ours.distances[0]
    summary = {
        "prompt": session.prompt,
        "target": args.auto_target,
        "seed": session.seed,
        "session": str(folder),
        "rounds": args.rounds,
        "strength": args.strength,
        "distances": ours.distances,
        "baseline_distances": baseline.distances if baseline else None,
        "baseline_prompts": baseline.prompts if baseline else None,
        "relative_final": ours.distances[-1] / d0 if d0 > 0 else None,
        "baseline_relative_final": (baseline.distances[-1] / baseline.distances[0]
                                    if baseline and baseline.distances[0] > 0 else None),
        "choices": [c + 1 for c in ours.choices],
        "seconds_per_round": ours.seconds_per_round,
        "similarity_error_max": max(ours.similarity_errors) if ours.similarity_errors else None,
        "current": str(folder / "current.safetensors"),
        "sheet": str(sheet_path),
    }
    if args.json:
        emit_json(summary)
    else:
        for r, d in enumerate(ours.distances):
            line = f"round {r}: distance {d:.4f}"
            if baseline:
                line += f"  (prompt rewriting {baseline.distances[r]:.4f})"
            print(line)
        print(f"target, start and final image: {sheet_path}")
        print(f"session saved in {folder}")
    return 0


def run_explore(args) -> int:
    from noise2art.engine import validation as V
    from noise2art.methods.feedback import FeedbackSession, config_from_state
    from noise2art.methods.feedback.store import STATE_FILE, read_state

    # Validate cheap arguments before loading any weights.
    if args.json and args.auto_target is None:
        raise InvalidArgument("json", "only with --auto-target (the interactive session prints for a person)")
    if isinstance(args.rounds, bool) or not 1 <= args.rounds <= 10000:
        raise InvalidArgument("rounds", f"must be an integer in [1, 10000], got {args.rounds}")
    if not (math.isfinite(args.strength) and 0.0 <= args.strength <= 1.0):
        raise InvalidArgument("strength", f"must be a number in [0, 1], got {args.strength}")
    if args.auto_target is not None and not args.auto_target.strip():
        raise InvalidArgument("auto-target", "must be a non-empty prompt")
    if args.seed is not None:
        V.check_seed(args.seed)
    folder = Path(args.session) if args.session else None
    resume = folder is not None and (folder / STATE_FILE).exists()
    if resume:
        state = read_state(folder)  # a corrupted folder fails here, before the model loads
        config_from_state(state, folder)
        _check_resume_flags(args, state, folder)
    else:
        config = build_config(args)
        if args.prompt is None or not args.prompt.strip():
            raise InvalidArgument("prompt", "give a start prompt (or --session DIR to resume a session)")
        if folder is None:
            folder = free_path(Path(args.out), f"explore_{slug(args.prompt)}", "")
        # Made now, so a folder that cannot be written fails in one line before the model loads.
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument("session" if args.session else "out",
                                  f"cannot create '{folder}': {exc.strerror or exc}") from None

    model = load(args)
    if resume:
        session = FeedbackSession.resume(model, folder)
        note = " (current.safetensors was restored from the history)" if session.repaired else ""
        print(f"resumed the session in {folder} at round {session.round}{note}", file=sys.stderr)
    else:
        session = FeedbackSession.start(model, args.prompt, 0 if args.seed is None else args.seed, config,
                                        negative=args.negative or "", path=folder)
        print(f"new session in {folder}", file=sys.stderr)
    if args.auto_target is not None:
        return _auto_target(args, session, model, folder)
    return _interactive(session, folder)
