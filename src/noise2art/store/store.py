"""The store: rows in SQLite, files content-addressed beside them, one folder for everything.

Layout of a data folder::

    store.sqlite3        the rows (WAL mode: also store.sqlite3-wal / -shm)
    blobs/ab/<sha>.png   images; .safetensors embeddings; .gif / .mp4 renders
    sessions/<id>/       feedback sessions (their own folder format, `methods.feedback`)

The rule that makes a crash harmless: a file is written (temporary name, fsync, rename)
**before** the transaction that names it commits. A crash can leave a file no row names
(removed by `recover` and `check(repair=True)`), never a row without its file.

Owners: every row has an `owner`, the user name, or "" when the server runs without named
users. Methods that take `owner=None` do not filter by it.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from noise2art.store.blobs import BlobStore
from noise2art.store.schema import FINAL_STATUSES, connect

IMAGE_FIELDS = ("model_id", "embedding_id", "prompt", "negative", "seed", "steps", "guidance", "scheduler", "width",
                "height", "precision", "method", "job_id", "owner")
ORPHAN_AGE_S = 600.0
"""`check(repair=True)` on a live store removes only files no row has named for this long
(a writer may be between its file and its row)."""


def new_id() -> str:
    """A fresh random id: 16 hex digits (64 bits), safe in URLs and file names."""
    return secrets.token_hex(8)


def _row(row: sqlite3.Row | None, json_fields: tuple[str, ...] = ()) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for name in json_fields:
        if out.get(name) is not None:
            out[name] = json.loads(out[name])
    return out


def encode_cursor(created: float, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The `(created, id)` a library cursor stands for; ValueError when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(created, (int, float)) or not isinstance(row_id, str):
            raise TypeError
        return float(created), row_id
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("not a library cursor") from None


@dataclass
class CheckReport:
    """What `Store.check` found: `problems` (rows whose file is missing or wrong), `orphans`
    (files no row names), `temporary` (leftovers of interrupted writes), `repaired`."""

    rows: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    stuck_jobs: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """True when every row has its file; after a repair, also no orphan left."""
        return not self.problems and not self.stuck_jobs and (self.repaired or not self.orphans)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "files": self.files, "problems": self.problems,
                "orphans": self.orphans, "temporary": self.temporary, "stuck_jobs": self.stuck_jobs,
                "repaired": self.repaired}


class Store:
    """Rows and files of one data folder. Safe to use from several threads (one SQLite
    connection per thread)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "store.sqlite3"
        self.blobs = BlobStore(self.root / "blobs")
        self.sessions_dir = self.root / "sessions"
        self.sessions_dir.mkdir(exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.event_listeners: list[Callable[[], None]] = []  # called after each event commits
        self.db  # create and migrate now, in the opening thread

    # -- connections -----------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so two writers never deadlock on upgrade).

        Nested on one thread, the inner ones join the outer: everything commits (or rolls
        back) together, and event listeners hear of the events once, after the commit."""
        local = self._local
        depth = getattr(local, "depth", 0)
        db = self.db
        if depth:
            local.depth = depth + 1
            try:
                yield db
            finally:
                local.depth = depth
            return
        db.execute("BEGIN IMMEDIATE")
        local.depth, local.new_events = 1, False
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            local.depth = 0
        db.execute("COMMIT")
        if local.new_events:
            for listener in self.event_listeners:
                listener()

    # -- embeddings --------------------------------------------------------------------------

    def add_embedding(self, data: bytes, *, model_id: str, prompt: str, negative: str, source: str, owner: str,
                      job_id: str | None = None) -> dict:
        """Store a `.safetensors` embedding (already checked by the caller) and its row."""
        digest = self.blobs.put(data, "safetensors")  # durable before the row commits
        row_id = new_id()
        with self.transaction() as db:
            db.execute("INSERT INTO embeddings (id, sha256, model_id, prompt, negative, source, job_id, owner, created)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (row_id, digest, model_id, prompt, negative, source, job_id, owner, time.time()))
        return self.get_embedding(row_id)

    def get_embedding(self, row_id: str, owner: str | None = None) -> dict | None:
        row = self.db.execute("SELECT * FROM embeddings WHERE id = ?", (row_id,)).fetchone()
        out = _row(row)
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    def embedding_bytes(self, row: dict) -> bytes:
        return self.blobs.read(row["sha256"], "safetensors")

    # -- images ------------------------------------------------------------------------------

    def add_images(self, items: list[tuple[bytes, dict]]) -> list[dict]:
        """Store PNGs and their rows (`IMAGE_FIELDS`, plus `extra`) in one transaction.

        A field `features`, `(kind, float32 bytes)`, stores the image's feature vector for
        search (`features_after`)."""
        digests = [self.blobs.put(png, "png") for png, _ in items]  # every file first
        ids = []
        now = time.time()
        with self.transaction() as db:
            for k, (digest, (_, fields)) in enumerate(zip(digests, items)):
                row_id = new_id()
                ids.append(row_id)
                values = [fields.get(name) for name in IMAGE_FIELDS]
                db.execute(f"INSERT INTO images (id, sha256, {', '.join(IMAGE_FIELDS)}, extra, created) "
                           f"VALUES (?, ?, {', '.join('?' * len(IMAGE_FIELDS))}, ?, ?)",
                           [row_id, digest, *values, json.dumps(fields.get("extra") or {}), now + k * 1e-6])
                if fields.get("features") is not None:
                    kind, vector = fields["features"]
                    db.execute("INSERT INTO image_features (image_id, kind, vector) VALUES (?, ?, ?)",
                               (row_id, kind, vector))
        return [self.get_image(i) for i in ids]

    def image_feature(self, image_id: str) -> tuple[str, bytes] | None:
        row = self.db.execute("SELECT kind, vector FROM image_features WHERE image_id = ?", (image_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def features_after(self, last_rowid: int, kind: str, limit: int = 50000) -> list[tuple[int, str, str, bytes]]:
        """Feature vectors stored after `last_rowid`: `(rowid, image_id, owner, float32 bytes)`."""
        return [tuple(r) for r in self.db.execute(
            "SELECT f.rowid, f.image_id, i.owner, f.vector FROM image_features f JOIN images i ON i.id = f.image_id "
            "WHERE f.rowid > ? AND f.kind = ? ORDER BY f.rowid LIMIT ?", (last_rowid, kind, limit))]

    def get_image(self, row_id: str, owner: str | None = None) -> dict | None:
        row = self.db.execute("SELECT * FROM images WHERE id = ?", (row_id,)).fetchone()
        out = _row(row, ("extra",))
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    def image_path(self, row: dict) -> Path:
        return self.blobs.path(row["sha256"], "png")

    def liked(self, image_id: str, owner: str) -> bool:
        return self.db.execute("SELECT 1 FROM likes WHERE image_id = ? AND owner = ?",
                               (image_id, owner)).fetchone() is not None

    def set_like(self, image_id: str, owner: str, liked: bool) -> None:
        with self.transaction() as db:
            if liked:
                db.execute("INSERT OR IGNORE INTO likes (image_id, owner, created) VALUES (?, ?, ?)",
                           (image_id, owner, time.time()))
            else:
                db.execute("DELETE FROM likes WHERE image_id = ? AND owner = ?", (image_id, owner))

    def library(self, owner: str | None, *, limit: int = 24, cursor: str | None = None, liked: bool | None = None,
                query: str | None = None, liker: str = "") -> tuple[list[dict], str | None]:
        """Images, newest first, `limit` per page; returns `(rows, next_cursor)`.

        Args:
            owner: only this owner's images (None: everyone's).
            cursor: from the previous page (opaque; `decode_cursor` raises ValueError on junk).
            liked: only images `liker` liked (True) or did not (False).
            query: words that must all appear in the prompt (case-insensitive).
        """
        where, params = [], []
        if owner is not None:
            where.append("i.owner = ?")
            params.append(owner)
        if cursor:
            created, row_id = decode_cursor(cursor)
            where.append("(i.created < ? OR (i.created = ? AND i.id < ?))")
            params += [created, created, row_id]
        if liked is not None:
            where.append(("" if liked else "NOT ") + "EXISTS (SELECT 1 FROM likes l WHERE l.image_id = i.id "
                                                      "AND l.owner = ?)")
            params.append(liker)
        for word in (query or "").split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("i.prompt LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        sql = ("SELECT i.*, EXISTS (SELECT 1 FROM likes l WHERE l.image_id = i.id AND l.owner = ?) AS liked "
               "FROM images i")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.created DESC, i.id DESC LIMIT ?"
        rows = [_row(r, ("extra",)) for r in self.db.execute(sql, [liker, *params, limit + 1]).fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        for r in rows:
            r["liked"] = bool(r["liked"])
        next_cursor = encode_cursor(rows[-1]["created"], rows[-1]["id"]) if more and rows else None
        return rows, next_cursor

    # -- artifacts (GIF / MP4 renders) ------------------------------------------------------

    def add_artifact(self, data: bytes, *, ext: str, media_type: str, job_id: str | None, owner: str) -> dict:
        digest = self.blobs.put(data, ext)
        row_id = new_id()
        with self.transaction() as db:
            db.execute("INSERT INTO artifacts (id, sha256, ext, media_type, job_id, owner, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (row_id, digest, ext, media_type, job_id, owner, time.time()))
        return self.get_artifact(row_id)

    def get_artifact(self, row_id: str, owner: str | None = None) -> dict | None:
        out = _row(self.db.execute("SELECT * FROM artifacts WHERE id = ?", (row_id,)).fetchone())
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    # -- jobs --------------------------------------------------------------------------------

    def create_job(self, kind: str, request: dict, *, owner: str, priority: int, request_key: str,
                   rerunnable: bool) -> dict:
        row_id = new_id()
        with self.transaction() as db:
            db.execute("INSERT INTO jobs (id, kind, owner, status, priority, request, request_key, rerunnable, "
                       "created) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                       (row_id, kind, owner, priority, json.dumps(request), request_key, int(rerunnable),
                        time.time()))
        return self.get_job(row_id)

    def find_duplicate(self, request_key: str, owner: str) -> dict | None:
        """A job with the same request that is queued, running or completed (None if none)."""
        row = self.db.execute("SELECT * FROM jobs WHERE request_key = ? AND owner = ? AND status IN "
                              "('queued', 'running', 'completed') ORDER BY created DESC LIMIT 1",
                              (request_key, owner)).fetchone()
        return _row(row, ("request", "result"))

    def get_job(self, row_id: str, owner: str | None = None) -> dict | None:
        out = _row(self.db.execute("SELECT * FROM jobs WHERE id = ?", (row_id,)).fetchone(), ("request", "result"))
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    def list_jobs(self, owner: str | None, limit: int = 50) -> list[dict]:
        sql, params = "SELECT * FROM jobs", []
        if owner is not None:
            sql, params = sql + " WHERE owner = ?", [owner]
        rows = self.db.execute(sql + " ORDER BY created DESC LIMIT ?", [*params, limit]).fetchall()
        return [_row(r, ("request", "result")) for r in rows]

    def count_pending(self, owner: str | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')", []
        if owner is not None:
            sql, params = sql + " AND owner = ?", [owner]
        return self.db.execute(sql, params).fetchone()[0]

    def queued(self, limit: int = 64) -> list[dict]:
        """Queued jobs in the order they should run: priority first, then age."""
        rows = self.db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, created, id "
                               "LIMIT ?", (limit,)).fetchall()
        return [_row(r, ("request", "result")) for r in rows]

    def start_job(self, row_id: str) -> bool:
        """queued -> running; False when the job is no longer queued (canceled meanwhile)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET status = 'running', started = ? WHERE id = ? AND status = 'queued'",
                             (time.time(), row_id))
        return cur.rowcount == 1

    def requeue_job(self, row_id: str) -> bool:
        """running -> queued (it gave way to a job of higher priority); False if not running."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET status = 'queued', started = NULL WHERE id = ? AND status = 'running'",
                             (row_id,))
        return cur.rowcount == 1

    def raise_priority(self, row_id: str, priority: int) -> None:
        """A queued or running job asked for again more urgently takes the higher priority."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET priority = ? WHERE id = ? AND priority < ? AND status IN ('queued', 'running')",
                       (priority, row_id, priority))

    def higher_priority_queued(self, priority: int) -> bool:
        """Whether a queued job outranks `priority`."""
        return self.db.execute("SELECT 1 FROM jobs WHERE status = 'queued' AND priority > ? LIMIT 1",
                               (priority,)).fetchone() is not None

    def set_progress(self, row_id: str, progress: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (progress, row_id))

    def finish_job(self, row_id: str, status: str, *, result: dict | None = None, error: str | None = None) -> bool:
        """Move a queued or running job to a final status; False if it already had one."""
        assert status in FINAL_STATUSES
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ?, "
                             "progress = CASE WHEN ? = 'completed' THEN 1.0 ELSE progress END "
                             "WHERE id = ? AND status IN ('queued', 'running')",
                             (status, json.dumps(result) if result is not None else None, error, time.time(), status,
                              row_id))
        return cur.rowcount == 1

    # -- events ------------------------------------------------------------------------------

    def add_event(self, type_: str, data: dict, *, job_id: str | None, owner: str) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO events (job_id, owner, type, data, created) VALUES (?, ?, ?, ?, ?)",
                             (job_id, owner, type_, json.dumps(data), time.time()))
            self._local.new_events = True  # the listeners hear of it once the transaction commits
        return int(cur.lastrowid)

    def events_after(self, last_id: int, *, job_id: str | None = None, owner: str | None = None,
                     limit: int = 200) -> list[dict]:
        sql, params = "SELECT * FROM events WHERE id > ?", [last_id]
        if job_id is not None:
            sql, params = sql + " AND job_id = ?", [*params, job_id]
        if owner is not None:
            sql, params = sql + " AND owner = ?", [*params, owner]
        rows = self.db.execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [_row(r, ("data",)) for r in rows]

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, password_hash: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET password_hash = excluded.password_hash", (name, password_hash, time.time()))

    def get_user(self, name: str) -> dict | None:
        return _row(self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone())

    def has_users(self) -> bool:
        return self.db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def add_login(self, token_hash: str, user: str, lifetime_s: float) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM logins WHERE expires < ?", (now,))
            db.execute("INSERT INTO logins (token_hash, user, created, expires) VALUES (?, ?, ?, ?)",
                       (token_hash, user, now, now + lifetime_s))

    def login_user(self, token_hash: str) -> str | None:
        """The user a login token belongs to, while it has not expired."""
        row = self.db.execute("SELECT user FROM logins WHERE token_hash = ? AND expires > ?",
                              (token_hash, time.time())).fetchone()
        return row["user"] if row else None

    def remove_login(self, token_hash: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM logins WHERE token_hash = ?", (token_hash,))

    # -- streams of the infinite index ------------------------------------------------------

    def add_stream(self, stream_id: str, request: dict) -> None:
        """Record a stream's definition (the same id always has the same definition)."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO streams (id, request, created) VALUES (?, ?, ?)",
                       (stream_id, json.dumps(request), time.time()))

    def get_stream(self, stream_id: str) -> dict | None:
        return _row(self.db.execute("SELECT * FROM streams WHERE id = ?", (stream_id,)).fetchone(), ("request",))

    def add_stream_results(self, stream_id: str, owner: str, pairs: list[tuple[int, str]]) -> None:
        """Name images `(idx, image_id)` as results of a stream (the images are stored already)."""
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO stream_results (stream_id, owner, idx, image_id) "
                           "VALUES (?, ?, ?, ?)", [(stream_id, owner, i, image_id) for i, image_id in pairs])

    def stream_results(self, stream_id: str, owner: str, start: int, stop: int) -> dict[int, dict]:
        """The stored results `start <= idx < stop`: idx -> image row."""
        rows = self.db.execute("SELECT r.idx AS result_idx, i.* FROM stream_results r JOIN images i ON "
                               "i.id = r.image_id WHERE r.stream_id = ? AND r.owner = ? AND r.idx >= ? AND "
                               "r.idx < ? ORDER BY r.idx", (stream_id, owner, start, stop)).fetchall()
        out = {}
        for r in rows:
            row = _row(r, ("extra",))
            out[row.pop("result_idx")] = row
        return out

    # -- feeds -------------------------------------------------------------------------------

    def add_feed(self, topics: list, state: dict, owner: str) -> dict:
        row_id = new_id()
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO feeds (id, owner, topics, state, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                       (row_id, owner, json.dumps(topics), json.dumps(state), now, now))
        return self.get_feed(row_id)

    def get_feed(self, row_id: str, owner: str | None = None) -> dict | None:
        out = _row(self.db.execute("SELECT * FROM feeds WHERE id = ?", (row_id,)).fetchone(), ("topics", "state"))
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    def save_feed_state(self, row_id: str, state: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE feeds SET state = ?, updated = ? WHERE id = ?", (json.dumps(state), time.time(), row_id))

    # -- feedback sessions -------------------------------------------------------------------

    def add_session(self, prompt: str, owner: str) -> dict:
        row_id = new_id()
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO sessions (id, owner, prompt, created, updated) VALUES (?, ?, ?, ?, ?)",
                       (row_id, owner, prompt, now, now))
        return self.get_session(row_id)

    def get_session(self, row_id: str, owner: str | None = None) -> dict | None:
        out = _row(self.db.execute("SELECT * FROM sessions WHERE id = ?", (row_id,)).fetchone())
        if out is None or (owner is not None and out["owner"] != owner):
            return None
        return out

    def list_sessions(self, owner: str | None, limit: int = 100) -> list[dict]:
        sql, params = "SELECT * FROM sessions", []
        if owner is not None:
            sql, params = sql + " WHERE owner = ?", [owner]
        return [_row(r) for r in self.db.execute(sql + " ORDER BY updated DESC LIMIT ?", [*params, limit])]

    def touch_session(self, row_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), row_id))

    def session_dir(self, row_id: str) -> Path:
        """The folder of a session: named by its id (16 hex digits), never by a request."""
        if len(row_id) != 16 or any(c not in "0123456789abcdef" for c in row_id):
            raise ValueError(f"not a session id: {row_id!r}")
        return self.sessions_dir / row_id

    # -- recovery and checks -----------------------------------------------------------------

    def recover(self) -> dict:
        """After a crash or a stop: jobs left `running` are requeued when safe to rerun, else
        marked `interrupted`; temporary and unreferenced files are removed.

        Call it only when no other process writes to this store (the server holds a lock).
        """
        with self.transaction() as db:
            requeued = db.execute("UPDATE jobs SET status = 'queued', started = NULL, progress = 0 "
                                  "WHERE status = 'running' AND rerunnable = 1").rowcount
            interrupted = db.execute("UPDATE jobs SET status = 'interrupted', finished = ?, error = "
                                     "'the server stopped while this job ran' WHERE status = 'running'",
                                     (time.time(),)).rowcount
        # Only the orphans and leftovers: hashing every file would make start-up as slow as a
        # full `store check`.
        report = self.check(repair=True, orphan_age=0.0, verify=False)
        return {"requeued": requeued, "interrupted": interrupted, "removed_orphans": len(report.orphans),
                "removed_temporary": len(report.temporary)}

    def referenced(self) -> set[tuple[str, str]]:
        """Every `(sha256, ext)` a row names."""
        db = self.db
        out = {(r[0], "png") for r in db.execute("SELECT sha256 FROM images")}
        out |= {(r[0], "safetensors") for r in db.execute("SELECT sha256 FROM embeddings")}
        out |= {(r[0], r[1]) for r in db.execute("SELECT sha256, ext FROM artifacts")}
        return out

    def check(self, *, repair: bool = False, orphan_age: float = ORPHAN_AGE_S, running_ok: bool = True,
              verify: bool = True) -> CheckReport:
        """Verify every row's file (present, content matching its sha256) and list orphans.

        Args:
            verify: read and hash every row's file; False only lists orphans and leftovers.
            repair: remove orphans older than `orphan_age` seconds and temporary files.
            running_ok: jobs in `running` are fine (a live server); False reports them
                (a stopped store should hold none).
        """
        report = CheckReport()
        db = self.db
        tables = (("images", "'png'"), ("embeddings", "'safetensors'"), ("artifacts", "ext")) if verify else ()
        for table, ext_sql in tables:
            for row in db.execute(f"SELECT id, sha256, {ext_sql} FROM {table}"):
                report.rows += 1
                problem = self.blobs.verify(row[1], row[2])
                if problem:
                    report.problems.append(f"{table} {row[0]}: file {row[1][:12]}….{row[2]} {problem}")
        for row in db.execute("SELECT id FROM images WHERE embedding_id IS NOT NULL AND embedding_id NOT IN "
                              "(SELECT id FROM embeddings)"):
            report.problems.append(f"images {row[0]}: its embedding row is missing")
        if not running_ok:
            report.stuck_jobs = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
        referenced = self.referenced()
        now = time.time()
        for digest, ext, path in self.blobs.files():
            report.files += 1
            if (digest, ext) not in referenced:
                try:
                    age = now - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if not repair or age >= orphan_age:
                    report.orphans.append(str(path.relative_to(self.root)))
                    if repair:
                        self.blobs.remove(path)
        temporary = self.blobs.temporary_files(older_than=orphan_age if repair else 0.0)
        report.temporary = [str(p.relative_to(self.root)) for p in temporary]
        if repair:
            for path in temporary:
                self.blobs.remove(path)
            report.repaired = True
        return report
