"""The one thread that owns the model and runs the store's job queue.

Model work never runs on the event loop: request handlers only validate, write a `jobs`
row and wake this worker. The worker takes queued jobs by priority (what a user looks at
first, prefetch last), then age.

Generate jobs with the same resolved settings are **batched**: each UNet call takes up
to `max_batch` samples round-robin from every compatible job (prompts may differ: the
embeddings are paired with their seeds), so several users' requests share one call and
each job's first image comes early. Other kinds (interpolate, optimize, invariant,
feedback rounds) run one at a time through `runners`.

Cancel (`cancel(job_id)`) marks the job `canceled` at once; the running call sees it at
its next denoising step (the sampler's cancel check) and stops, or, when the batch still
serves other jobs, the canceled job's samples are simply dropped. A failure (a NaN
image, out of memory, a bad embedding) fails the jobs it concerns with its reason; a
batch that fails is retried job by job, so one bad request cannot fail the others.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.model import to_pil
from noise2art.engine.settings import SampleSettings
from noise2art.errors import Cancelled, Preempted
from noise2art.pngmeta import GenerationParams, png_bytes
from noise2art.service.search import image_feature_rows
from noise2art.store import Store

log = logging.getLogger("noise2art.service")

PROGRESS_INTERVAL_S = 0.2
"""At most this often a job's progress is written and announced (steps can be faster)."""

GATHER_S = 0.05
"""After idling, the worker waits this long before its first batch, so that requests sent
together (a page of thumbnails, several users at once) share one UNet call."""


@dataclass
class GenerateState:
    """A running generate job: what it renders and how far it is."""

    job: dict
    embedding: PromptEmbedding  # batch 1, on the model's device
    embedding_id: str
    settings: SampleSettings
    seeds: list[int]  # still to render, in order
    total: int
    image_ids: list[str] = field(default_factory=list)
    solo: bool = False  # after a failed batch: runs alone
    last_progress: float = 0.0

    @property
    def key(self) -> SampleSettings:
        """Jobs batch together when everything but the batch size agrees."""
        return dataclasses.replace(self.settings, batch_size=0)


class Frames:
    """The latest picture of each of the last `keep` jobs that showed one, as small PNGs in
    memory (a live view, not a record: the stored images are the job's result)."""

    def __init__(self, keep: int = 32, side: int = 256):
        from collections import OrderedDict

        self.keep, self.side = keep, side
        self._frames: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, iteration: int, image: torch.Tensor) -> None:
        import io

        from PIL import Image

        array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
        picture = Image.fromarray(array)
        picture.thumbnail((self.side, self.side))  # bounded whatever the model's size
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        with self._lock:
            self._frames[job_id] = (iteration, buffer.getvalue())
            self._frames.move_to_end(job_id)
            while len(self._frames) > self.keep:
                self._frames.popitem(last=False)

    def get(self, job_id: str) -> tuple[int, bytes] | None:
        with self._lock:
            return self._frames.get(job_id)


class JobContext:
    """What a method runner gets: the model, the store, events, progress and cancel."""

    def __init__(self, worker: Worker, job: dict):
        self.worker, self.job = worker, job
        self.model, self.store = worker.model, worker.store
        self._last = 0.0

    @property
    def owner(self) -> str:
        return self.job["owner"]

    def canceled(self) -> bool:
        return self.worker.is_canceled(self.job["id"])

    def emit(self, type_: str, data: dict) -> None:
        self.worker.emit(type_, {"job_id": self.job["id"], **data}, self.job)

    def frame(self, iteration: int, image: torch.Tensor) -> None:
        """Show the job's current picture: `image` `[3, H, W]` in [0, 1] becomes the PNG at
        `GET /api/v1/jobs/{id}/frame.png` (kept in memory, the latest only) and a `job.frame` event."""
        self.worker.frames.put(self.job["id"], iteration, image)
        self.emit("job.frame", {"iteration": iteration, "url": f"/api/v1/jobs/{self.job['id']}/frame.png?i={iteration}"})

    def should_yield(self) -> bool:
        """Whether a job of higher priority waits (cheap: one indexed query)."""
        return self.store.higher_priority_queued(self.job["priority"])

    def yield_point(self) -> None:
        """Give way (raise `Preempted`) if a job of higher priority is queued. A runner calls it
        only where everything done so far is stored, so that the rerun skips it."""
        if self.should_yield():
            raise Preempted

    def progress(self, fraction: float, force: bool = False, **data) -> None:
        self.worker.drain_calls()  # short calls wait at most one step of a long job
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        fraction = float(min(1.0, max(0.0, fraction)))
        self.store.set_progress(self.job["id"], fraction)
        self.emit("job.progress", {"progress": fraction, **data})


Runner = Callable[[JobContext], dict]


class Worker:
    """Runs jobs from `store` on `model`, in one background thread."""

    def __init__(self, store: Store, model, *, max_batch: int = 8, version: str = "",
                 runners: dict[str, Runner] | None = None):
        self.store, self.model = store, model
        self.max_batch = max_batch
        self.version = version
        self.runners = dict(runners or {})
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._canceled: set[str] = set()
        self._lock = threading.Lock()
        self._active: dict[str, GenerateState] = {}
        self._thread: threading.Thread | None = None
        self._calls: queue.Queue[tuple[Callable[[], object], Future]] = queue.Queue()
        # Objects the worker builds from the model and reuses (streams of the index, ...):
        # touched on the worker thread only.
        self.cache: dict = {}
        self.frames = Frames()
        # Where generate batches render: None for this process's model, else a callable
        # `(embeddings, seeds, settings) -> (images [N, 3, H, W], settings ran, batch seeds)`
        # (`serve --ray`: a Ray Serve deployment that batches many servers' requests).
        self.generator: Callable | None = None

    # -- control -------------------------------------------------------------------------

    def start(self, load: Callable[[], object] | None = None) -> None:
        """Start the worker thread; `load` (a model loader) runs on it first, so that the
        model is loaded on the thread that runs it, and then the model's `warm_up`. Loaded
        on another thread, the same model renders about 1.3x slower on a 2-core CPU
        (benchmarks/RESULTS.md: the thread's own math-library state, not the model,
        differs). `wait_ready` waits for both."""
        self._ready = threading.Event()
        self._load_error: BaseException | None = None

        def run() -> None:
            try:
                if load is not None:
                    self.model = load()
                if self.model is not None:
                    # Traced UNets from the first request on (`engine.tracing`): about a
                    # second now instead of in the first images a person waits for.
                    self.model.warm_up()
            except BaseException as e:  # handed to wait_ready: the server must not start without a model
                self._load_error = e
                return
            finally:
                self._ready.set()
            self._loop()

        self._thread = threading.Thread(target=run, name="noise2art-worker", daemon=True)
        self._thread.start()

    def wait_ready(self) -> None:
        """Block until the worker has its model; raise what loading it raised."""
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current denoising step; the running job stays `running` in the
        store, and the next start requeues it (or marks it interrupted)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        """Something was queued: look at the queue now."""
        self._wake.set()

    def call(self, fn: Callable[[], object]) -> Future:
        """Run a short piece of model work (encode a prompt, a feedback choice) on the worker
        thread, between two denoising steps of whatever runs; the future holds its result."""
        future: Future = Future()
        if self._stop.is_set():
            future.set_exception(RuntimeError("the server is stopping"))
            return future
        self._calls.put((fn, future))
        self._wake.set()
        return future

    def drain_calls(self) -> None:
        """Run the pending `call`s (on the worker thread only)."""
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it had already finished."""
        job = self.store.get_job(job_id)
        if job is None:
            return False
        with self._lock:
            self._canceled.add(job_id)
        if self.store.finish_job(job_id, "canceled", error="canceled by request"):
            self.emit("job.canceled", {"job_id": job_id}, job)
            return True
        return False

    def is_canceled(self, job_id: str) -> bool:
        if self._stop.is_set():
            return True
        with self._lock:
            return job_id in self._canceled

    def emit(self, type_: str, data: dict, job: dict) -> int:
        return self.store.add_event(type_, data, job_id=job["id"], owner=job["owner"])

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        idle = True
        while not self._stop.is_set():
            try:
                self.drain_calls()
                if idle and not self._stop.wait(GATHER_S):
                    self.drain_calls()
                worked = self._step()
                idle = not worked
            except Exception:  # the loop must survive anything a job does
                log.error("worker step failed:\n%s", traceback.format_exc())
                worked = False
            if not worked:
                self._wake.wait(0.5)
                self._wake.clear()
        while not self._calls.empty():  # nobody runs them any more: say so
            _, future = self._calls.get_nowait()
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the server is stopping"))

    def _step(self) -> bool:
        """Run one unit of work (one batch, or one method job); False when idle."""
        queued = self.store.queued()
        head = queued[0] if queued else None
        active = self._live_generate()
        # A queued job of higher priority than the running generates goes first.
        if head is not None and head["kind"] != "generate" and (
                not active or head["priority"] > max(s.job["priority"] for s in active)):
            self._run_method(head)
            return True
        for job in queued:
            if job["kind"] == "generate" and len(self._active) < 64:
                self._start_generate(job)
        active = self._live_generate()
        if not active:
            if head is not None and head["kind"] != "generate":
                self._run_method(head)
                return True
            return bool(queued)
        self._run_batch(active)
        return True

    # -- generate ------------------------------------------------------------------------

    def _live_generate(self) -> list[GenerateState]:
        for job_id in [j for j in self._active if self.is_canceled(j)]:
            del self._active[job_id]
        return sorted(self._active.values(), key=lambda s: (-s.job["priority"], s.job["created"]))

    def _start_generate(self, job: dict) -> None:
        if not self.store.start_job(job["id"]):
            return  # canceled meanwhile
        self.emit("job.started", {"job_id": job["id"], "kind": "generate"}, job)
        try:
            state = self._generate_state(job)
        except Exception as exc:
            self._fail(job, exc)
            return
        if not state.seeds:  # a rerun after a crash that had stored every image already
            self._complete_generate(state)
            return
        self._active[job["id"]] = state

    def _generate_state(self, job: dict) -> GenerateState:
        from noise2art.service.runners import request_embedding, sampling_of

        request = job["request"]
        embedding, embedding_id = request_embedding(self.model, self.store, request, job)
        settings = self.model.resolve(sampling_of(request, batch_size=self.max_batch))
        seeds = list(request["seeds"])
        # After a restart, images already stored for this job are kept and not rendered again.
        done = self.store.db.execute("SELECT id, seed FROM images WHERE job_id = ? ORDER BY created",
                                     (job["id"],)).fetchall()
        done_seeds = {r["seed"] for r in done}
        return GenerateState(job=job, embedding=embedding, embedding_id=embedding_id, settings=settings,
                             seeds=[s for s in seeds if s not in done_seeds], total=len(seeds),
                             image_ids=[r["id"] for r in done])

    def _run_batch(self, active: list[GenerateState]) -> None:
        head = active[0]
        group = [head] if head.solo else [s for s in active if s.key == head.key and not s.solo]
        # Round-robin over the compatible jobs, highest priority first, up to max_batch samples.
        samples: list[tuple[GenerateState, int]] = []
        cursor = {id(s): 0 for s in group}
        while len(samples) < self.max_batch:
            added = False
            for s in group:
                k = cursor[id(s)]
                if k < len(s.seeds) and len(samples) < self.max_batch:
                    samples.append((s, s.seeds[k]))
                    cursor[id(s)] = k + 1
                    added = True
            if not added:
                break
        states = list({id(s): s for s, _ in samples}.values())
        try:
            self._render(samples, states)
        except Cancelled:
            pass  # every job of the batch was canceled; their rows say so already
        except Exception as exc:
            if len(states) > 1:
                log.warning("a batch of %d jobs failed (%s); retrying them one by one", len(states), exc)
                for s in states:
                    s.solo = True
            else:
                self._active.pop(states[0].job["id"], None)
                self._fail(states[0].job, exc)

    def _render(self, samples: list[tuple[GenerateState, int]], states: list[GenerateState]) -> None:
        model = self.model
        embeddings = PromptEmbedding.cat([s.embedding for s, _ in samples])
        seeds = [seed for _, seed in samples]
        ids = {s.job["id"] for s in states}

        def all_canceled() -> bool:
            return all(self.is_canceled(j) for j in ids)

        def on_step(step: int, total: int, latents) -> None:
            self.drain_calls()
            now = time.monotonic()
            due = [s for s in states
                   if now - s.last_progress >= PROGRESS_INTERVAL_S and not self.is_canceled(s.job["id"])]
            if not due:
                return
            with self.store.transaction():  # one commit (and one wake-up of the streams) for the batch
                for s in due:
                    s.last_progress = now
                    share = sum(1 for t, _ in samples if t is s)
                    fraction = (s.total - len(s.seeds) + share * step / total) / s.total
                    self.store.set_progress(s.job["id"], fraction)
                    self.emit("job.progress", {"job_id": s.job["id"], "progress": fraction, "step": step,
                                               "steps": total}, s.job)

        batch_seeds = seeds
        with torch.no_grad():
            if self.generator is not None:
                # No step progress from afar: the batch reports when it is done.
                images, ran, batch_seeds = self.generator(embeddings, seeds, samples[0][0].settings)
                images = images.to(model.device)
            else:
                latents, ran = model.sample(embeddings, seeds, settings=samples[0][0].settings, pairing="zip",
                                            batch_size=len(samples), callback=on_step, cancel=all_canceled,
                                            return_settings=True)
                images = model.decode(latents, batch_size=len(samples))
            attributes = None
            if model.companions.attributes is not None:
                attributes = model.companions.attributes.predict(images.float())
        features = image_feature_rows(model, images)
        pil = to_pil(images)
        by_state: dict[int, list[tuple[int, int]]] = {}
        for k, (s, seed) in enumerate(samples):
            by_state.setdefault(id(s), []).append((k, seed))
        for s in states:
            if self.is_canceled(s.job["id"]):
                continue
            items = []
            for k, seed in by_state[id(s)]:
                emb = s.embedding
                params = GenerationParams.from_settings(
                    ran, prompt=emb.prompts[0], negative=emb.negative[0], seed=seed, model=model.model_id,
                    version=self.version, embedding_hash=emb.hash(), batch_seeds=batch_seeds)
                extra = {"parameters": params.infotext()}
                if attributes is not None:
                    extra["attributes"] = attributes[k]
                items.append((png_bytes(pil[k], params), dict(
                    model_id=params.model, embedding_id=s.embedding_id, prompt=emb.prompts[0],
                    negative=emb.negative[0], seed=seed, steps=ran.steps, guidance=ran.guidance,
                    scheduler=ran.scheduler_label, width=ran.width, height=ran.height, precision=ran.precision,
                    method="generate", job_id=s.job["id"], owner=s.job["owner"], extra=extra, features=features[k])))
            with self.store.transaction():  # a job's images, their events and its end commit together
                rows = self.store.add_images(items)
                for row in rows:
                    self.emit("job.image", {"job_id": s.job["id"], "image_id": row["id"], "seed": row["seed"]}, s.job)
                left = list(s.seeds)
                for row in rows:
                    left.remove(row["seed"])
                fraction = (s.total - len(left)) / s.total
                self.store.set_progress(s.job["id"], fraction)
                self.emit("job.progress", {"job_id": s.job["id"], "progress": fraction}, s.job)
                if not left:
                    self._complete_generate(s, [*s.image_ids, *(row["id"] for row in rows)])
            # Only once committed does the job's state move on (a failed commit leaves it to retry).
            s.image_ids.extend(row["id"] for row in rows)
            s.seeds = left
            if not left:
                self._active.pop(s.job["id"], None)

    def _complete_generate(self, state: GenerateState, image_ids: list[str] | None = None) -> None:
        """Mark the job completed with its images (`image_ids`, by default those it holds)."""
        result = {"image_ids": state.image_ids if image_ids is None else image_ids,
                  "embedding_id": state.embedding_id, "settings": state.settings.to_dict()}
        if self.store.finish_job(state.job["id"], "completed", result=result):
            self.emit("job.completed", {"job_id": state.job["id"], "result": result}, state.job)

    # -- other kinds ---------------------------------------------------------------------

    def _run_method(self, job: dict) -> None:
        runner = self.runners.get(job["kind"])
        if not self.store.start_job(job["id"]):
            return
        self.emit("job.started", {"job_id": job["id"], "kind": job["kind"]}, job)
        if runner is None:
            self._fail(job, RuntimeError(f"no runner for jobs of kind '{job['kind']}'"))
            return
        ctx = JobContext(self, job)
        try:
            result = runner(ctx)
        except Cancelled:
            return
        except Preempted:
            if self.store.requeue_job(job["id"]):
                self.emit("job.requeued", {"job_id": job["id"], "reason": "a job of higher priority"}, job)
            return
        except Exception as exc:
            self._fail(job, exc)
            return
        if ctx.canceled():
            return
        if self.store.finish_job(job["id"], "completed", result=result):
            self.emit("job.completed", {"job_id": job["id"], "result": result}, job)

    def _fail(self, job: dict, exc: BaseException) -> None:
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            reason = f"out of memory: {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}" if not getattr(exc, "name", None) else str(exc)
        log.info("job %s failed: %s", job["id"], reason)
        if self.store.finish_job(job["id"], "failed", error=reason):
            self.emit("job.failed", {"job_id": job["id"], "error": reason}, job)
