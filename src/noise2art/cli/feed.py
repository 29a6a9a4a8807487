"""`noise2art feed`: a generated feed in the terminal, and `feed simulate`, its study on simulated users."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from noise2art.cli.common import add_model_args, add_sampling_args, emit_json, load, sampling_overrides
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "feed", help="an endless generated feed that learns from likes and skips (and its study)",
        description="noise2art feed TOPIC [TOPIC ...] shows pages of generated items (PNGs in the session "
                    "folder) and learns from what you like. noise2art feed simulate measures the feed against "
                    "baselines on simulated users.")
    p.add_argument("topics", nargs="*", help="topics (prompts); 'simulate' runs the study instead")
    p.add_argument("--session", default=None, help="folder of the feed (resumed when it holds one; default: a "
                                                   "new folder under out/)")
    p.add_argument("--page", type=int, default=6, help="items per page (default 6)")
    p.add_argument("--serendipity", type=float, default=None, help="share of serendipitous slots, 0..1 "
                                                                   "(default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the feed (default 0)")
    p.add_argument("--users", type=int, default=30, help="simulate: simulated users (default 30)")
    p.add_argument("--items", type=int, default=300, help="simulate: items per user (default 300)")
    p.add_argument("--pool", type=int, default=None, help="simulate: rendered items the arms choose from "
                                                          "(default 4 x --items)")
    p.add_argument("--pool-file", default=None, metavar="FILE.npz",
                   help="simulate: keep the rendered pool here; a later study with the same model, topics, "
                        "seed and settings loads it instead of rendering again")
    p.add_argument("--sweep", action="store_true", help="simulate: also sweep the serendipity rate "
                                                        "(0, 0.05, 0.1, 0.2, 0.4)")
    p.add_argument("--json", action="store_true", help="simulate: print one JSON object on stdout")
    add_sampling_args(p, size=False, batch="items")
    add_model_args(p)
    p.set_defaults(func=run_feed)


def run_feed(args) -> int:
    if args.topics[:1] == ["simulate"]:
        return run_simulate(args)
    if not args.topics and not args.session:
        raise InvalidArgument("topics", "give one or more topics, or --session DIR to resume")
    return run_interactive(args)


def _config(args):
    from noise2art.methods.feed import FeedConfig

    config = FeedConfig(seed=args.seed, sampling=sampling_overrides(args))
    if args.serendipity is not None:
        config.serendipity = args.serendipity
    return config.check()


# --------------------------------------------------------------------------- the study


def run_simulate(args) -> int:
    from tqdm import tqdm

    from noise2art.methods.feed.simulation import (POOL_GEOMETRY, default_feed_factory, load_pool, render_pool,
                                                   save_pool, study)

    topics = args.topics[1:] or ["a landscape", "a still life"]
    if args.users < 2 or args.items < 12:
        raise InvalidArgument("users" if args.users < 2 else "items", "need at least 2 users and 12 items")
    pool_size = args.pool or 4 * args.items
    if pool_size < 2 * args.items:
        raise InvalidArgument("pool", f"must hold at least twice --items ({2 * args.items}), got {pool_size}")
    config = _config(args)
    model = load(args)
    factory = default_feed_factory(model, topics, config)
    # What the pool's images depend on: a saved pool is reused only under the same.
    key = {"model": model.model_id, "topics": topics, "pool": pool_size, "seed": args.seed,
           "settings": model.resolve(config.sampling).to_dict(),
           "space": {k: v for k, v in config.to_dict().items() if k in POOL_GEOMETRY}}
    pool = load_pool(args.pool_file, key) if args.pool_file else None
    if pool is None:
        bar = tqdm(total=pool_size, desc="render pool", unit="item", file=sys.stderr, leave=False)
        pool = render_pool(factory(), pool_size, seed=args.seed,
                           progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        if args.pool_file:
            save_pool(pool, args.pool_file, key)
    result = study(pool, factory, users=args.users, items=args.items, page=args.page, seed=args.seed)
    out = result.to_dict() | {"topics": topics, "pool": pool_size, "serendipity": config.serendipity}
    if args.sweep:
        import copy

        sweep = {}
        for rate in (0.0, 0.05, 0.1, 0.2, 0.4):
            def make(rate=rate):
                feed = factory()
                feed.config = copy.copy(feed.config)
                feed.config.serendipity = rate
                return feed

            r = study(pool, make, users=args.users, items=args.items, page=args.page, seed=args.seed,
                      arms=("learned",))
            sweep[str(rate)] = {"like_rate": r.like_rate["learned"], "page_diversity": r.diversity["learned"]}
        out["serendipity_sweep"] = sweep
    if args.json:
        emit_json(out)
        return 0
    print(f"{args.users} users x {args.items} items, pool of {pool_size}, serendipity {config.serendipity:g}")
    print(f"{'arm':<13} {'like rate':>9}  {'95% interval':<15} {'1st like':>8} {'recovery':>8} {'diversity':>9} "
          f"{'serendip.':>9}")
    for arm, rate in result.like_rate.items():
        lo, hi = result.interval[arm]
        rec = result.recovery[arm]
        print(f"{arm:<13} {rate:>9.3f}  [{lo:.3f}, {hi:.3f}]  {result.first_like[arm]:>8.1f} "
              f"{'-' if rec is None else f'{rec:.0f}':>8} {result.diversity[arm]:>9.3f} "
              f"{result.serendipity[arm]:>9.3f}")
    return 0


# --------------------------------------------------------------------------- the terminal feed


def _open(args, model):
    from noise2art.engine.embedding import PromptEmbedding
    from noise2art.methods.feed import Feed

    folder = Path(args.session).expanduser() if args.session else None
    if folder is not None and (folder / "feed.json").is_file():
        state = json.loads((folder / "feed.json").read_text(encoding="utf-8"))
        topics = [model.as_embedding(PromptEmbedding.load(folder / f"topic_{k}.safetensors", model.model_id))
                  for k in range(state["topics"])]
        return Feed.restore(model, topics, state["feed"]), folder
    if not args.topics:
        raise InvalidArgument("session", f"'{folder}' holds no feed; give topics to start one")
    if folder is None:
        from noise2art.cli.common import free_path, slug

        folder = free_path(Path("out"), f"feed_{slug(args.topics[0])}", "")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument("session", f"cannot create '{folder}' ({exc.strerror or exc})") from None
    feed = Feed.start(model, args.topics, _config(args))
    for k, topic in enumerate(feed.topics):
        topic.save(folder / f"topic_{k}.safetensors")
    return feed, folder


def _save(feed, folder: Path) -> None:
    from noise2art.files import write_json

    write_json(folder / "feed.json", {"topics": len(feed.topics), "feed": feed.state()})


def run_interactive(args) -> int:
    from noise2art.cli.common import save_image
    from noise2art.engine.model import to_pil

    model = load(args)
    feed, folder = _open(args, model)
    print(f"feed in {folder}: like items by number (e.g. '1 4'), Enter skips the page, 'q' quits", file=sys.stderr)
    while True:
        items = feed.next(args.page)
        images = to_pil(feed.render(items))
        for n, (item, image) in enumerate(zip(items, images), start=1):
            path = save_image(image, folder / f"item_{item.k:05d}.png")
            print(f"  {n}. {path}  ({item.why}, topic: {feed.topics[item.topic].prompts[0]})")
        _save(feed, folder)
        try:
            line = input("like> ").strip()
        except EOFError:
            line = "q"
        if line.lower() in ("q", "quit"):
            return 0
        liked = set()
        for word in line.split():
            if not word.isdigit() or not 1 <= int(word) <= len(items):
                print(f"  '{word}' is not an item number 1..{len(items)}; page skipped", file=sys.stderr)
                liked = set()
                break
            liked.add(int(word))
        for n, item in enumerate(items, start=1):
            feed.react(item.id, "like" if n in liked else "skip")
        _save(feed, folder)
