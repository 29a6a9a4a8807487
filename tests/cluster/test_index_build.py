"""The index build in-process: planning against the store, resuming, writing each page once,
adopting half-written pages, the queries file and the CLI (with and without Ray installed)."""

from __future__ import annotations

import json
import sys

import pytest

from noise2art.errors import InvalidArgument
from noise2art.indexing.build import (
    IndexBuildConfig,
    PageRenderer,
    QuerySpec,
    build_index,
    plan,
    read_queries,
    write_page,
)
from noise2art.store import Store

QUERIES = [QuerySpec("a red ball"), QuerySpec("a blue cube", negative="blurry")]
SAMPLING = {"steps": 2}


def config(pages=2, page_size=3) -> IndexBuildConfig:
    return IndexBuildConfig(pages=pages, page_size=page_size, sampling=dict(SAMPLING))


def image_rows(store: Store) -> int:
    return store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def test_build_stores_every_page_and_resumes(tiny_model, tmp_path):
    store = Store(tmp_path / "data")
    first = build_index(tiny_model, store, QUERIES[:1], config(pages=1))
    assert (first.rendered, first.skipped) == (1, 0)
    # Asking for more pages renders only the new ones; the stored page is skipped.
    second = build_index(tiny_model, store, QUERIES[:1], config(pages=2))
    assert (second.rendered, second.skipped) == (1, 1)
    assert second.images[:3] == first.images
    assert [r["idx"] for r in second.images] == list(range(6))
    assert image_rows(store) == 6
    again = build_index(tiny_model, store, QUERIES[:1], config(pages=2))
    assert (again.rendered, again.skipped) == (0, 2)
    assert again.images == second.images
    # Every listed file is the blob the store holds, and the store checks clean.
    for r in again.images:
        assert store.blobs.verify(r["sha256"], "png") is None
    assert store.check().ok


def test_same_files_in_another_store_and_as_the_service_stores_them(tiny_model, tmp_path):
    a = build_index(tiny_model, Store(tmp_path / "a"), QUERIES, config())
    b = build_index(tiny_model, Store(tmp_path / "b"), QUERIES, config())
    assert a.images == b.images and len(a.images) == 12
    assert len({r["sha256"] for r in a.images}) == 12
    assert len({r["seed"] for r in a.images if r["stream"] == a.images[0]["stream"]}) == 6
    # The stream is recorded with the service's request, so the service rebuilds the same one.
    store = Store(tmp_path / "a")
    streams = sorted({r["stream"] for r in a.images})
    assert sorted(store.get_stream(s)["request"]["request"]["query"] for s in streams) == ["a blue cube", "a red ball"]
    image = store.stream_results(a.images[0]["stream"], "", 0, 1)[0]
    assert image["method"] == "search" and image["embedding_id"] is not None
    assert image["extra"]["stream"]["idx"] == 0


def test_a_page_that_arrives_twice_is_written_once(tiny_model, tmp_path):
    store = Store(tmp_path / "data")
    todo, done, _ = plan(tiny_model, store, QUERIES[:1], config(pages=1))
    assert len(todo) == 1 and not done
    out = PageRenderer(tiny_model).render(todo[0])
    assert write_page(store, out) == "written"
    assert write_page(store, out) == "duplicate"
    assert image_rows(store) == 3


def test_a_half_written_page_is_adopted_not_rendered_again(tiny_model, tmp_path):
    store = Store(tmp_path / "data")
    todo, _, _ = plan(tiny_model, store, QUERIES[:1], config(pages=1))
    out = PageRenderer(tiny_model).render(todo[0])
    store.add_images(out.items)  # the writer stopped before the results were named
    report = build_index(tiny_model, store, QUERIES[:1], config(pages=1))
    assert (report.rendered, report.adopted, report.skipped) == (0, 1, 1)
    assert image_rows(store) == 3
    assert [r["sha256"] for r in report.images] == [__import__("hashlib").sha256(p).hexdigest()
                                                     for p, _ in out.items]


def test_read_queries(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text('# comment\na red ball\n\n{"query": "a cube", "negative": "dark", "shared_seeds": true}\n')
    assert read_queries(path) == [QuerySpec("a red ball"), QuerySpec("a cube", "dark", None, True)]
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(InvalidArgument, match="line 1"):
        read_queries(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(InvalidArgument, match="no query"):
        read_queries(path)
    with pytest.raises(InvalidArgument, match="page-size"):
        IndexBuildConfig(pages=1, page_size=0).check()


def test_cli_build_json(tiny_sd_path, tmp_path, capsys):
    from noise2art.cli.main import main

    queries = tmp_path / "q.txt"
    queries.write_text("a red ball\n")
    argv = ["index", "build", "--queries", str(queries), "--pages", "1", "--page-size", "2", "--steps", "2",
            "--data", str(tmp_path / "data"), "--model", str(tiny_sd_path), "--device", "cpu", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in out["images"]] == [["idx", "seed", "sha256", "stream"]] * 2
    assert out["seconds"] > 0 and out["rendered_pages"] == 1
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["images"] == out["images"] and again["skipped_pages"] == 1


@pytest.mark.parametrize("argv", [
    ["index", "build", "--queries", "{q}", "--pages", "1", "--ray", "local"],
    ["serve", "--ray", "local"],
    ["retrievability", "a", "b", "--ray", "local"],
    ["world", "eval", "--ray", "local"],
])
def test_ray_flag_without_ray_names_the_extra(argv, tmp_path, monkeypatch, capsys):
    from noise2art.cli.main import main

    queries = tmp_path / "q.txt"
    queries.write_text("a red ball\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    argv = [a.format(q=queries) for a in argv] + (["--data", str(tmp_path / "d")] if argv[0] == "serve" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[cluster]"' in err[0], err


def test_a_page_crosses_the_cluster_as_plain_json_and_bytes():
    from noise2art.cluster.index import decode_output, encode_output
    from noise2art.indexing.build import PageOutput

    items = [(b"\x89PNG-a", {"seed": 5, "extra": {"stream": {"idx": 0}}, "features": ("world-clip", b"\x00\x01")}),
             (b"\x89PNG-bb", {"seed": 9, "extra": {}, "features": ("world-clip", b"")})]
    page = PageOutput("s1", 3, "alice", [0, 1], [5, 9], items, worker=42)
    encoded = encode_output(page)
    assert isinstance(encoded["meta"], str) and isinstance(encoded["blob"], bytes)
    assert decode_output(encoded["meta"], encoded["blob"]) == page


def test_cli_threads_must_be_positive(tmp_path, capsys):
    from noise2art.cli.main import main

    queries = tmp_path / "q.txt"
    queries.write_text("a red ball\n")
    assert main(["index", "build", "--queries", str(queries), "--pages", "1", "--threads", "0",
                 "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "threads" in err[0]
    assert not (tmp_path / "d").exists()
