"""The store: schema and migrations, content-addressed blobs, check / repair, recovery, library paging."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from noise2art.store import Store, decode_cursor, encode_cursor
from noise2art.store.blobs import BlobStore
from noise2art.store.schema import MIGRATIONS
from tests.store.helpers import BASE_FIELDS, add_images, image_items

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def raw(store: Store) -> sqlite3.Connection:
    """A plain connection, as another program would open the file."""
    return sqlite3.connect(store.db_path, isolation_level=None)


# --------------------------------------------------------------------------- schema


def test_fresh_database_is_migrated_wal_with_foreign_keys(store):
    db = store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "logins", "jobs", "embeddings", "images", "artifacts", "likes", "events", "sessions"} <= tables


def test_every_table_is_strict(store):
    rows = store.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                            "AND name NOT LIKE 'sqlite_%'").fetchall()
    assert rows
    for name, sql in rows:
        assert sql.rstrip().upper().endswith("STRICT"), name


def test_strict_tables_refuse_a_value_of_the_wrong_type(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO jobs (id, kind, owner, status, priority, request, request_key, rerunnable, "
                         "created) VALUES ('j', 'generate', '', 'queued', 'high', '{}', 'k', 1, 1.0)")
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO users (name, password_hash, created) VALUES ('u', 'h', 'yesterday')")
    assert store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_foreign_keys_and_status_check_are_enforced(store):
    fields = dict(BASE_FIELDS, prompt="x", seed=1, job_id="0123456789abcdef")  # no such job
    with pytest.raises(sqlite3.IntegrityError):
        store.add_images([(b"x", fields)])
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO jobs (id, kind, owner, status, priority, request, request_key, rerunnable, "
                         "created) VALUES ('j', 'generate', '', 'paused', 1, '{}', 'k', 1, 1.0)")


def test_reopening_keeps_the_rows_and_files(tmp_path):
    s = Store(tmp_path / "d")
    job = s.create_job("generate", {"seeds": [1]}, owner="ann", priority=10, request_key="k", rerunnable=True)
    rows = add_images(s, 3, owner="ann")
    s.set_like(rows[0]["id"], "ann", True)
    s.close()

    again = Store(tmp_path / "d")
    try:
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert again.get_job(job["id"])["request"] == {"seeds": [1]}
        assert [again.get_image(r["id"])["seed"] for r in rows] == [0, 1, 2]
        assert again.liked(rows[0]["id"], "ann") and not again.liked(rows[1]["id"], "ann")
        assert again.image_path(rows[2]).read_bytes() == b"png  2"
        assert again.check().ok
    finally:
        again.close()


def test_a_store_from_a_newer_version_refuses_to_open(tmp_path):
    Store(tmp_path / "d").close()
    db = sqlite3.connect(tmp_path / "d" / "store.sqlite3")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(tmp_path / "d")
    db = sqlite3.connect(tmp_path / "d" / "store.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1  # left as it was
    db.close()


def test_an_older_database_is_migrated_forward(tmp_path, monkeypatch):
    """A store at version 1 gains a later migration on the next open, once."""
    Store(tmp_path / "d").close()
    import noise2art.store.schema as schema

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, "CREATE TABLE extra_t (x INTEGER) STRICT"])
    s = Store(tmp_path / "d")
    try:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        s.db.execute("INSERT INTO extra_t VALUES (1)")
    finally:
        s.close()
    s = Store(tmp_path / "d")  # already there: not applied twice
    try:
        assert s.db.execute("SELECT COUNT(*) FROM extra_t").fetchone()[0] == 1
    finally:
        s.close()


# --------------------------------------------------------------------------- blobs


def test_blobs_are_content_addressed_and_stored_once(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    data = b"some image bytes"
    digest = blobs.put(data, "png")
    assert digest == hashlib.sha256(data).hexdigest()
    path = blobs.path(digest, "png")
    assert path == tmp_path / "blobs" / digest[:2] / f"{digest}.png"
    assert path.read_bytes() == data
    assert blobs.put(data, "png") == digest
    assert [d for d, _, _ in blobs.files()] == [digest]
    assert blobs.verify(digest, "png") is None
    other = blobs.put(b"other bytes", "png")
    assert other != digest and len(list(blobs.files())) == 2
    assert not blobs.temporary_files()


def test_identical_images_share_one_file(store):
    items = image_items(1) + image_items(1)  # same bytes twice, two rows
    rows = store.add_images(items)
    assert len(rows) == 2 and rows[0]["sha256"] == rows[1]["sha256"]
    report = store.check()
    assert report.ok and report.rows == 2 and report.files == 1


@pytest.mark.parametrize("digest, ext", [
    ("../../etc/passwd", "png"),
    ("a" * 63, "png"),
    ("A" * 64, "png"),
    ("a" * 64 + "/..", "png"),
    ("a" * 64, "../png"),
    ("a" * 64, "png/x"),
    ("a" * 64, ""),
    ("g" * 64, "png"),
])
def test_blob_path_refuses_anything_but_a_hex_digest(tmp_path, digest, ext):
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        blobs.path(digest, ext)
    with pytest.raises(ValueError):
        blobs.read(digest, ext)


def test_verify_names_missing_and_corrupt_files(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"abc", "png")
    assert blobs.verify("0" * 64, "png") == "missing"
    path = blobs.path(digest, "png")
    path.write_bytes(b"abd")
    assert "sha256" in blobs.verify(digest, "png")


# --------------------------------------------------------------------------- check and repair


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_check_passes_on_a_good_store(store):
    add_images(store, 4)
    store.add_embedding(b"emb", model_id="tiny", prompt="p", negative="", source="prompt", owner="")
    store.add_artifact(b"GIF89a...", ext="gif", media_type="image/gif", job_id=None, owner="")
    report = store.check()
    assert report.ok
    assert (report.rows, report.files) == (6, 6)
    assert report.problems == [] and report.orphans == [] and report.temporary == []


def test_check_reports_a_row_whose_file_is_missing(store):
    rows = add_images(store, 3)
    store.image_path(rows[1]).unlink()
    report = store.check()
    assert not report.ok
    assert len(report.problems) == 1
    assert rows[1]["id"] in report.problems[0] and "missing" in report.problems[0]
    assert not store.check(repair=True, orphan_age=0).ok  # repair cannot bring a file back


def test_check_reports_a_corrupted_file(store):
    rows = add_images(store, 3)
    emb = store.add_embedding(b"embedding bytes", model_id="tiny", prompt="p", negative="", source="prompt",
                              owner="")
    flip_a_byte(store.image_path(rows[2]))
    flip_a_byte(store.blobs.path(emb["sha256"], "safetensors"))
    report = store.check()
    assert not report.ok
    assert len(report.problems) == 2
    assert any(rows[2]["id"] in p and "sha256" in p for p in report.problems)
    assert any(p.startswith("embeddings ") and emb["id"] in p for p in report.problems)
    # A corrupted file is still referenced: repair must not delete it as an orphan.
    store.check(repair=True, orphan_age=0)
    assert store.image_path(rows[2]).is_file()


def test_orphans_are_listed_and_removed_by_repair(store):
    add_images(store, 2)
    digest = store.blobs.put(b"no row names me", "png")
    orphan = store.blobs.path(digest, "png")
    report = store.check()
    assert not report.ok and report.problems == []
    assert report.orphans == [str(orphan.relative_to(store.root))]

    kept = store.check(repair=True, orphan_age=3600.0)  # young: a writer may be about to commit its row
    assert kept.orphans == [] and kept.ok and orphan.is_file()

    old = time.time() - 7200
    os.utime(orphan, (old, old))
    repaired = store.check(repair=True, orphan_age=3600.0)
    assert repaired.orphans == [str(orphan.relative_to(store.root))] and repaired.ok
    assert not orphan.exists()
    after = store.check()
    assert after.ok and after.orphans == [] and after.files == 2


def test_temporary_files_are_listed_and_removed(store):
    add_images(store, 1)
    folder = store.blobs.root / "ab"
    folder.mkdir(parents=True, exist_ok=True)
    young = folder / (".ab" + "0" * 62 + ".1234abcd.tmp.png")
    old = folder / (".ab" + "1" * 62 + ".5678abcd.tmp.png")
    young.write_bytes(b"half")
    old.write_bytes(b"half")
    then = time.time() - 7200
    os.utime(old, (then, then))

    report = store.check()
    assert sorted(report.temporary) == sorted(str(p.relative_to(store.root)) for p in (young, old))
    assert report.orphans == [] and report.files == 1  # not counted as blobs

    store.check(repair=True, orphan_age=3600.0)
    assert young.exists() and not old.exists()
    store.check(repair=True, orphan_age=0.0)
    assert not young.exists()
    assert store.check().temporary == []


# --------------------------------------------------------------------------- recovery


def test_recover_requeues_rerunnable_jobs_and_interrupts_the_others(store):
    def job(rerunnable):
        j = store.create_job("generate", {}, owner="", priority=10, request_key=os.urandom(4).hex(),
                             rerunnable=rerunnable)
        return j["id"]

    again, once, waiting, done = job(True), job(False), job(True), job(True)
    for j in (again, once, done):
        assert store.start_job(j)
    store.set_progress(again, 0.5)
    store.finish_job(done, "completed", result={"image_ids": []})
    orphan = store.blobs.path(store.blobs.put(b"left by a crash", "png"), "png")
    assert sorted(store.check(running_ok=False).stuck_jobs) == sorted([again, once])
    assert not store.check(running_ok=False).ok

    out = store.recover()

    assert out == {"requeued": 1, "interrupted": 1, "removed_orphans": 1, "removed_temporary": 0}
    a, o, w, d = (store.get_job(j) for j in (again, once, waiting, done))
    assert (a["status"], a["started"], a["progress"]) == ("queued", None, 0)
    assert o["status"] == "interrupted" and o["error"] and o["finished"] is not None
    assert w["status"] == "queued" and d["status"] == "completed"
    assert not orphan.exists()
    assert store.check(running_ok=False).ok
    assert [q["id"] for q in store.queued()] == [again, waiting]  # priority, then age
    assert store.recover() == {"requeued": 0, "interrupted": 0, "removed_orphans": 0, "removed_temporary": 0}


def test_a_crash_between_the_file_and_its_row_leaves_only_an_orphan(tmp_path):
    """The writing process dies after the blob is durable, inside the row's transaction."""
    data = tmp_path / "d"
    Store(data).close()
    script = textwrap.dedent(f"""
        import os
        from noise2art.store import Store
        from tests.store.helpers import image_items

        store = Store({str(data)!r})
        real = store.transaction

        class Crash:
            def __enter__(self):
                self.cm = real()
                db = self.cm.__enter__()
                return db
            def __exit__(self, *exc):
                # The INSERTs ran but never commit: the process dies here.
                os._exit(17)

        store.transaction = Crash
        store.add_images(image_items(3, tag="crash"))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr

    store = Store(data)
    try:
        assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0  # no row without its file
        report = store.check()
        assert report.problems == [] and not report.ok
        assert len(report.orphans) == 3 and report.files == 3
        assert store.check(repair=True, orphan_age=0).ok
        after = store.check()
        assert after.ok and after.files == 0 and after.orphans == []
    finally:
        store.close()


def test_a_crash_after_the_file_write_recovers_on_restart(store):
    """The same crash, in-process: the blob is put, the row never inserted; `recover` cleans up."""
    good = add_images(store, 2)
    digest = store.blobs.put(b"rendered, never committed", "png")
    assert store.check().orphans and store.check().problems == []
    assert store.recover()["removed_orphans"] == 1
    assert not store.blobs.exists(digest, "png")
    report = store.check()
    assert report.ok and report.rows == 2 and report.files == 2
    assert all(store.image_path(r).is_file() for r in good)


def test_a_failed_row_insert_never_leaves_a_row_without_its_file(store):
    items = image_items(2)
    items[1][1]["seed"] = "not a number"  # STRICT: the second INSERT fails, the transaction rolls back
    with pytest.raises(sqlite3.IntegrityError):
        store.add_images(items)
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    report = store.check()
    assert report.problems == [] and len(report.orphans) == 2


# --------------------------------------------------------------------------- library


def ordered_ids(store: Store, owner: str | None = None) -> list[str]:
    sql, params = "SELECT id FROM images", []
    if owner is not None:
        sql, params = sql + " WHERE owner = ?", [owner]
    return [r[0] for r in store.db.execute(sql + " ORDER BY created DESC, id DESC", params)]


def all_pages(store: Store, owner: str | None, limit: int, **kwargs) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        rows, cursor = store.library(owner, limit=limit, cursor=cursor, **kwargs)
        pages.append([r["id"] for r in rows])
        if cursor is None:
            return pages
        assert len(pages) < 100


def test_library_pages_are_keyset_without_repeats_or_gaps(store):
    for k in range(5):
        add_images(store, 9, start=10 * k, owner="ann", tag=str(k))
    add_images(store, 4, owner="bob", tag="bob")
    # Ties on `created` must still page exactly once each (ordered by id among equals).
    store.db.execute("UPDATE images SET created = 1000.0 WHERE seed % 3 = 0")
    expected = ordered_ids(store, "ann")
    assert len(expected) == 45
    for limit in (1, 7, 24, 45, 100):
        pages = all_pages(store, "ann", limit)
        flat = [i for p in pages for i in p]
        assert flat == expected, limit
        assert all(len(p) == limit for p in pages[:-1])
        assert 0 < len(pages[-1]) <= limit
    assert len([i for p in all_pages(store, None, 10) for i in p]) == 49


def test_library_pages_stay_stable_when_new_images_arrive(store):
    add_images(store, 10, owner="ann")
    first, cursor = store.library("ann", limit=4)
    add_images(store, 3, start=100, owner="ann", tag="new")  # newer than everything: not on later pages
    rest = [i for p in all_pages_from(store, "ann", 4, cursor) for i in p]
    assert len(set(r["id"] for r in first) | set(rest)) == 10
    assert not set(r["id"] for r in first) & set(rest)


def all_pages_from(store, owner, limit, cursor):
    pages = []
    while cursor is not None:
        rows, cursor = store.library(owner, limit=limit, cursor=cursor)
        pages.append([r["id"] for r in rows])
    return pages


def test_library_cursor_round_trip_and_junk():
    assert decode_cursor(encode_cursor(12.5, "0123456789abcdef")) == (12.5, "0123456789abcdef")
    for junk in ("", "abc", "bm90IGpzb24", encode_cursor(1.0, "x")[:-3] + "!!!"):
        with pytest.raises(ValueError):
            decode_cursor(junk)


def test_library_liked_filter(store):
    rows = add_images(store, 10, owner="ann")
    liked = {rows[k]["id"] for k in (0, 3, 4, 9)}
    for i in liked:
        store.set_like(i, "ann", True)
    store.set_like(rows[5]["id"], "bob", True)  # another user's like does not count
    store.set_like(rows[3]["id"], "ann", True)  # twice: still one like
    got, _ = store.library("ann", limit=50, liked=True, liker="ann")
    assert {r["id"] for r in got} == liked and all(r["liked"] for r in got)
    got, _ = store.library("ann", limit=50, liked=False, liker="ann")
    assert {r["id"] for r in got} == {r["id"] for r in rows} - liked and not any(r["liked"] for r in got)
    pages = all_pages(store, "ann", 3, liked=True, liker="ann")
    assert [i for p in pages for i in p] == [i for i in ordered_ids(store, "ann") if i in liked]
    store.set_like(rows[0]["id"], "ann", False)
    got, _ = store.library("ann", limit=50, liked=True, liker="ann")
    assert {r["id"] for r in got} == liked - {rows[0]["id"]}


def test_library_query_words_escape_like_wildcards(store):
    prompts = ["100% cat", "100 cat", "cat_dog", "catXdog", "a DOG on a hill", "back\\slash"]
    ids = {}
    for k, p in enumerate(prompts):
        ids[p] = add_images(store, 1, start=k, prompt=p, tag=p)[0]["id"]

    def found(q):
        rows, _ = store.library(None, limit=50, query=q)
        return {r["id"] for r in rows}

    assert found("100%") == {ids["100% cat"]}
    assert found("cat_dog") == {ids["cat_dog"]}
    assert found("_") == {ids["cat_dog"]}
    assert found("%") == {ids["100% cat"]}
    assert found("dog") == {ids["cat_dog"], ids["catXdog"], ids["a DOG on a hill"]}  # case-insensitive
    assert found("dog hill") == {ids["a DOG on a hill"]}  # every word must appear
    assert found("cat 100") == {ids["100% cat"], ids["100 cat"]}
    assert found("\\") == {ids["back\\slash"]}
    assert found("nothing") == set()
    assert len(found("")) == len(prompts)


def test_recovery_at_start_up_does_not_hash_every_file(tmp_path, monkeypatch):
    # Start-up must stay fast on a big store: only `store check` reads and hashes the files.
    store = Store(tmp_path / "data")
    store.add_embedding(b"embedding bytes", model_id="m", prompt="p", negative="", source="prompt", owner="")
    monkeypatch.setattr(store.blobs, "verify", lambda *a: (_ for _ in ()).throw(AssertionError("hashed")))
    assert store.recover()["removed_orphans"] == 0
    with pytest.raises(AssertionError, match="hashed"):
        store.check()
    store.close()


def test_nested_transactions_commit_together_and_listeners_hear_once_after(store):
    heard = []
    store.event_listeners.append(lambda: heard.append(store.events_after(0)))
    job = store.create_job("generate", {}, owner="local", priority=0, request_key="k", rerunnable=True)
    with store.transaction():
        store.add_event("job.progress", {"n": 1}, job_id=job["id"], owner="local")
        store.set_progress(job["id"], 0.5)
        store.add_event("job.progress", {"n": 2}, job_id=job["id"], owner="local")
        assert heard == []  # nothing is announced before it commits
    assert len(heard) == 1 and [e["data"]["n"] for e in heard[0]] == [1, 2]

    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_event("job.progress", {"n": 3}, job_id=job["id"], owner="local")
            store.finish_job(job["id"], "failed", error="x")
            raise RuntimeError("the outer transaction fails")
    assert len(heard) == 1  # rolled back: nothing to hear
    assert [e["data"]["n"] for e in store.events_after(0)] == [1, 2]
    assert store.get_job(job["id"])["status"] == "queued"
    store.add_event("job.progress", {"n": 4}, job_id=job["id"], owner="local")  # a lone event still rings
    assert len(heard) == 2
