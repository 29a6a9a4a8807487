"""The store's SQLite schema: connection settings and numbered migrations.

`PRAGMA user_version` holds the number of migrations applied; `connect` applies the
missing ones in order, each in one transaction, so a database is always at a version the
code knows. Tables are STRICT (a value of the wrong type is an error, not a silent
conversion) and every reference is a foreign key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 5000

JOB_STATUSES = ("queued", "running", "completed", "failed", "canceled", "interrupted")
FINAL_STATUSES = ("completed", "failed", "canceled", "interrupted")

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT;

    CREATE TABLE logins (
        token_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL
    ) STRICT;

    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'canceled',
                                               'interrupted')),
        priority INTEGER NOT NULL,
        request TEXT NOT NULL,
        request_key TEXT NOT NULL,
        rerunnable INTEGER NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        created REAL NOT NULL,
        started REAL,
        finished REAL
    ) STRICT;
    CREATE INDEX jobs_queue ON jobs (status, priority DESC, created);
    CREATE INDEX jobs_key ON jobs (request_key, owner);

    CREATE TABLE embeddings (
        id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        model_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        negative TEXT NOT NULL,
        source TEXT NOT NULL,
        job_id TEXT REFERENCES jobs (id),
        owner TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT;

    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        model_id TEXT NOT NULL,
        embedding_id TEXT REFERENCES embeddings (id),
        prompt TEXT NOT NULL,
        negative TEXT NOT NULL,
        seed INTEGER NOT NULL,
        steps INTEGER NOT NULL,
        guidance REAL NOT NULL,
        scheduler TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        precision TEXT NOT NULL,
        method TEXT NOT NULL,
        job_id TEXT REFERENCES jobs (id),
        owner TEXT NOT NULL,
        extra TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    ) STRICT;
    CREATE INDEX images_library ON images (owner, created DESC, id DESC);

    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        ext TEXT NOT NULL,
        media_type TEXT NOT NULL,
        job_id TEXT REFERENCES jobs (id),
        owner TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT;

    CREATE TABLE likes (
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        owner TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (image_id, owner)
    ) STRICT;

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT REFERENCES jobs (id),
        owner TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT;
    CREATE INDEX events_job ON events (job_id, id);

    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        prompt TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    ) STRICT;
    """,
    # 2: streams of the infinite index, and which image is which result of a stream.
    """
    CREATE TABLE streams (
        id TEXT PRIMARY KEY,
        request TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT;

    CREATE TABLE stream_results (
        stream_id TEXT NOT NULL REFERENCES streams (id),
        owner TEXT NOT NULL,
        idx INTEGER NOT NULL,
        image_id TEXT NOT NULL REFERENCES images (id),
        PRIMARY KEY (stream_id, owner, idx)
    ) STRICT;
    """,
    # 3: generated feeds (their learner's state as JSON, rewritten after every change).
    """
    CREATE TABLE feeds (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        topics TEXT NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    ) STRICT;
    """,
    # 4: image features (float32 unit vectors) for search over what is stored.
    """
    CREATE TABLE image_features (
        image_id TEXT PRIMARY KEY REFERENCES images (id),
        kind TEXT NOT NULL,
        vector BLOB NOT NULL
    ) STRICT;
    """,
]


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, migrated to the latest version.

    WAL journal (readers never wait for the writer), foreign keys on, a busy timeout so
    that concurrent writers wait instead of failing, and `synchronous=NORMAL`, which in
    WAL mode loses no committed transaction on a process crash.
    """
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                         isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db)
    return db


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks; returns its version afterwards."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"the store was written by a newer noise2art (schema version {version}, "
                           f"this one knows {len(MIGRATIONS)})")
    for number in range(version, len(MIGRATIONS)):
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated meanwhile: check again inside the lock.
            if db.execute("PRAGMA user_version").fetchone()[0] != number:
                db.execute("ROLLBACK")
                continue
            for statement in _statements(MIGRATIONS[number]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return db.execute("PRAGMA user_version").fetchone()[0]


def _statements(script: str) -> list[str]:
    """Split a migration into statements (none of ours holds a `;` inside a literal)."""
    return [s.strip() for s in script.split(";") if s.strip()]
