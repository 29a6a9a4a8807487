"""What each kind of job does, on the worker thread: the methods, with their results stored.

A runner takes a `JobContext` (model, store, events, progress, cancel) and returns the
job's `result` dict. Everything it makes goes into the store first (images with what
fixes them, embeddings, GIF / MP4 renders), so a result only names stored rows.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.settings import SampleSettings, SamplingOverrides
from noise2art.errors import Cancelled, InvalidArgument, Preempted
from noise2art.service.records import FIRST_BATCH, image_items, page_items
from noise2art.store import Store
from noise2art.store.blobs import sha256


def sampling_of(request: dict, **fixed) -> SamplingOverrides:
    """The sampling fields of a request (`schemas.Sampling`) as overrides; `fixed` wins."""
    given = dict(steps=request.get("steps"), guidance=request.get("guidance"), scheduler=request.get("scheduler"),
                 width=request.get("width"), height=request.get("height"),
                 precision=request.get("precision") or "auto", quality=request.get("quality"))
    return SamplingOverrides(**{**given, **fixed})


def stored_embedding(model, store: Store, embedding_id: str, owner: str | None) -> PromptEmbedding:
    """A stored embedding, checked against the model (batch 1, its id and shape)."""
    row = store.get_embedding(embedding_id, owner)
    if row is None:
        raise InvalidArgument("embedding_id", f"no embedding {embedding_id}")
    emb = PromptEmbedding.from_bytes(store.embedding_bytes(row), model_id=model.model_id,
                                     shape=model.embedding_shape, name=f"embedding {embedding_id}")
    if len(emb) != 1:
        raise InvalidArgument("embedding_id", f"embedding {embedding_id} holds {len(emb)} prompts, not one")
    return emb.to(model.device, model.dtype)


def save_embedding(model, store: Store, emb: PromptEmbedding, *, source: str, owner: str,
                   job_id: str | None = None) -> str:
    """Store `emb` (batch 1); an identical one of the same owner is reused. Returns its id."""
    data = emb.to_bytes()
    row = store.db.execute("SELECT id FROM embeddings WHERE sha256 = ? AND model_id = ? AND owner = ? LIMIT 1",
                           (sha256(data), model.model_id, owner)).fetchone()
    if row is not None:
        return row["id"]
    return store.add_embedding(data, model_id=model.model_id, prompt=emb.prompts[0], negative=emb.negative[0],
                               source=source, owner=owner, job_id=job_id)["id"]


def request_embedding(model, store: Store, request: dict, job: dict) -> tuple[PromptEmbedding, str]:
    """The embedding a request names (`embedding_id`) or encodes (`prompt`, `negative`), and its id."""
    if request.get("embedding_id"):
        return stored_embedding(model, store, request["embedding_id"], job["owner"]), request["embedding_id"]
    emb = model.encode([request["prompt"]], request.get("negative", ""))
    return emb, save_embedding(model, store, emb, source="prompt", owner=job["owner"], job_id=job["id"])


def store_images(ctx, images: torch.Tensor, settings: SampleSettings, emb: PromptEmbedding, seeds: list[int],
                 *, method: str, embedding_id: str | None, extra: list[dict] | None = None) -> list[str]:
    """Store `images [N, 3, H, W]` of one embedding on `seeds` (one per image); returns their ids."""
    items = image_items(ctx.model, images, settings, emb, seeds, version=ctx.worker.version, method=method,
                        embedding_id=embedding_id, job_id=ctx.job["id"], owner=ctx.owner, extra=extra)
    return [row["id"] for row in ctx.store.add_images(items)]


def _source_embedding(ctx, source: dict, negative: str) -> PromptEmbedding:
    if source.get("embedding_id"):
        return stored_embedding(ctx.model, ctx.store, source["embedding_id"], ctx.owner)
    return ctx.model.encode([source["prompt"]], negative)


# --------------------------------------------------------------------------- interpolate


def run_interpolate(ctx) -> dict:
    """Frames along the path through the keyframes; stored as images, plus GIF / MP4 renders."""
    from noise2art import media
    from noise2art.methods.interpolate import InterpolationConfig, interpolate
    from noise2art.methods.retime import RetimeConfig, model_distance, retime, step_ratio

    request = ctx.job["request"]
    keyframes = [_source_embedding(ctx, k, request.get("negative", "")) for k in request["keyframes"]]
    config = InterpolationConfig(frames=request["frames"], method=request["method"], range=tuple(request["range"]),
                                 seed=request["seed"], seed_to=request.get("seed_to"), sampling=sampling_of(request))
    settings = ctx.model.resolve(config.sampling)

    def callback(step: int, total: int, latents) -> None:
        ctx.progress(0.95 * step / total, step=step, steps=total)

    speed = {}
    if request.get("constant_speed"):
        # Re-timed to constant image-space speed: the evenly spaced frames first, then the
        # largest gaps bisected, then frames at equal arc length (docs/interpolation.md).
        timed = retime(ctx.model, keyframes, config, RetimeConfig(refine=request.get("refine", 16)),
                       callback=callback, cancel=ctx.canceled)
        result = timed.interpolation
        speed = {"distances_before": timed.plan.distances_before.tolist(),
                 "distances": timed.plan.distances_after.tolist(),
                 "ratio_before": timed.ratio_before, "ratio": timed.ratio_after}
    else:
        result = interpolate(ctx.model, keyframes, config, callback=callback, cancel=ctx.canceled)
        # The speed profile of the evenly spaced path: image distance between consecutive frames.
        distances = model_distance(ctx.model)(result.images[:-1], result.images[1:])
        speed = {"distances": distances.tolist(), "ratio": step_ratio(distances)}
    keyframe_ids = [save_embedding(ctx.model, ctx.store, k, source="keyframe", owner=ctx.owner,
                                   job_id=ctx.job["id"]) for k in keyframes]
    label = " -> ".join(k.prompts[0] for k in keyframes)
    path_emb = keyframes[0].with_tensors(keyframes[0].cond, keyframes[0].uncond, prompts=[f"interpolate({label})"])
    seeds = [config.seed] * len(result.images)
    extra = [{"alpha": float(a), "segment": int(s), "keyframe_ids": keyframe_ids, "path": request["method"],
              "seed_to": config.seed_to} for a, s in zip(result.alphas.tolist(), result.segments.tolist())]
    image_ids = store_images(ctx, result.images, settings, path_emb, seeds, method="interpolate", embedding_id=None,
                             extra=extra)
    artifacts = {}
    frames = media.to_frames(result.images)
    with tempfile.TemporaryDirectory(dir=ctx.store.root) as tmp:
        for fmt in request.get("formats", ["gif"]):
            path = Path(tmp) / f"path.{fmt}"
            if fmt == "gif":
                media.write_gif(frames, path, fps=request.get("fps", 12.0))
                media_type = "image/gif"
            else:
                media.write_mp4(frames, path, fps=request.get("fps", 12.0))
                media_type = "video/mp4"
            row = ctx.store.add_artifact(path.read_bytes(), ext=fmt, media_type=media_type, job_id=ctx.job["id"],
                                         owner=ctx.owner)
            artifacts[fmt] = row["id"]
    ctx.progress(1.0, force=True)
    return {"image_ids": image_ids, "alphas": result.alphas.tolist(), "artifact_ids": artifacts,
            "keyframe_ids": keyframe_ids, "constant_speed": bool(request.get("constant_speed")), "speed": speed}


# --------------------------------------------------------------------------- optimize


def run_optimize(ctx) -> dict:
    """Metric optimisation; the score of every iteration is a `job.metric` event."""
    from noise2art.methods.optimize import OptimizeConfig, optimize
    from noise2art.metrics import get_metric

    request = ctx.job["request"]
    emb, embedding_id = request_embedding(ctx.model, ctx.store, request, ctx.job)
    metric = get_metric(request["metric"], context=ctx.model)
    if request.get("reference"):
        base = OptimizeConfig.reference(metric)
    elif request.get("unconstrained"):
        base = OptimizeConfig.unconstrained(metric)
    else:
        base = OptimizeConfig(metric=metric)
    keep = {k: request[k] for k in ("adherence_weight", "picture_weight", "adherence_floor")
            if request.get(k) is not None}
    config = dataclasses.replace(base, seeds=list(request["seeds"]), iterations=request["iterations"],
                                 lr=request["lr"], proximity=request["proximity"], **keep,
                                 sampling=base.sampling.merged(sampling_of(request, precision=None)))

    def callback(i: int, total: int, score: float, best: float) -> None:
        ctx.emit("job.metric", {"iteration": i, "iterations": total, "score": score, "best": best,
                                "metric": metric.name})
        ctx.progress((i + 1) / total, force=True)

    result = optimize(ctx.model, emb, config, callback=callback, cancel=ctx.canceled,
                      on_images=lambda i, images: ctx.frame(i, images[0]))
    best_id = save_embedding(ctx.model, ctx.store, result.embedding, source="optimize", owner=ctx.owner,
                             job_id=ctx.job["id"])
    images = {}
    for name, tensor, e, eid in (("before", result.initial_images, result.initial_embedding, embedding_id),
                                 ("after", result.best_images, result.embedding, best_id)):
        if tensor is not None:
            images[name] = store_images(ctx, tensor, result.settings, e, list(config.seeds), method="optimize",
                                        embedding_id=eid, extra=[{"metric": metric.name}] * len(tensor))
    return {"embedding_id": best_id, "initial_embedding_id": embedding_id, "metric": metric.name,
            "higher_is_better": metric.higher_is_better, "scores": result.scores,
            "initial_score": result.initial_score, "best_score": result.best_score,
            "best_iteration": result.best_iteration, "stop_reason": result.stop_reason,
            "stop_message": result.stop_message, "image_ids": images, "seconds": result.total_seconds,
            # What the picture kept: prompt adherence per iteration, distance to the first image.
            "named": result.named, "adherence": result.adherence, "distance": result.distance,
            "initial_adherence": result.initial_picture.adherence if result.initial_picture else None,
            "best_adherence": result.best_picture.adherence if result.best_picture else None,
            "best_distance": result.best_picture.distance if result.best_picture else None}


# --------------------------------------------------------------------------- invariant


def uploaded_image(ctx, upload_id: str):
    """An uploaded image (`POST /api/v1/uploads/image`, stored as a PNG) as `[1, 3, H, W]` in [0, 1]."""
    import numpy as np
    from PIL import Image

    row = ctx.store.get_artifact(upload_id, ctx.owner)
    if row is None or row["job_id"] is not None or row["ext"] != "png":
        raise InvalidArgument("target_upload_id", f"no uploaded image {upload_id}")
    with Image.open(ctx.store.blobs.path(row["sha256"], "png")) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def run_invariant(ctx) -> dict:
    """Seed invariance; each iteration's score is a `job.metric` event; before / after on the eval seeds."""
    from noise2art.methods.invariant import InvariantConfig, consistency, invariant, render_target

    request = ctx.job["request"]
    emb, embedding_id = request_embedding(ctx.model, ctx.store, request, ctx.job)
    # Fields left out take the method's defaults (ours; `reference` selects the published run).
    upload = request.get("target_upload_id")
    fields = dict(target_seed=None, target_image=uploaded_image(ctx, upload)) if upload else \
        dict(target_seed=request["target_seed"])
    fields.update({k: request[k] for k in ("iterations", "mode") if request.get(k) is not None})
    config = InvariantConfig.reference(**fields) if request.get("reference") else InvariantConfig(**fields)
    config.sampling = config.sampling.merged(sampling_of(request, precision=None))
    eval_seeds = list(request.get("eval_seeds") or [])

    def callback(i: int, total: int, score: float, stage: int) -> None:
        ctx.emit("job.metric", {"iteration": i, "iterations": total, "score": score, "stage": stage})
        ctx.progress(0.9 * (i + 1) / total, force=True)

    result = invariant(ctx.model, emb, config, callback=callback, cancel=ctx.canceled)
    best_id = save_embedding(ctx.model, ctx.store, result.embedding, source="invariant", owner=ctx.owner,
                             job_id=ctx.job["id"])
    out = {"embedding_id": best_id, "initial_embedding_id": embedding_id, "scores": result.scores,
           "best_iteration": result.best_iteration, "stop_reason": result.stop_reason,
           "stop_message": result.stop_message, "seconds": result.total_seconds, "image_ids": {}}
    if eval_seeds and not ctx.canceled():
        target = render_target(ctx.model, emb, config)
        run = ctx.model.resolve(config.sampling)
        if upload:
            out["target_upload_id"] = upload  # the target is the upload itself, not a render
        else:
            out["image_ids"]["target"] = store_images(ctx, target, run, emb, [config.target_seed],
                                                      method="invariant", embedding_id=embedding_id,
                                                      extra=[{"role": "target"}])
        for name, e, eid in (("before", emb, embedding_id), ("after", result.embedding, best_id)):
            report = consistency(ctx.model, e, target, eval_seeds, prompt=emb.prompts[0], sampling=config.sampling,
                                 cancel=ctx.canceled)
            out[f"distance_{name}"] = report.mean_distance
            out[f"agreement_{name}"] = report.agreement
            out["image_ids"][name] = store_images(ctx, report.images, run, e, eval_seeds, method="invariant",
                                                  embedding_id=eid, extra=[{"role": name}] * len(eval_seeds))
    ctx.progress(1.0, force=True)
    return out


# --------------------------------------------------------------------------- streams of the index

def _image_anchor(model, store: Store, image_id: str, owner: str, field: str):
    """A stored image as a stream anchor: its embedding (re-steered if it was), seed and settings."""
    from noise2art.methods.index import Anchor, concept_direction, steer

    row = store.get_image(image_id, owner)
    if row is None:
        raise InvalidArgument(field, f"no image {image_id}")
    record = (row.get("extra") or {}).get("stream") or {}
    if record.get("kind") not in (None, "query"):
        raise InvalidArgument(field, f"image {image_id} is a {record['kind']} result: its noise is not its seed's")
    if row["embedding_id"] is None:
        raise InvalidArgument(field, f"image {image_id} has no stored embedding to start from")
    emb = stored_embedding(model, store, row["embedding_id"], owner)
    if record.get("toward"):
        toward = record["toward"]
        emb = steer(emb, concept_direction(model, emb, toward["concept"]), float(toward["weight"]))
    # A preview drawn by the model's student names the student as its model: the same UNet then.
    unet = row["model_id"] if row["model_id"] in model.unet_variants else ""
    settings = SamplingOverrides(steps=row["steps"], guidance=row["guidance"],
                                 scheduler=None if row["scheduler"] == "default" else row["scheduler"],
                                 height=row["height"], width=row["width"], precision=row["precision"], unet=unet)
    return Anchor(emb, int(row["seed"])), settings


def build_stream(model, store: Store, request: dict, owner: str):
    """The `methods.index.Stream` a `StreamRequest` (as a dict) describes; checks its images."""
    from noise2art.methods.index import Stream, StreamConfig

    kind = next((n for n in ("like", "between", "beyond") if request.get(n) is not None), "query")
    config = StreamConfig(seed_rule="shared" if request.get("shared_seeds") else "derived")
    for name in ("similarity", "noise_strength"):
        if request.get(name) is not None:
            setattr(config, name, request[name])
    if request.get("bridges") is False:
        config.bridges = 0
    asked = sampling_of(request)
    if kind == "query":
        config.sampling = asked
        if request.get("embedding_id"):
            query = stored_embedding(model, store, request["embedding_id"], owner)
        else:
            query = model.encode([request["query"]], request.get("negative", ""))
        return Stream.query(model, query, config, toward=request.get("toward"),
                            min_similarity=request.get("min_similarity", 0.9))
    ids = [request["like"]] if kind == "like" else request[kind]
    anchors = [_image_anchor(model, store, i, owner, kind) for i in ids]
    if asked.quality == "preview":  # the preview's own steps, guidance and scheduler, not the images'
        anchors[0] = (anchors[0][0], dataclasses.replace(anchors[0][1], steps=None, guidance=None, scheduler=None,
                                                         unet=None))
    config.sampling = anchors[0][1].merged(SamplingOverrides(**{k: v for k, v in asked.given().items()
                                                                 if k != "precision" or request.get("precision")}))
    build = {"like": Stream.like, "between": Stream.between, "beyond": Stream.beyond}[kind]
    return build(model, *[a for a, _ in anchors], config)


def stream_view(stream) -> dict:
    """What `GET /api/v1/streams/{id}` shows of a stream."""
    return {"id": stream.id, "kind": stream.kind, "toward": stream.direction.record() if stream.direction else None,
            "settings": stream.settings.to_dict(), "end": stream.end}


def open_stream(worker, store: Store, request: dict, owner: str) -> dict:
    """Build a stream (on the worker thread), record it, cache it; returns its view."""
    stream = build_stream(worker.model, store, request, owner)
    store.add_stream(stream.id, {"request": request, "view": stream_view(stream)})
    worker.cache[("stream", stream.id, owner)] = stream
    return stream_view(stream)


def cached_stream(ctx_or_worker, store: Store, stream_id: str, owner: str):
    """A stream from the worker's cache, or rebuilt from its stored request (after a restart)."""
    worker = getattr(ctx_or_worker, "worker", ctx_or_worker)
    stream = worker.cache.get(("stream", stream_id, owner))
    if stream is None:
        row = store.get_stream(stream_id)
        if row is None:
            raise InvalidArgument("stream_id", f"no stream {stream_id}")
        stream = build_stream(worker.model, store, row["request"]["request"], owner)
        worker.cache[("stream", stream_id, owner)] = stream
    return stream


def run_stream_page(ctx) -> dict:
    """Render the results of one page that are not stored yet; each is a `job.image` event."""
    from noise2art.methods.index import page_indices

    request = ctx.job["request"]
    stream = cached_stream(ctx, ctx.store, request["stream_id"], ctx.owner)
    idxs = page_indices(request["page"], request["size"])
    have = ctx.store.stream_results(stream.id, ctx.owner, idxs.start, idxs.stop)
    missing = [i for i in idxs if i not in have]
    query_id = None
    if stream.kind == "query":
        query_id = save_embedding(ctx.model, ctx.store, stream.anchors[0].embedding, source="query",
                                  owner=ctx.owner, job_id=ctx.job["id"])
    done = {"n": len(have)}
    total_steps = {"n": 0}

    def callback(step: int, total: int, latents) -> None:
        total_steps["n"] = total
        ctx.progress((done["n"] + step / max(total, 1) * min(stream.settings.batch_size, len(missing)))
                     / len(idxs), step=step, steps=total)

    def on_batch(results, images) -> None:
        items = page_items(ctx.model, stream, results, images, version=ctx.worker.version, owner=ctx.owner,
                           job_id=ctx.job["id"], embedding_id=query_id)
        with ctx.store.transaction():  # the batch's images, their places in the stream and events at once
            ids = [row["id"] for row in ctx.store.add_images(items)]
            ctx.store.add_stream_results(stream.id, ctx.owner, [(r.idx, i) for r, i in zip(results, ids)])
            for r, i in zip(results, ids):
                ctx.emit("job.image", {"image_id": i, "idx": r.idx, "seed": r.seed})
        done["n"] += len(results)
        ctx.progress(done["n"] / len(idxs), force=True)
        ctx.yield_point()  # a prefetched page gives way to the page someone is looking at

    def stop() -> bool:  # checked between denoising steps
        return ctx.canceled() or ctx.should_yield()

    if missing:
        try:
            results = stream.results(missing, cancel=stop)
            # A small first batch: the first images show while the rest render.
            stream.render(results, callback=callback, cancel=stop, on_batch=on_batch, first_batch=FIRST_BATCH)
        except Cancelled:
            if not ctx.canceled():
                # A page someone is looking at waits: give way within a step; the batches
                # stored so far are kept and the rest renders when this job runs again.
                raise Preempted from None
            raise
    stored = ctx.store.stream_results(stream.id, ctx.owner, idxs.start, idxs.stop)
    return {"stream_id": stream.id, "page": request["page"], "image_ids": [stored[i]["id"] for i in idxs]}


# --------------------------------------------------------------------------- feedback sessions


def session_config(request: dict):
    """The `FeedbackConfig` of a `SessionRequest` (as a dict): fields left out take its defaults."""
    from noise2art.methods.feedback import FeedbackConfig

    fields = {k: request[k] for k in ("recommender", "n_variants", "similarity") if request.get(k) is not None}
    sampling = FeedbackConfig().sampling.merged(SamplingOverrides(
        **{k: request.get(k) for k in ("steps", "guidance", "scheduler", "precision")}))
    return FeedbackConfig(**fields, sampling=sampling).check()


def open_session(worker, store: Store, row: dict):
    """A session from the worker's cache, or resumed from its folder."""
    from noise2art.methods.feedback import FeedbackSession

    key = ("session", row["id"])
    session = worker.cache.get(key)
    if session is None:
        session = FeedbackSession.resume(worker.model, store.session_dir(row["id"]))
        worker.cache[key] = session
    return session


def start_session(worker, store: Store, request: dict, owner: str) -> dict:
    """Begin a session in the store's folder for it (on the worker thread)."""
    from noise2art.methods.feedback import FeedbackSession

    config = session_config(request)
    row = store.add_session(request["prompt"], owner)
    session = FeedbackSession.start(worker.model, request["prompt"], request.get("seed", 0), config,
                                    negative=request.get("negative", ""), path=store.session_dir(row["id"]))
    worker.cache[("session", row["id"])] = session
    return row


def session_view(session, row: dict) -> dict:
    """What `GET /api/v1/sessions/{id}` shows of a session."""
    return {"id": row["id"], "prompt": row["prompt"], "round": session.round,
            "recommender": session.config.recommender, "n_variants": session.config.n_variants,
            "history": [{"round": h.round, "index": h.index, "strength": h.strength, "similarity": h.similarity}
                        for h in session.history],
            "created": row["created"], "updated": row["updated"]}


def run_session_round(ctx) -> dict:
    """Render the current round of a session: the current image, then each candidate's."""
    request = ctx.job["request"]
    row = ctx.store.get_session(request["session_id"], ctx.owner)
    if row is None:
        raise InvalidArgument("session_id", f"no session {request['session_id']}")
    session = open_session(ctx.worker, ctx.store, row)
    if session.round != request["round"]:
        raise InvalidArgument("round", f"the session is at round {session.round}, not {request['round']}")

    def callback(step: int, total: int, latents) -> None:
        ctx.progress(step / max(total, 1), step=step, steps=total)

    variants = session.variants(callback=callback)
    emb = variants.embeddings
    current = session.current
    settings = ctx.model.resolve(**session.config.sample_kwargs())
    seed = session.session_seed
    current_id = store_images(ctx, variants.current_image, settings, current, [seed], method="explore",
                              embedding_id=None, extra=[{"session": row["id"], "round": session.round,
                                                         "role": "current"}])[0]
    candidate_ids = []
    for k in range(len(emb)):
        candidate_ids += store_images(ctx, variants.candidate_images[k:k + 1], settings, emb[k], [seed],
                                      method="explore", embedding_id=None,
                                      extra=[{"session": row["id"], "round": session.round, "candidate": k}])
    ctx.store.touch_session(row["id"])
    return {"session_id": row["id"], "round": session.round, "current_image_id": current_id,
            "candidate_image_ids": candidate_ids,
            "similarity": [float(v) for v in variants.similarity.reshape(-1).tolist()]}


# --------------------------------------------------------------------------- feeds


def _topic_embedding(model, store: Store, topic, owner: str) -> tuple[PromptEmbedding, str]:
    if isinstance(topic, str):
        topic = {"prompt": topic}
    if topic.get("prompt"):
        emb = model.encode([topic["prompt"]])
        return emb, save_embedding(model, store, emb, source="topic", owner=owner)
    if topic.get("embedding_id"):
        return stored_embedding(model, store, topic["embedding_id"], owner), topic["embedding_id"]
    row = store.get_image(topic["image_id"], owner)
    if row is None or row["embedding_id"] is None:
        raise InvalidArgument("topics", f"no image {topic['image_id']} with a stored embedding")
    return stored_embedding(model, store, row["embedding_id"], owner), row["embedding_id"]


def create_feed(worker, store: Store, request: dict, owner: str) -> dict:
    """Build a feed over the request's topics (on the worker thread) and store it."""
    from noise2art.methods.feed import Feed, FeedConfig

    embs, ids = zip(*[_topic_embedding(worker.model, store, t, owner) for t in request["topics"]])
    config = FeedConfig(serendipity=request.get("serendipity", 0.1), seed=request.get("seed", 0),
                        sampling=sampling_of(request))
    feed = Feed(worker.model, list(embs), config)
    row = store.add_feed([{"embedding_id": i, "label": e.prompts[0]} for i, e in zip(ids, embs)], feed.state(),
                         owner)
    worker.cache[("feed", row["id"])] = feed
    return row


def open_feed(worker, store: Store, row: dict):
    """A feed from the worker's cache, or restored exactly from its stored state."""
    from noise2art.methods.feed import Feed

    key = ("feed", row["id"])
    feed = worker.cache.get(key)
    if feed is None:
        topics = [stored_embedding(worker.model, store, t["embedding_id"], row["owner"]) for t in row["topics"]]
        feed = Feed.restore(worker.model, topics, row["state"])
        worker.cache[key] = feed
    return feed


def feed_view(feed, row: dict) -> dict:
    return {"id": row["id"], "topics": [t["label"] for t in row["topics"]], "serendipity": feed.config.serendipity,
            "items": len(feed.items), "likes": sum(1 for i in feed.items if i.reaction == "like")}


def run_feed_next(ctx) -> dict:
    """The feed's next items, rendered and stored; the feed's state is saved with them."""
    request = ctx.job["request"]
    row = ctx.store.get_feed(request["feed_id"], ctx.owner)
    if row is None:
        raise InvalidArgument("feed_id", f"no feed {request['feed_id']}")
    feed = open_feed(ctx.worker, ctx.store, row)

    def callback(step: int, total: int, latents) -> None:
        ctx.progress(step / max(total, 1), step=step, steps=total)

    if len(feed.items) != request["after"]:
        # Another request took these items already: show the ones it made.
        made = feed.items[request["after"]:request["after"] + request["n"]]
    else:
        made = feed.next(request["n"], callback=callback, cancel=ctx.canceled)  # renders ahead
    images = feed.render(made, callback=callback, cancel=ctx.canceled)  # the renders made ahead
    out = []
    for item, image in zip(made, images):
        emb = feed.embedding(item)
        image_id = store_images(ctx, image[None], feed.settings, emb, [item.seed], method="feed", embedding_id=None,
                                extra=[{"feed": row["id"], "item": item.id, "why": item.why, "z": item.z,
                                        "topic": item.topic}])[0]
        out.append({"item_id": item.id, "image_id": image_id, "url": f"/api/v1/images/{image_id}.png",
                    "why": item.why, "topic": row["topics"][item.topic]["label"]})
    ctx.store.save_feed_state(row["id"], feed.state())
    return {"feed_id": row["id"], "items": out}


RUNNERS = {
    "feed.next": run_feed_next,
    "session.round": run_session_round,
    "stream.page": run_stream_page,
    "interpolate": run_interpolate,
    "optimize": run_optimize,
    "invariant": run_invariant,
}
