"""Render every query's first pages into the store, ahead of anyone asking (docs/scale.md).

A build is a list of **page tasks** (one stream, one page), planned against the store so
that pages already stored are skipped (a build is resumable: run it again and only the
missing pages render). Each task renders with `render_page`, the service's own stream page
path (same streams, same UNet batches, same `records.page_items`), and its output is
written by `write_page`, on the process that owns the store, one page at a time. Where the
pages render is the runner's business: `local_runner` here, Ray in `noise2art.cluster`.
The files are the same, sha256 for sha256, whichever runner made them.

A page is written whole (its images in one transaction, then its results); a page that
comes back twice (a retried worker) is written once. A page whose images were written but
whose results were not (the writer died between the two) is found by its images' stream
record and adopted, never rendered again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from noise2art import __version__
from noise2art.errors import InvalidArgument
from noise2art.files import read_entries

SAMPLING_FIELDS = ("steps", "guidance", "scheduler", "width", "height", "precision")
MAX_QUERIES = 1_000_000


@dataclass(frozen=True)
class QuerySpec:
    """One line of a queries file: a prompt, and how its stream is drawn."""

    query: str
    negative: str = ""
    toward: str | None = None
    shared_seeds: bool = False

    def request(self, sampling: dict) -> dict:
        """The service's `StreamRequest` (as a dict) for this query: the service rebuilds the
        same stream from it, so pages built here are the pages it serves."""
        out = {"query": self.query, "negative": self.negative, "shared_seeds": self.shared_seeds}
        if self.toward:
            out["toward"] = self.toward
        return out | {k: v for k, v in sampling.items() if v is not None}


@dataclass
class IndexBuildConfig:
    """What to build.

    Attributes:
        pages: pages per query, from page 0.
        page_size: results per page (the service's default is 24).
        owner: the store owner the results belong to ("" without named users).
        sampling: `SAMPLING_FIELDS` given for every stream (None: the model's own).
        version: the version written into every PNG's metadata.
    """

    pages: int
    page_size: int = 24
    owner: str = ""
    sampling: dict = field(default_factory=dict)
    version: str = __version__

    def check(self) -> IndexBuildConfig:
        from noise2art.methods.index import MAX_PAGE_SIZE

        if isinstance(self.pages, bool) or not isinstance(self.pages, int) or not 1 <= self.pages <= 100_000:
            raise InvalidArgument("pages", f"must be an integer in [1, 100000], got {self.pages!r}")
        if (isinstance(self.page_size, bool) or not isinstance(self.page_size, int)
                or not 1 <= self.page_size <= MAX_PAGE_SIZE):
            raise InvalidArgument("page-size", f"must be an integer in [1, {MAX_PAGE_SIZE}], got {self.page_size!r}")
        unknown = set(self.sampling) - set(SAMPLING_FIELDS)
        if unknown:
            raise InvalidArgument("sampling", f"unknown fields {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class PageTask:
    """One page of one stream to render: everything a worker needs, as plain data."""

    request: dict  # the stream's `StreamRequest` dict
    stream_id: str
    embedding_id: str | None  # the stored query embedding its images name
    page: int
    page_size: int
    owner: str
    version: str

    def to_row(self) -> dict:
        return {"task": json.dumps(self.__dict__, sort_keys=True)}

    @classmethod
    def from_row(cls, row: dict) -> PageTask:
        return cls(**json.loads(row["task"]))


@dataclass
class PageOutput:
    """A rendered page: its results' indices and seeds, and the store items of its images
    (`(png_bytes, fields)`, one per result, in idx order)."""

    stream_id: str
    page: int
    owner: str
    idxs: list[int]
    seeds: list[int]
    items: list[tuple[bytes, dict]]
    worker: int = 0  # the pid that rendered it (the cluster tests kill one)


@dataclass
class BuildReport:
    """What a build did: `rendered` pages written now, `skipped` pages stored before,
    `duplicates` page outputs that arrived for a page already written (retries), `adopted`
    pages whose images were stored without their results, and every result of the asked pages."""

    rendered: int = 0
    skipped: int = 0
    duplicates: int = 0
    adopted: int = 0
    seconds: float = 0.0
    images: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"images": self.images, "seconds": round(self.seconds, 3), "rendered_pages": self.rendered,
                "skipped_pages": self.skipped, "duplicate_pages": self.duplicates, "adopted_pages": self.adopted}


# --------------------------------------------------------------------------- queries


def read_queries(path: str | Path) -> list[QuerySpec]:
    """A queries file: one prompt per line, or JSON lines `{"query", "negative", "toward",
    "shared_seeds"}`. Blank lines and lines starting with `#` are skipped."""
    path = Path(path).expanduser()
    out = []
    for n, line, obj in read_entries(path, "queries"):
        if obj is not None:
            query = obj.get("query")
            if not isinstance(query, str) or not query.strip():
                raise InvalidArgument("queries", f"{path.name} line {n}: needs a non-empty \"query\"")
            extra = set(obj) - {"query", "negative", "toward", "shared_seeds"}
            if extra:
                raise InvalidArgument("queries", f"{path.name} line {n}: unknown keys {sorted(extra)}")
            out.append(QuerySpec(query.strip(), str(obj.get("negative") or ""), obj.get("toward") or None,
                                 bool(obj.get("shared_seeds", False))))
        else:
            out.append(QuerySpec(line))
    if not out:
        raise InvalidArgument("queries", f"'{path}' holds no query")
    if len(out) > MAX_QUERIES:
        raise InvalidArgument("queries", f"at most {MAX_QUERIES} queries, got {len(out)}")
    return out


# --------------------------------------------------------------------------- planning


def plan(model, store, queries: list[QuerySpec],
         config: IndexBuildConfig) -> tuple[list[PageTask], list[PageTask], int]:
    """Record every query's stream and embedding in the store; returns `(todo, done, adopted)`:
    page tasks to render, pages stored whole already, and how many of those were half-written
    pages adopted now."""
    from noise2art.methods.index import page_indices
    from noise2art.service.runners import build_stream, save_embedding, stream_view

    config.check()
    todo, done = [], []
    adopted = 0
    seen = set()
    for spec in queries:
        request = spec.request(config.sampling)
        stream = build_stream(model, store, request, config.owner)
        if stream.id in seen:  # the same query twice in the file
            continue
        seen.add(stream.id)
        store.add_stream(stream.id, {"request": request, "view": stream_view(stream)})
        embedding_id = save_embedding(model, store, stream.anchors[0].embedding, source="query", owner=config.owner)
        for page in range(config.pages):
            idxs = page_indices(page, config.page_size)
            task = PageTask(request, stream.id, embedding_id, page, config.page_size, config.owner, config.version)
            have = store.stream_results(stream.id, config.owner, idxs.start, idxs.stop)
            if len(have) < len(idxs) and adopt_page(store, task):
                adopted += 1
                have = store.stream_results(stream.id, config.owner, idxs.start, idxs.stop)
            (done if len(have) == len(idxs) else todo).append(task)
    return todo, done, adopted


def adopt_page(store, task: PageTask) -> bool:
    """Name as results the images of this page that were stored without their result rows
    (a writer stopped between the two transactions). True when the page is whole now."""
    from noise2art.methods.index import page_indices

    idxs = page_indices(task.page, task.page_size)
    rows = store.db.execute(
        "SELECT i.id, json_extract(i.extra, '$.stream.idx') AS idx FROM images i WHERE i.owner = ? AND "
        "json_extract(i.extra, '$.stream.stream') = ? AND json_extract(i.extra, '$.stream.idx') >= ? AND "
        "json_extract(i.extra, '$.stream.idx') < ? AND NOT EXISTS (SELECT 1 FROM stream_results r WHERE "
        "r.image_id = i.id) ORDER BY i.created", (task.owner, task.stream_id, idxs.start, idxs.stop)).fetchall()
    first: dict[int, str] = {}
    for row in rows:
        first.setdefault(int(row["idx"]), row["id"])
    have = store.stream_results(task.stream_id, task.owner, idxs.start, idxs.stop)
    missing = [i for i in idxs if i not in have]
    if not missing or any(i not in first for i in missing):
        return False
    store.add_stream_results(task.stream_id, task.owner, [(i, first[i]) for i in missing])
    return True


# --------------------------------------------------------------------------- render and write


class PageRenderer:
    """Renders page tasks on one model; keeps each stream it built (a query is encoded once)."""

    def __init__(self, model):
        self.model = model
        self._streams: dict[str, object] = {}

    def stream(self, task: PageTask):
        from noise2art.service.runners import build_stream

        stream = self._streams.get(task.stream_id)
        if stream is None:
            # Query streams need no store: the request holds everything.
            stream = build_stream(self.model, None, task.request, task.owner)
            if stream.id != task.stream_id:
                raise RuntimeError(f"stream {task.stream_id} rebuilt as {stream.id}: the workers' model or "
                                   "settings differ from the planner's")
            self._streams[stream.id] = stream
        return stream

    def render(self, task: PageTask) -> PageOutput:
        """One page -> its `PageOutput` (the service's batches: `FIRST_BATCH`, then the
        settings' batch size)."""
        import os

        import torch

        from noise2art.service.records import FIRST_BATCH, page_items
        from noise2art.methods.index import page_indices

        stream = self.stream(task)
        idxs = list(page_indices(task.page, task.page_size))
        items: list = []

        def on_batch(results, images) -> None:
            items.extend(page_items(self.model, stream, results, images, version=task.version, owner=task.owner,
                                    job_id=None, embedding_id=task.embedding_id))

        with torch.no_grad():
            results = stream.results(idxs)
            stream.render(results, on_batch=on_batch, first_batch=FIRST_BATCH)
        return PageOutput(task.stream_id, task.page, task.owner, idxs, [r.seed for r in results], items,
                          worker=os.getpid())


def write_page(store, out: PageOutput) -> str:
    """Store a rendered page unless it is stored already; returns "written" or "duplicate".

    The images go in one transaction (files first, as `Store.add_images` always does),
    then the results that name them."""
    have = store.stream_results(out.stream_id, out.owner, out.idxs[0], out.idxs[-1] + 1)
    if len(have) == len(out.idxs):
        return "duplicate"
    keep = [(i, item) for i, item in zip(out.idxs, out.items) if i not in have]
    rows = store.add_images([item for _, item in keep])
    store.add_stream_results(out.stream_id, out.owner, [(i, row["id"]) for (i, _), row in zip(keep, rows)])
    return "written"


Runner = Callable[[list[PageTask]], Iterable[PageOutput]]


def local_runner(model) -> Runner:
    """Render the tasks one after another on `model`, in this process."""
    renderer = PageRenderer(model)

    def run(tasks: list[PageTask]) -> Iterator[PageOutput]:
        for task in tasks:
            yield renderer.render(task)

    return run


def listing(store, tasks: list[PageTask]) -> list[dict]:
    """Every stored result of `tasks`' pages: `{"stream", "idx", "seed", "sha256"}`, by stream and idx."""
    from noise2art.methods.index import page_indices

    out = []
    for task in sorted(tasks, key=lambda t: (t.stream_id, t.page)):
        idxs = page_indices(task.page, task.page_size)
        rows = store.stream_results(task.stream_id, task.owner, idxs.start, idxs.stop)
        out += [{"stream": task.stream_id, "idx": i, "seed": int(rows[i]["seed"]), "sha256": rows[i]["sha256"]}
                for i in sorted(rows)]
    return out


def build_index(model, store, queries: list[QuerySpec], config: IndexBuildConfig, *, runner: Runner | None = None,
                on_page: Callable[[PageOutput, str, int, int], None] | None = None) -> BuildReport:
    """Render every query's first `config.pages` pages that are not stored yet, and store them.

    Args:
        model: plans the streams (and renders them with the default runner).
        runner: where pages render (default `local_runner(model)`); outputs may come in any
            order and more than once.
        on_page: `(output, "written" | "duplicate", pages done, pages to do)` after each output.
    """
    start = time.perf_counter()
    todo, done, adopted = plan(model, store, queries, config)
    report = BuildReport(skipped=len(done), adopted=adopted)
    if todo:
        run = runner or local_runner(model)
        finished = 0
        for out in run(todo):
            status = write_page(store, out)
            if status == "written":
                report.rendered += 1
                finished += 1
            else:
                report.duplicates += 1
            if on_page is not None:
                on_page(out, status, finished, len(todo))
        if finished < len(todo):
            raise RuntimeError(f"the runner returned {finished} of {len(todo)} pages")
    report.images = listing(store, todo + done)
    report.seconds = time.perf_counter() - start
    return report
