"""The REST API under `/api/v1` (OpenAPI at `/openapi.json`).

Handlers validate (pydantic first, then the model's cheap checks: size, scheduler,
embedding shape), write rows and wake the worker; they never run the UNet. Every URL
names rows by id; no request reaches the filesystem except through the store's
content-addressed paths.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image

from noise2art import __version__
from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument
from noise2art.service import schemas as S
from noise2art.service.runners import sampling_of, save_embedding, stored_embedding
from noise2art.service.security import COOKIE, LOGIN_LIFETIME_S, check_login, hash_token, new_login, request_owner
from noise2art.store import decode_cursor

router = APIRouter(prefix="/api/v1")
Owner = Annotated[str, Depends(request_owner)]
IdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
IMMUTABLE = "public, max-age=31536000, immutable"
RETRY_AFTER_S = 2
EVENT_POLL_S = 1.0
"""An event stream wakes on the store's bell; without a ring it looks anyway this often."""
KEEPALIVE_S = 15.0
_SUBMIT_LOCK = threading.Lock()


def _state(request: Request):
    return request.app.state


# --------------------------------------------------------------------------- jobs


def submit(request: Request, owner: str, kind: str, body: dict, priority: str = "interactive") -> Response:
    """Queue a job (or find the identical one already queued, running or done): 202."""
    state = _state(request)
    config, store = state.config, state.store
    key_text = json.dumps({"kind": kind, "model": state.model.model_id, "request": body}, sort_keys=True)
    request_key = hashlib.sha256(key_text.encode()).hexdigest()
    with _SUBMIT_LOCK:  # check and insert as one step: concurrent requests cannot both pass the checks
        duplicate = store.find_duplicate(request_key, owner)
        if duplicate is not None:
            # Asked for again more urgently (a prefetched page now looked at): it goes first.
            store.raise_priority(duplicate["id"], S.PRIORITIES[priority])
            return _created(duplicate, deduplicated=True)
        if store.count_pending() >= config.max_pending or store.count_pending(owner) >= config.max_pending_per_user:
            raise HTTPException(429, "the job queue is full; try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        job = store.create_job(kind, body, owner=owner, priority=S.PRIORITIES[priority], request_key=request_key,
                               rerunnable=True)
        store.add_event("job.queued", {"job_id": job["id"], "kind": kind}, job_id=job["id"], owner=owner)
    state.worker.notify()
    return _created(job)


def _created(job: dict, deduplicated: bool = False) -> Response:
    body = S.JobCreated(job_id=job["id"], status=job["status"], deduplicated=deduplicated)
    return Response(body.model_dump_json(), status_code=202, media_type="application/json",
                    headers={"Location": f"/api/v1/jobs/{job['id']}"})


def _job_view(job: dict) -> S.JobView:
    return S.JobView(id=job["id"], kind=job["kind"], status=job["status"], progress=job["progress"],
                     result=job["result"], error=job["error"], created=job["created"], started=job["started"],
                     finished=job["finished"])


def _check_sampling(request: Request, body: S.Sampling, seeds: int = 1) -> None:
    """The model's own checks of the sampling fields, before anything is queued."""
    config, model = _state(request).config, _state(request).model
    settings = model.resolve(sampling_of(body.model_dump()))
    if settings.width * settings.height * seeds > config.max_pixels:
        raise InvalidArgument("seeds", f"{seeds} images of {settings.width}x{settings.height} exceed the "
                                       f"{config.max_pixels} pixels one request may ask for")


def _check_embedding_id(request: Request, embedding_id: str | None, owner: str, field: str = "embedding_id") -> None:
    if embedding_id is not None and _state(request).store.get_embedding(embedding_id, owner) is None:
        raise InvalidArgument(field, f"no embedding {embedding_id}")


JOB_RESPONSES = {202: {"model": S.JobCreated}, 422: {"model": S.Error}, 429: {"model": S.Error}}


@router.get("/health", response_model=S.Health)
def health(request: Request) -> S.Health:
    state = _state(request)
    model = state.model
    settings = {q: model.resolve(quality=q) for q in ("full", "preview")}
    shown = {q: {"steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler_label,
                 "model": s.unet or model.model_id} for q, s in settings.items()}
    return S.Health(status="ok", model=model.model_id, version=__version__, queued=state.store.count_pending(),
                    users=state.store.has_users(), defaults=shown["full"], preview=shown["preview"])


@router.post("/generate", status_code=202, responses=JOB_RESPONSES)
def generate(request: Request, body: S.GenerateRequest, owner: Owner) -> Response:
    config = _state(request).config
    if len(body.seeds) > config.max_seeds:
        raise InvalidArgument("seeds", f"at most {config.max_seeds} seeds per request, got {len(body.seeds)}")
    if len(set(body.seeds)) != len(body.seeds):
        raise InvalidArgument("seeds", "each seed at most once")
    _check_sampling(request, body, len(body.seeds))
    _check_embedding_id(request, body.embedding_id, owner)
    return submit(request, owner, "generate", body.model_dump(exclude={"priority"}), body.priority)


@router.get("/jobs", response_model=S.JobList)
def list_jobs(request: Request, owner: Owner, limit: int = Query(50, ge=1, le=500)) -> S.JobList:
    return S.JobList(jobs=[_job_view(j) for j in _state(request).store.list_jobs(owner, limit)])


@router.get("/jobs/{job_id}", response_model=S.JobView, responses={404: {"model": S.Error}})
def get_job(request: Request, job_id: IdPath, owner: Owner) -> S.JobView:
    job = _state(request).store.get_job(job_id, owner)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return _job_view(job)


@router.get("/jobs/{job_id}/frame.png", responses={404: {"model": S.Error}, 200: {"content": {"image/png": {}}}})
def job_frame(request: Request, job_id: IdPath, owner: Owner) -> Response:
    """The job's latest picture while it runs (an optimisation's current image), never cached."""
    state = _state(request)
    if state.store.get_job(job_id, owner) is None:
        raise HTTPException(404, f"no job {job_id}")
    frame = state.worker.frames.get(job_id)
    if frame is None:
        raise HTTPException(404, f"job {job_id} has shown no picture (or it is no longer kept)")
    iteration, png = frame
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store", "X-Iteration": str(iteration),
                                                          "X-Content-Type-Options": "nosniff"})


@router.delete("/jobs/{job_id}", response_model=S.JobView, responses={404: {"model": S.Error}})
def cancel_job(request: Request, job_id: IdPath, owner: Owner) -> S.JobView:
    state = _state(request)
    if state.store.get_job(job_id, owner) is None:
        raise HTTPException(404, f"no job {job_id}")
    state.worker.cancel(job_id)
    return _job_view(state.store.get_job(job_id))


# --------------------------------------------------------------------------- events


def _last_event_id(header: str | None, query: int | None) -> int:
    if query is not None:
        return query
    try:
        return max(0, int(header)) if header else 0
    except ValueError:
        raise HTTPException(422, "Last-Event-ID must be an integer") from None


def _event_stream(request: Request, last_id: int, owner: str, job_id: str | None):
    state = _state(request)
    store, bell = state.store, state.bell

    async def stream():
        nonlocal last_id
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        yield "retry: 1000\n\n"
        while True:
            if await request.is_disconnected():
                return
            mark = bell.mark()  # before reading: an event stored after the read rings it
            events = await asyncio.to_thread(store.events_after, last_id, job_id=job_id, owner=owner)
            for e in events:
                last_id = e["id"]
                yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e['data'])}\n\n"
            if job_id is not None and not events:
                job = await asyncio.to_thread(store.get_job, job_id)
                if job is None or job["status"] in ("completed", "failed", "canceled", "interrupted"):
                    return  # everything about a finished job has been sent
            if events:
                quiet_since = loop.time()
                continue
            await bell.wait(mark, EVENT_POLL_S)
            if loop.time() - quiet_since >= KEEPALIVE_S:
                quiet_since = loop.time()
                yield ": keepalive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})
def all_events(request: Request, owner: Owner, last_event_id: int | None = Query(None, ge=0),
               last_event_id_header: str | None = Header(None, alias="Last-Event-ID")):
    """Every event of the caller's jobs, resumable with `Last-Event-ID`."""
    return _event_stream(request, _last_event_id(last_event_id_header, last_event_id), owner, None)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
                       404: {"model": S.Error}})
def job_events(request: Request, job_id: IdPath, owner: Owner, last_event_id: int | None = Query(None, ge=0),
               last_event_id_header: str | None = Header(None, alias="Last-Event-ID")):
    """One job's events (`job.progress`, `job.image`, `job.metric`, `job.completed`, ...); the
    stream ends once the job has finished and everything was sent."""
    if _state(request).store.get_job(job_id, owner) is None:
        raise HTTPException(404, f"no job {job_id}")
    return _event_stream(request, _last_event_id(last_event_id_header, last_event_id), owner, job_id)


# --------------------------------------------------------------------------- images and the library


def _image_view(row: dict, liked: bool) -> S.ImageView:
    extra = dict(row.get("extra") or {})
    parameters = extra.pop("parameters", "")
    attributes = extra.pop("attributes", None)
    return S.ImageView(id=row["id"], url=f"/api/v1/images/{row['id']}.png", model_id=row["model_id"],
                       embedding_id=row["embedding_id"], prompt=row["prompt"], negative=row["negative"],
                       seed=row["seed"], steps=row["steps"], guidance=row["guidance"], scheduler=row["scheduler"],
                       width=row["width"], height=row["height"], precision=row["precision"], method=row["method"],
                       job_id=row["job_id"], created=row["created"], liked=liked, parameters=parameters,
                       attributes=attributes, extra=extra)


def _image_row(request: Request, image_id: str, owner: str) -> dict:
    row = _state(request).store.get_image(image_id, owner)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    return row


# Files up to this size are sent from one read: a page of thumbnails is many small PNGs, and
# a file response's thread hops for stat, open and each chunk cost more than the read.
SMALL_FILE = 1 << 20


def _file_response(path, media_type: str, etag: str, if_none_match: str | None, filename: str | None = None):
    headers = {"Cache-Control": IMMUTABLE, "ETag": f'"{etag}"', "X-Content-Type-Options": "nosniff"}
    if if_none_match and etag in if_none_match:
        return Response(status_code=304, headers=headers)
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if path.stat().st_size <= SMALL_FILE:
        return Response(path.read_bytes(), media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/images/{image_id}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 304: {"description": "not modified"},
                       404: {"model": S.Error}})
async def image_png(request: Request, image_id: IdPath, owner: Owner,
                    if_none_match: str | None = Header(None, alias="If-None-Match")):
    """The PNG with its generation parameters (immutable: its content never changes)."""
    # On the event loop: one indexed read (WAL readers never wait for the writer) and one small file.
    row = _image_row(request, image_id, owner)
    return _file_response(_state(request).store.image_path(row), "image/png", row["sha256"], if_none_match)


@router.get("/images/{image_id}", response_model=S.ImageView, responses={404: {"model": S.Error}})
async def image(request: Request, image_id: IdPath, owner: Owner) -> S.ImageView:
    row = _image_row(request, image_id, owner)
    return _image_view(row, _state(request).store.liked(image_id, owner))


def _seeded_image(request: Request, image_id: str, owner: str, field: str) -> dict:
    """The row of a stored image that its embedding and seed alone give again (a generate
    or search result, not steered, not around other images), else 404 / 422 naming `field`."""
    row = _image_row(request, image_id, owner)
    stream = (row.get("extra") or {}).get("stream") or {}
    if row["method"] not in ("generate", "search"):
        raise InvalidArgument(field, f"image {image_id} is a {row['method']} result: only a generate or search "
                                     "result is given again by its embedding and seed")
    if stream.get("kind") not in (None, "query") or stream.get("toward"):
        raise InvalidArgument(field, f"image {image_id} is a {stream.get('kind')} result"
                                     f"{' steered toward a concept' if stream.get('toward') else ''}: its "
                                     "embedding and seed alone do not give it")
    if row["embedding_id"] is None:
        raise InvalidArgument(field, f"image {image_id} has no stored embedding")
    return row


@router.post("/images/{image_id}/render", status_code=202, responses={**JOB_RESPONSES, 404: {"model": S.Error}})
def render_again(request: Request, image_id: IdPath, body: S.RenderRequest, owner: Owner) -> Response:
    """The image again from its embedding and seed at other settings (by default the model's
    full quality: what the web app asks for when a preview is opened). A generate job."""
    row = _seeded_image(request, image_id, owner, "image_id")
    asked = body.model_dump(exclude={"priority"}, exclude_none=True)
    job = S.GenerateRequest(embedding_id=row["embedding_id"], seeds=[row["seed"]],
                            **{"width": row["width"], "height": row["height"], "quality": "full", **asked})
    _check_sampling(request, job)
    _check_embedding_id(request, job.embedding_id, owner)
    return submit(request, owner, "generate", job.model_dump(exclude={"priority"}), body.priority)


@router.put("/images/{image_id}/like", response_model=S.LikeView, responses={404: {"model": S.Error}})
def like(request: Request, image_id: IdPath, owner: Owner) -> S.LikeView:
    _image_row(request, image_id, owner)
    _state(request).store.set_like(image_id, owner, True)
    return S.LikeView(image_id=image_id, liked=True)


@router.delete("/images/{image_id}/like", response_model=S.LikeView, responses={404: {"model": S.Error}})
def unlike(request: Request, image_id: IdPath, owner: Owner) -> S.LikeView:
    _image_row(request, image_id, owner)
    _state(request).store.set_like(image_id, owner, False)
    return S.LikeView(image_id=image_id, liked=False)


@router.get("/library", response_model=S.LibraryPage, responses={422: {"model": S.Error}})
async def library(request: Request, owner: Owner, cursor: str | None = Query(None, max_length=200),
            limit: int = Query(24, ge=1, le=100), liked: bool | None = None,
            q: str | None = Query(None, max_length=200)) -> S.LibraryPage:
    """The caller's images, newest first; pass `next_cursor` back for the next page."""
    if cursor:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise InvalidArgument("cursor", "not a cursor from a previous page") from None
    page = functools.partial(_state(request).store.library, owner, limit=limit, cursor=cursor, liked=liked,
                             query=q, liker=owner)
    # An indexed page is read on the event loop; a text filter may scan, so it runs on a thread.
    rows, next_cursor = await run_in_threadpool(page) if q else page()
    return S.LibraryPage(images=[_image_view(r, r["liked"]) for r in rows], next_cursor=next_cursor)


# --------------------------------------------------------------------------- embeddings


def _embedding_view(row: dict) -> S.EmbeddingView:
    return S.EmbeddingView(id=row["id"], url=f"/api/v1/embeddings/{row['id']}.safetensors",
                           model_id=row["model_id"], prompt=row["prompt"], negative=row["negative"],
                           source=row["source"], created=row["created"])


@router.post("/embeddings", status_code=201, response_model=S.EmbeddingView, responses={422: {"model": S.Error}})
async def create_embedding(request: Request, body: S.EmbeddingRequest, owner: Owner) -> S.EmbeddingView:
    """An embedding from a prompt, or a weighted blend of prompts and stored embeddings."""
    state = _state(request)
    for part in body.blend or []:
        _check_embedding_id(request, part.embedding_id, owner, "blend")
    model, store = state.model, state.store

    def make() -> str:  # on the worker thread: it owns the model
        from noise2art.methods.blend import blend_embeddings

        if body.prompt is not None:
            emb = model.encode([body.prompt], body.negative)
            return save_embedding(model, store, emb, source="prompt", owner=owner)
        parts = [model.encode([p.prompt], body.negative) if p.prompt is not None
                 else stored_embedding(model, store, p.embedding_id, owner) for p in body.blend]
        label = ", ".join(f"{p.prompt if p.prompt is not None else '@' + p.embedding_id}:{p.weight:g}"
                          for p in body.blend)
        emb = blend_embeddings(parts, [p.weight for p in body.blend], f"blend({label})")
        return save_embedding(model, store, emb, source="blend", owner=owner)

    embedding_id = await asyncio.wrap_future(state.worker.call(make))
    return _embedding_view(store.get_embedding(embedding_id))


@router.post("/embeddings/upload", status_code=201, response_model=S.EmbeddingView,
             responses={413: {"model": S.Error}, 422: {"model": S.Error}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_embedding(request: Request, owner: Owner) -> S.EmbeddingView:
    """Upload a `.safetensors` embedding (raw body). Read as safetensors only, never unpickled;
    checked against the loaded model (id, shape, finite values) and size-limited."""
    state = _state(request)
    data = await _read_body(request, state.config.max_upload_bytes, "an embedding file")
    model = state.model
    emb = PromptEmbedding.from_bytes(bytes(data), model_id=model.model_id, shape=model.embedding_shape,
                                     name="the upload")
    if len(emb) != 1:
        raise InvalidArgument("embedding", f"the upload holds {len(emb)} prompts; upload one at a time")
    row = state.store.add_embedding(emb.to_bytes(), model_id=model.model_id, prompt=emb.prompts[0],
                                    negative=emb.negative[0], source="upload", owner=owner)
    return _embedding_view(row)


UPLOAD_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_SIDE = 1024
"""An uploaded image larger than this is scaled down (aspect kept) before it is stored."""


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The raw request body, refused with 413 past `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} may hold at most {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"{what} may hold at most {limit} bytes")
    return bytes(data)


def decode_upload(data: bytes) -> Image.Image:
    """An uploaded PNG, JPEG or WebP as an RGB image, checked before its pixels are decoded.

    The header is read first: another format, or more than `MAX_UPLOAD_PIXELS` pixels (a
    decompression bomb), is refused without decoding; the decoded image is converted to RGB
    (alpha dropped) and scaled down to at most `MAX_UPLOAD_SIDE` pixels a side.
    """
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own check of the header, past twice its limit
        raise InvalidArgument("image", f"too many pixels; at most {MAX_UPLOAD_PIXELS} are taken") from None
    except (Image.UnidentifiedImageError, OSError, ValueError):
        raise InvalidArgument("image", "not a PNG, JPEG or WebP image") from None
    if im.format not in UPLOAD_FORMATS:
        raise InvalidArgument("image", f"{im.format or 'this'} images are not taken; upload a PNG, JPEG or WebP")
    width, height = im.size
    if width < 1 or height < 1 or width * height > MAX_UPLOAD_PIXELS:
        raise InvalidArgument("image", f"{width}x{height} pixels; at most {MAX_UPLOAD_PIXELS} pixels are taken")
    try:
        im = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidArgument("image", "the image data is damaged") from None
    im.thumbnail((MAX_UPLOAD_SIDE, MAX_UPLOAD_SIDE), Image.Resampling.LANCZOS)
    return im


@router.post("/uploads/image", status_code=201, response_model=S.UploadView,
             responses={413: {"model": S.Error}, 422: {"model": S.Error}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_image(request: Request, owner: Owner) -> S.UploadView:
    """Upload an image (raw PNG, JPEG or WebP body) to use as a method's target (`invariant`'s
    `target_upload_id`). Stored re-encoded as a PNG without its metadata; size-limited."""
    state = _state(request)
    image = decode_upload(await _read_body(request, state.config.max_upload_bytes, "an image upload"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    row = state.store.add_artifact(buffer.getvalue(), ext="png", media_type="image/png", job_id=None, owner=owner)
    return S.UploadView(id=row["id"], url=f"/api/v1/artifacts/{row['id']}", width=image.width, height=image.height)


@router.get("/embeddings/{embedding_id}.safetensors", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": S.Error}})
def download_embedding(request: Request, embedding_id: IdPath, owner: Owner,
                       if_none_match: str | None = Header(None, alias="If-None-Match")):
    store = _state(request).store
    row = store.get_embedding(embedding_id, owner)
    if row is None:
        raise HTTPException(404, f"no embedding {embedding_id}")
    return _file_response(store.blobs.path(row["sha256"], "safetensors"), "application/octet-stream", row["sha256"],
                          if_none_match, filename=f"{embedding_id}.safetensors")


@router.get("/embeddings/{embedding_id}", response_model=S.EmbeddingView, responses={404: {"model": S.Error}})
def get_embedding(request: Request, embedding_id: IdPath, owner: Owner) -> S.EmbeddingView:
    row = _state(request).store.get_embedding(embedding_id, owner)
    if row is None:
        raise HTTPException(404, f"no embedding {embedding_id}")
    return _embedding_view(row)


# --------------------------------------------------------------------------- renders (GIF / MP4)


@router.get("/artifacts/{artifact_id}", response_class=FileResponse,
            responses={200: {"content": {"image/gif": {}, "video/mp4": {}}}, 404: {"model": S.Error}})
def artifact(request: Request, artifact_id: IdPath, owner: Owner,
             if_none_match: str | None = Header(None, alias="If-None-Match")):
    store = _state(request).store
    row = store.get_artifact(artifact_id, owner)
    if row is None:
        raise HTTPException(404, f"no render {artifact_id}")
    return _file_response(store.blobs.path(row["sha256"], row["ext"]), row["media_type"], row["sha256"],
                          if_none_match)


# --------------------------------------------------------------------------- the methods as jobs


@router.post("/interpolate", status_code=202, responses=JOB_RESPONSES)
def interpolate(request: Request, body: S.InterpolateRequest, owner: Owner) -> Response:
    """Frames along the path through the keyframes, stored as images, plus GIF / MP4."""
    if body.images is not None:
        # Stored images as keyframes: their embeddings, from the first one's seed to the last one's.
        rows = [_seeded_image(request, i, owner, "images") for i in body.images]
        body = body.model_copy(update={
            "images": None, "keyframes": [S.Source(embedding_id=r["embedding_id"]) for r in rows],
            "seed": rows[0]["seed"] if "seed" not in body.model_fields_set else body.seed,
            "seed_to": rows[-1]["seed"] if "seed_to" not in body.model_fields_set else body.seed_to})
    if len(body.keyframes) == 1 and body.seed_to is None:
        raise InvalidArgument("keyframes", "one keyframe makes a path only with a second seed (seed_to)")
    if not body.range[0] < body.range[1]:
        raise InvalidArgument("range", "needs lo < hi")
    for k in body.keyframes:
        _check_embedding_id(request, k.embedding_id, owner, "keyframes")
    _check_sampling(request, body, body.frames)
    return submit(request, owner, "interpolate", body.model_dump(exclude={"priority"}), body.priority)


@router.post("/optimize", status_code=202, responses=JOB_RESPONSES)
def optimize(request: Request, body: S.OptimizeRequest, owner: Owner) -> Response:
    """Optimise an embedding for an image metric; each iteration's score is a `job.metric` event."""
    from noise2art.metrics import MetricUnavailable, get_metric

    try:
        get_metric(body.metric, context=_state(request).model)
    except MetricUnavailable as exc:
        raise InvalidArgument("metric", str(exc)) from None
    _check_embedding_id(request, body.embedding_id, owner)
    _check_sampling(request, body, len(body.seeds))
    return submit(request, owner, "optimize", body.model_dump(exclude={"priority"}), body.priority)


@router.post("/invariant", status_code=202, responses=JOB_RESPONSES)
def invariant(request: Request, body: S.InvariantRequest, owner: Owner) -> Response:
    """A seed-invariant embedding: fresh seeds give the target seed's picture (or an uploaded image's)."""
    _check_embedding_id(request, body.embedding_id, owner)
    if body.target_upload_id is not None:
        row = _state(request).store.get_artifact(body.target_upload_id, owner)
        if row is None or row["job_id"] is not None or row["ext"] != "png":
            raise InvalidArgument("target_upload_id", f"no uploaded image {body.target_upload_id}")
    _check_sampling(request, body, max(1, len(body.eval_seeds)))
    return submit(request, owner, "invariant", body.model_dump(exclude={"priority"}), body.priority)


# --------------------------------------------------------------------------- the infinite index


@router.post("/streams", status_code=201, response_model=S.StreamView, responses={422: {"model": S.Error}})
async def create_stream(request: Request, body: S.StreamRequest, owner: Owner) -> S.StreamView:
    """A stream of results: the same request gives the same id (and the same pages for everyone)."""
    from noise2art.service.runners import open_stream

    state = _state(request)
    _check_embedding_id(request, body.embedding_id, owner)
    for image_id in [body.like] if body.like else (body.between or body.beyond or []):
        if state.store.get_image(image_id, owner) is None:
            raise InvalidArgument(body.kind, f"no image {image_id}")
    if body.kind == "query":
        _check_sampling(request, body)
    payload = body.model_dump()
    view = await asyncio.wrap_future(state.worker.call(lambda: open_stream(state.worker, state.store, payload,
                                                                           owner)))
    return S.StreamView(**view)


@router.get("/streams/{stream_id}", response_model=S.StreamView, responses={404: {"model": S.Error}})
def get_stream(request: Request, stream_id: IdPath, owner: Owner) -> S.StreamView:
    row = _state(request).store.get_stream(stream_id)
    if row is None:
        raise HTTPException(404, f"no stream {stream_id}")
    return S.StreamView(**row["request"]["view"])


@router.get("/streams/{stream_id}/pages/{page}", response_model=S.PageView,
            responses={202: {"model": S.PageView, "description": "the page is being rendered"},
                       404: {"model": S.Error}, 429: {"model": S.Error}})
async def stream_page(request: Request, stream_id: IdPath, owner: Owner, page: int = Path(ge=0, le=10**9),
                      size: int = Query(24, ge=1, le=100)):
    """Page `page` (from 0) of `size` results: 200 with every image when the page is stored,
    else 202 with the images ready so far and the `job_id` rendering the rest (the next page
    is then prefetched at low priority)."""
    store = _state(request).store
    if store.get_stream(stream_id) is None:
        raise HTTPException(404, f"no stream {stream_id}")
    start, stop = page * size, (page + 1) * size
    stored = store.stream_results(stream_id, owner, start, stop)
    records = {idx: row["extra"].get("stream") or {} for idx, row in stored.items()}
    images = [S.PageImage(id=row["id"], idx=idx, seed=row["seed"], url=f"/api/v1/images/{row['id']}.png",
                          t=records[idx].get("t"), toward=records[idx].get("toward"), bridge=records[idx].get("bridge"))
              for idx, row in sorted(stored.items())]
    if len(stored) == size:  # a stored page is read on the event loop: no thread hop
        return S.PageView(stream_id=stream_id, page=page, size=size, complete=True, images=images)
    job_id = await run_in_threadpool(_submit_page, request, owner, stream_id, page, size)
    view = S.PageView(stream_id=stream_id, page=page, size=size, complete=False, images=images, job_id=job_id)
    return Response(view.model_dump_json(), status_code=202, media_type="application/json")


def _submit_page(request: Request, owner: str, stream_id: str, page: int, size: int) -> str:
    """Queue the page's job and prefetch the next page's (writes, so off the event loop)."""
    job = submit(request, owner, "stream.page", {"stream_id": stream_id, "page": page, "size": size})
    if page + 1 <= 10**9:
        try:
            submit(request, owner, "stream.page", {"stream_id": stream_id, "page": page + 1, "size": size},
                   "prefetch")
        except HTTPException:
            pass  # a full queue skips the prefetch, never the page asked for
    return json.loads(job.body)["job_id"]


# --------------------------------------------------------------------------- search over what is stored


@router.get("/search", response_model=S.SearchResult, responses={422: {"model": S.Error}})
async def search(request: Request, owner: Owner, q: str | None = Query(None, min_length=1, max_length=500),
                 like: str | None = Query(None, pattern=r"^[0-9a-f]{16}$"),
                 limit: int = Query(24, ge=1, le=100)) -> S.SearchResult:
    """Stored images ranked by a text query (`q`) or by likeness to a stored image (`like`),
    best first; for a text query also the stream (`POST /api/v1/streams`) that generates
    more results once the stored ones run out."""
    import numpy as np

    from noise2art.metrics.features import feature_kind
    from noise2art.service.runners import open_stream

    if (q is None) == (like is None):
        raise InvalidArgument("q", "give a text query (q) or an image (like), not both")
    state = _state(request)
    model, store = state.model, state.store
    kind = feature_kind(model)
    stream_id = None
    if like is not None:
        if store.get_image(like, owner) is None:
            raise InvalidArgument("like", f"no image {like}")
        stored = store.image_feature(like)
        if stored is None:
            raise InvalidArgument("like", f"image {like} has no stored features")
        kind, vector = stored[0], np.frombuffer(stored[1], dtype=np.float32)
    else:
        if kind != "world-clip":
            raise InvalidArgument("q", "text search needs an image-text model (world CLIP, on the embedded model); "
                                       "search by an image with `like` instead")
        from noise2art.engine.companions import world_clip_text

        def query():
            vec = world_clip_text(model, [q])[0].float().cpu().numpy()
            view = open_stream(state.worker, store, {"query": q}, owner)
            return vec, view["id"]

        vector, stream_id = await _on_worker(request, query)
    hits = await asyncio.to_thread(state.index.search, kind, vector, owner, limit, like)
    images = []
    for image_id, score in hits:
        row = store.get_image(image_id)
        view = _image_view(row, store.liked(image_id, owner))
        images.append(S.SearchHit(**view.model_dump(), score=score))
    return S.SearchResult(images=images, kind=kind, stream_id=stream_id)


# --------------------------------------------------------------------------- feedback sessions


def _session_row(request: Request, session_id: str, owner: str) -> dict:
    row = _state(request).store.get_session(session_id, owner)
    if row is None:
        raise HTTPException(404, f"no session {session_id}")
    return row


async def _on_worker(request: Request, fn):
    return await asyncio.wrap_future(_state(request).worker.call(fn))


@router.post("/sessions", status_code=201, response_model=S.SessionView, responses={422: {"model": S.Error}})
async def create_session(request: Request, body: S.SessionRequest, owner: Owner) -> S.SessionView:
    """A feedback session: each round shows the current image and variants; choose one to move toward."""
    from noise2art.service.runners import open_session, session_config, session_view, start_session

    state = _state(request)
    session_config(body.model_dump())  # bad settings fail here, before anything is stored
    _check_sampling(request, S.Sampling(steps=body.steps, guidance=body.guidance, scheduler=body.scheduler,
                                        precision=body.precision))
    payload = body.model_dump()

    def start():
        row = start_session(state.worker, state.store, payload, owner)
        return session_view(open_session(state.worker, state.store, row), state.store.get_session(row["id"]))

    return S.SessionView(**await _on_worker(request, start))


@router.get("/sessions", response_model=S.SessionList)
def list_sessions(request: Request, owner: Owner) -> S.SessionList:
    rows = _state(request).store.list_sessions(owner)
    return S.SessionList(sessions=[S.SessionSummary(id=r["id"], prompt=r["prompt"], created=r["created"],
                                                    updated=r["updated"]) for r in rows])


@router.get("/sessions/{session_id}", response_model=S.SessionView, responses={404: {"model": S.Error}})
async def get_session(request: Request, session_id: IdPath, owner: Owner) -> S.SessionView:
    from noise2art.service.runners import open_session, session_view

    state = _state(request)
    row = _session_row(request, session_id, owner)
    return S.SessionView(**await _on_worker(request, lambda: session_view(open_session(state.worker, state.store,
                                                                                       row), row)))


@router.post("/sessions/{session_id}/round", status_code=202, responses={**JOB_RESPONSES, 404: {"model": S.Error}})
async def session_round(request: Request, session_id: IdPath, owner: Owner) -> Response:
    """Render the session's current round (a job): `result` names the current image and each
    candidate's image."""
    from noise2art.service.runners import open_session

    state = _state(request)
    row = _session_row(request, session_id, owner)
    round_ = await _on_worker(request, lambda: open_session(state.worker, state.store, row).round)
    return submit(request, owner, "session.round", {"session_id": session_id, "round": round_})


@router.post("/sessions/{session_id}/choose", response_model=S.SessionView,
             responses={404: {"model": S.Error}, 422: {"model": S.Error}})
async def session_choose(request: Request, session_id: IdPath, body: S.ChooseRequest, owner: Owner) -> S.SessionView:
    """Move the session toward candidate `index` of the current round with `strength`;
    saved before this returns."""
    from noise2art.service.runners import open_session, session_view

    state = _state(request)
    row = _session_row(request, session_id, owner)

    def choose():
        session = open_session(state.worker, state.store, row)
        if body.index >= session.config.n_variants:
            raise InvalidArgument("index", f"the round has {session.config.n_variants} candidates (0.."
                                           f"{session.config.n_variants - 1}), not {body.index}")
        session.choose(body.index, body.strength)
        state.store.touch_session(row["id"])
        return session_view(session, state.store.get_session(row["id"]))

    return S.SessionView(**await _on_worker(request, choose))


@router.post("/sessions/{session_id}/undo", response_model=S.SessionView,
             responses={404: {"model": S.Error}, 422: {"model": S.Error}})
async def session_undo(request: Request, session_id: IdPath, owner: Owner) -> S.SessionView:
    from noise2art.service.runners import open_session, session_view

    state = _state(request)
    row = _session_row(request, session_id, owner)

    def undo():
        session = open_session(state.worker, state.store, row)
        if not session.history:
            raise InvalidArgument("undo", "nothing to undo: no choice was made yet")
        session.undo()
        state.store.touch_session(row["id"])
        return session_view(session, state.store.get_session(row["id"]))

    return S.SessionView(**await _on_worker(request, undo))


@router.post("/sessions/{session_id}/export", status_code=201, response_model=S.EmbeddingView,
             responses={404: {"model": S.Error}})
async def session_export(request: Request, session_id: IdPath, owner: Owner) -> S.EmbeddingView:
    """Store the session's current embedding (generate from it, download it, blend it)."""
    from noise2art.service.runners import open_session

    state = _state(request)
    row = _session_row(request, session_id, owner)

    def export():
        session = open_session(state.worker, state.store, row)
        return save_embedding(state.model, state.store, session.current, source="explore", owner=owner)

    embedding_id = await _on_worker(request, export)
    return _embedding_view(state.store.get_embedding(embedding_id))


@router.get("/sessions/{session_id}/map.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {"model": S.Error}})
async def session_map(request: Request, session_id: IdPath, owner: Owner) -> Response:
    """The session's map (PNG): the path of the current embedding, the chosen candidates and
    this round's, on the two principal directions in which they differ (`FeedbackSession.map`)."""
    import tempfile
    from pathlib import Path

    from noise2art.plot import save_map_png
    from noise2art.service.runners import open_session

    state = _state(request)
    row = _session_row(request, session_id, owner)

    def draw() -> bytes:
        session = open_session(state.worker, state.store, row)
        with tempfile.TemporaryDirectory(dir=state.store.root) as tmp:
            return save_map_png(session.map(), Path(tmp) / "map.png").read_bytes()

    png = await _on_worker(request, draw)
    # The map changes with every choice: never cached.
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- the generated feed

FEED_WAIT_S = 30.0


def _feed_row(request: Request, feed_id: str, owner: str) -> dict:
    row = _state(request).store.get_feed(feed_id, owner)
    if row is None:
        raise HTTPException(404, f"no feed {feed_id}")
    return row


@router.post("/feeds", status_code=201, response_model=S.FeedView, responses={422: {"model": S.Error}})
async def create_feed(request: Request, body: S.FeedRequest, owner: Owner) -> S.FeedView:
    """A feed over topics that learns from likes, skips and dwell time (docs/feed.md)."""
    from noise2art.service.runners import create_feed as build, feed_view, open_feed

    state = _state(request)
    _check_sampling(request, body, 6)
    topics = [t if isinstance(t, str) else t.model_dump(exclude_none=True) for t in body.topics]
    for t in topics:
        if isinstance(t, dict) and t.get("embedding_id"):
            _check_embedding_id(request, t["embedding_id"], owner, "topics")
        if isinstance(t, dict) and t.get("image_id") and state.store.get_image(t["image_id"], owner) is None:
            raise InvalidArgument("topics", f"no image {t['image_id']}")
    payload = {**body.model_dump(exclude={"topics"}), "topics": topics}

    def make():
        row = build(state.worker, state.store, payload, owner)
        return feed_view(open_feed(state.worker, state.store, row), row)

    return S.FeedView(**await _on_worker(request, make))


@router.get("/feeds/{feed_id}", response_model=S.FeedView, responses={404: {"model": S.Error}})
async def get_feed(request: Request, feed_id: IdPath, owner: Owner) -> S.FeedView:
    from noise2art.service.runners import feed_view, open_feed

    state = _state(request)
    row = _feed_row(request, feed_id, owner)
    return S.FeedView(**await _on_worker(request, lambda: feed_view(open_feed(state.worker, state.store, row), row)))


@router.get("/feeds/{feed_id}/next", response_model=S.FeedPage,
            responses={202: {"model": S.JobCreated, "description": "still rendering"}, 404: {"model": S.Error},
                       429: {"model": S.Error}})
async def feed_next(request: Request, feed_id: IdPath, owner: Owner, n: int = Query(6, ge=1, le=24)):
    """The next `n` items, each with its image and `why` (exploit, explore, serendipity, topic).
    Waits for the render (a job of the highest priority); 202 with the job id if it takes long."""
    state = _state(request)
    row = _feed_row(request, feed_id, owner)
    after = len(row["state"]["items"])
    created = submit(request, owner, "feed.next", {"feed_id": feed_id, "n": n, "after": after})
    job_id = json.loads(created.body)["job_id"]
    deadline = asyncio.get_running_loop().time() + FEED_WAIT_S
    while True:
        job = await asyncio.to_thread(state.store.get_job, job_id)
        if job["status"] == "completed":
            return S.FeedPage(items=[S.FeedItemView(**i) for i in job["result"]["items"]])
        if job["status"] in ("failed", "canceled", "interrupted") or await request.is_disconnected() \
                or asyncio.get_running_loop().time() > deadline:
            return created  # the job says what happened
        await asyncio.sleep(0.05)


@router.post("/feeds/{feed_id}/events", response_model=S.FeedEventView,
             responses={404: {"model": S.Error}, 422: {"model": S.Error}})
async def feed_event(request: Request, feed_id: IdPath, body: S.FeedEvent, owner: Owner) -> S.FeedEventView:
    """A reaction to one of the feed's images: `like`, `skip`, or `dwell` with `dwell_ms`."""
    from noise2art.service.runners import open_feed

    state = _state(request)
    _feed_row(request, feed_id, owner)
    image = state.store.get_image(body.image_id, owner)
    if image is None or (image.get("extra") or {}).get("feed") != feed_id:
        raise InvalidArgument("image_id", f"image {body.image_id} is not an item of feed {feed_id}")
    if body.kind == "dwell" and body.dwell_ms is None:
        raise InvalidArgument("dwell_ms", "a dwell needs dwell_ms")

    def react():
        feed = open_feed(state.worker, state.store, state.store.get_feed(feed_id))
        item = feed.react(image["extra"]["item"], body.kind, body.dwell_ms)
        state.store.save_feed_state(feed_id, feed.state())
        return S.FeedEventView(item_id=item.id, kind=body.kind, value=float(item.value or 0.0))

    return await _on_worker(request, react)


# --------------------------------------------------------------------------- login


@router.post("/login", response_model=S.LoginView, responses={401: {"model": S.Error}})
def login(request: Request, body: S.LoginRequest, response: Response) -> S.LoginView:
    """Exchange a name and password (or, without a name, the server token) for a login token,
    also set as the session cookie."""
    state = _state(request)
    owner = check_login(state.store, state.config, body.name, body.password)
    if owner is None:
        raise HTTPException(401, "wrong name or password")
    token = new_login(state.store, owner)
    response.set_cookie(COOKIE, token, max_age=int(LOGIN_LIFETIME_S), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return S.LoginView(user=owner, token=token)


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response) -> Response:
    token = request.cookies.get(COOKIE)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    if token:
        _state(request).store.remove_login(hash_token(token))
    out = Response(status_code=204)
    out.delete_cookie(COOKIE, path="/")
    return out
