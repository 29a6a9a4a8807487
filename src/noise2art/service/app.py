"""The FastAPI application: lifespan (store, model, worker), middleware and routers.

`create_app(config)` builds it; `noise2art serve` runs it with uvicorn. The model loads
once, at startup, and only the worker thread uses it (`service.worker`). Startup also
recovers the store after a crash (`Store.recover`) and takes a lock on the data folder so
that two servers never share one.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from noise2art import __version__
from noise2art.errors import InvalidArgument, Noise2ArtError
from noise2art.service.bell import EventBell
from noise2art.service.config import ServiceConfig
from noise2art.service.security import SecurityMiddleware
from noise2art.store import Store

log = logging.getLogger("noise2art.service")


class DataLock:
    """An exclusive lock on `data/server.lock`, held while the server runs."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "server.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Noise2ArtError(f"another noise2art server uses '{self.path.parent}'") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _load_model(config: ServiceConfig):
    from noise2art.engine.loading import load_model

    return load_model(config.model, device=config.device or "auto", dtype=config.dtype)


def create_app(config: ServiceConfig, model=None) -> FastAPI:
    """The application for `config`; `model` (already loaded) skips loading one at startup."""
    from noise2art.service.routes import api, pages
    from noise2art.service.runners import RUNNERS
    from noise2art.service.search import FeatureIndex
    from noise2art.service.web import routes as web
    from noise2art.service.worker import Worker

    config.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lock = DataLock(config.data)
        lock.acquire()
        store = Store(config.data)
        bell = EventBell(asyncio.get_running_loop())
        store.event_listeners.append(bell.ring)
        try:
            recovered = store.recover()
            if recovered["requeued"] or recovered["interrupted"]:
                log.warning("recovered the store: %s", recovered)
            worker = Worker(store, model, max_batch=config.max_batch, version=__version__, runners=RUNNERS)
            # The model loads on the worker thread that runs it (faster there than loaded elsewhere).
            worker.start(None if model is not None else functools.partial(_load_model, config))
            await run_in_threadpool(worker.wait_ready)
            loaded = worker.model
            app.state.index = FeatureIndex(store)
            app.state.config, app.state.store, app.state.model, app.state.worker = config, store, loaded, worker
            app.state.recovered = recovered
            app.state.bell = bell
            try:
                yield
            finally:
                await run_in_threadpool(worker.stop)
        finally:
            store.close()
            lock.release()

    app = FastAPI(title="noise2art", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  description="Search, browse and steer a text-to-image model through its prompt embeddings.")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(SecurityMiddleware, hosts=config.hosts(), cors_origins=config.cors_origins)

    @app.exception_handler(InvalidArgument)
    async def invalid_argument(request: Request, exc: InvalidArgument):
        # The same shape as FastAPI's own validation errors: the field, then the message.
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": ["body", exc.name], "msg": exc.message if hasattr(exc, "message") else str(exc),
             "type": "value_error"}]})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(web.router)
    web.mount_static(app)
    return app
