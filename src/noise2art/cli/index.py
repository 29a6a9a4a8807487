"""`noise2art index build`: render every query's first pages into a data folder, in-process or on Ray."""

from __future__ import annotations

import sys
from pathlib import Path

from noise2art.cli.common import PRECISION_CHOICES, add_model_args
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="build the infinite index ahead of time (pages into the store)",
                              description="Commands on the index of a data folder.")
    sub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND")

    def _usage(args) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_usage)
    b = sub.add_parser(
        "build", help="render every query's first N pages into the store",
        description="Render the first N pages of every query's stream into a data folder, the pages the service "
                    "serves for that query. Pages already stored are skipped, so a stopped build resumes. With --ray "
                    "the pages render on a Ray cluster; the files are the same, sha256 for sha256.")
    b.add_argument("--queries", required=True, help="file: one query per line, or JSON lines "
                   "{\"query\", \"negative\", \"toward\", \"shared_seeds\"}")
    b.add_argument("--pages", type=int, required=True, help="pages per query, from page 0")
    b.add_argument("--page-size", type=int, default=24, help="results per page (default 24, as the service's)")
    b.add_argument("--data", default=None, help="data folder (default: the user's data folder); created if absent")
    b.add_argument("--owner", default="", help="the user the results belong to (default: none, as a server "
                   "without named users)")
    b.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="render on Ray: local (start one here), auto (the cluster this machine joined) or an "
                        "address; needs the cluster extra (pip install -e \".[cluster]\")")
    b.add_argument("--actors", type=int, default=None, help="with --ray: model actors (default: one per GPU, "
                   "else one per CPU)")
    b.add_argument("--threads", type=int, default=None,
                   help="torch threads of the build (in-process) or of each Ray actor (default: torch's, all "
                        "cores); with --ray local on a CPU machine, --threads 1 runs one actor per core. The same "
                        "count gives the same files with and without Ray")
    b.add_argument("--pages-per-batch", type=int, default=None,
                   help="with --ray: pages per map_batches call (default: 1 on CPUs, 4 on GPUs)")
    b.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    b.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    b.add_argument("--scheduler", default=None, help="scheduler name (default: the model folder's own)")
    b.add_argument("--size", default=None, help="WxH in pixels (default: the model's native size)")
    b.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="the denoiser's precision (default auto, as the service's)")
    b.add_argument("--json", action="store_true",
                   help='print {"images": [{"stream", "idx", "seed", "sha256"}], "seconds": ...} on stdout')
    add_model_args(b)
    b.set_defaults(func=run_build)


def _sampling(args) -> dict:
    from noise2art.engine import validation as V

    out = {"steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler,
           "precision": args.precision}
    if args.size:
        out["height"], out["width"] = V.parse_size(args.size)
    if args.steps is not None and args.steps < 1:
        raise InvalidArgument("steps", f"must be >= 1, got {args.steps}")
    return {k: v for k, v in out.items() if v is not None}


def run_build(args) -> int:
    from tqdm import tqdm

    from noise2art.cli.common import emit_json, load
    from noise2art.indexing.build import IndexBuildConfig, build_index, read_queries
    from noise2art.service.config import default_data_dir
    from noise2art.store import Store

    # 1. Cheap checks first: the queries, the numbers, Ray when asked for.
    queries = read_queries(args.queries)
    config = IndexBuildConfig(pages=args.pages, page_size=args.page_size, owner=args.owner,
                              sampling=_sampling(args)).check()
    if args.threads is not None and args.threads < 1:
        raise InvalidArgument("threads", f"must be >= 1, got {args.threads}")
    for flag in ("actors", "pages_per_batch"):
        value = getattr(args, flag)
        if value is not None and (args.ray is None or value < 1):
            raise InvalidArgument(flag.replace("_", "-"), "needs --ray and a value >= 1")
    if args.ray is not None:
        from noise2art.cluster import require_ray
        from noise2art.cluster.runtime import check_address

        check_address(args.ray)
        require_ray()
    folder = Path(args.data).expanduser() if args.data else default_data_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument("data", f"cannot create '{folder}' ({exc.strerror or exc})") from None

    # 2. The model plans the streams (and renders them in-process); the store takes the pages.
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)  # CPU sums split by thread count: it is part of the result
    model = load(args)
    store = Store(folder)
    bar = {"tqdm": None}

    def on_page(out, status, done, total) -> None:
        if bar["tqdm"] is None:
            bar["tqdm"] = tqdm(total=total, desc="index build", unit="page", file=sys.stderr, leave=False)
        if status == "written":
            bar["tqdm"].update(1)

    try:
        if args.ray is None:
            report = build_index(model, store, queries, config, on_page=on_page)
        else:
            from noise2art.cluster.index import RayIndexConfig, ray_runner
            from noise2art.cluster.runtime import ModelSpec, connected

            with connected(args.ray):
                runner = ray_runner(ModelSpec.from_args(args), RayIndexConfig(actors=args.actors,
                                                                              pages_per_batch=args.pages_per_batch,
                                                                              threads=args.threads))
                report = build_index(model, store, queries, config, runner=runner, on_page=on_page)
    finally:
        if bar["tqdm"] is not None:
            bar["tqdm"].close()
        store.close()
    if args.json:
        emit_json(report.to_json())
    else:
        print(f"{len(report.images)} results of {len(queries)} queries in {folder}: {report.rendered} pages "
              f"rendered, {report.skipped} already stored, {report.seconds:.1f} s")
    return 0
