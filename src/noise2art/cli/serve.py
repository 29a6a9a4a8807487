"""`noise2art serve`: the service (REST API, jobs, events) on one model, until Ctrl-C."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the service: REST API, job queue and live events over one loaded model",
        description="Load the model once and serve the REST API under /api/v1 (OpenAPI at /openapi.json). "
                    "Everything made is kept in the data folder. Binds 127.0.0.1; any other address needs "
                    "--token. Ctrl-C stops cleanly.")
    p.add_argument("--data", default=None, help="data folder (default: the user's data folder, e.g. "
                                                "~/.local/share/noise2art)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", default=None, help="model name, hub id or folder (default: the embedded model)")
    p.add_argument("--token", default=None,
                   help="require this secret (>= 16 characters) as 'Authorization: Bearer' or at the login form; "
                        "needed to bind anything but loopback (default: read NOISE2ART_TOKEN)")
    p.add_argument("--allow-host", action="append", default=None, metavar="HOST",
                   help="a Host header to accept besides the bind address (repeatable; for a reverse proxy)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from this origin (repeatable; default none)")
    p.add_argument("--max-batch", type=int, default=8, help="samples per UNet call when batching jobs (default 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="send generation to a Ray Serve deployment on this cluster, which batches the requests of "
                        "many clients (the API and the store stay here); needs pip install -e \".[cluster]\"")
    p.add_argument("--ray-replicas", type=int, default=1, help="with --ray: model replicas of the deployment "
                   "(default 1)")
    p.set_defaults(func=run_serve)


def build_config(args):
    import os

    from noise2art.service.config import ServiceConfig, default_data_dir

    token = args.token if args.token is not None else os.environ.get("NOISE2ART_TOKEN") or None
    config = ServiceConfig(data=Path(args.data).expanduser() if args.data else default_data_dir(), host=args.host,
                           port=args.port, model=args.model, token=token, cors_origins=list(args.cors_origin),
                           max_batch=args.max_batch, device=args.device, dtype=args.dtype)
    if args.allow_host:
        config.allowed_hosts = sorted(set(config.hosts()) | set(args.allow_host))
    return config.check()


def run_serve(args) -> int:
    import uvicorn

    from noise2art.service.app import create_app

    config = build_config(args)
    if getattr(args, "ray", None) is not None:
        from noise2art.cluster import require_ray
        from noise2art.cluster.runtime import check_address

        check_address(args.ray)
        require_ray()
        if args.ray_replicas < 1:
            raise InvalidArgument("ray-replicas", f"must be >= 1, got {args.ray_replicas}")
    try:
        config.data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument("data", f"cannot create '{config.data}' ({exc.strerror or exc})") from None
    if getattr(args, "ray", None) is not None:
        return _serve_on_ray(args, config)
    app = create_app(config)
    print(f"noise2art serve: data in {config.data}; http://{config.host}:{config.port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # that was there before it started: make that one a clean exit, as Ctrl-C is.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_cleanly(signum, frame):
    raise SystemExit(0)


def _serve_on_ray(args, config) -> int:
    """`serve --ray`: the same app, its generate batches sent to a Ray Serve deployment."""
    import uvicorn

    from noise2art.cluster import serving
    from noise2art.cluster.runtime import ModelSpec, connected
    from noise2art.service.app import create_app

    with connected(args.ray):
        spec = ModelSpec(config.model, config.device or "auto", config.dtype)
        serve_config = serving.ServeConfig(replicas=args.ray_replicas, max_batch_size=max(1, config.max_batch))
        handle = serving.start(spec, serve_config)
        app = create_app(config)
        serving.attach(app, serving.RemoteGenerator(handle))
        print(f"noise2art serve: data in {config.data}; generation on Ray Serve ({args.ray}); "
              f"http://{config.host}:{config.port}/ (API docs at /docs)", file=sys.stderr)
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level,
                        timeout_graceful_shutdown=10)
        finally:
            signal.signal(signal.SIGTERM, previous)
            serving.stop(serve_config)
    return 0
