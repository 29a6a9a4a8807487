"""`noise2art store check`: exit codes, what it prints, `--repair` and `--json`."""

from __future__ import annotations

import json
import os
import time

import pytest

from noise2art.cli.main import main
from noise2art.store import Store
from tests.store.helpers import add_images

JSON_KEYS = {"ok", "rows", "files", "problems", "orphans", "temporary", "stuck_jobs", "repaired"}


@pytest.fixture
def data(tmp_path):
    """A data folder with three images and one embedding; returns (folder, image rows)."""
    folder = tmp_path / "data"
    store = Store(folder)
    rows = add_images(store, 3)
    store.add_embedding(b"embedding", model_id="tiny", prompt="p", negative="", source="prompt", owner="")
    paths = [store.image_path(r) for r in rows]
    store.close()
    return folder, paths


def check(capsys, *args):
    code = main(["store", "check", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_good_store_exits_0(data, capsys):
    folder, _ = data
    code, out, err = check(capsys, "--data", folder)
    assert code == 0, err
    assert out.startswith("ok: 4 rows, 4 files, 0 problems")
    assert "problem" not in err


def test_a_missing_file_exits_1_and_is_printed(data, capsys):
    folder, paths = data
    paths[0].unlink()
    code, out, err = check(capsys, "--data", folder)
    assert code == 1
    assert out.startswith("INCONSISTENT:") and "1 problems" in out
    assert "problem: images" in err and "missing" in err


def test_a_corrupt_file_exits_1_and_is_printed(data, capsys):
    folder, paths = data
    content = bytearray(paths[1].read_bytes())
    content[0] ^= 0xFF
    paths[1].write_bytes(bytes(content))
    code, out, err = check(capsys, "--data", folder)
    assert code == 1
    assert "problem: images" in err and "sha256" in err
    # --repair does not hide it: the row still has no good file.
    code, _, _ = check(capsys, "--data", folder, "--repair")
    assert code == 1
    assert paths[1].is_file()


def test_orphans_fail_the_check_and_repair_removes_them(data, capsys):
    folder, _ = data
    store = Store(folder)
    orphan = store.blobs.path(store.blobs.put(b"nobody's file", "png"), "png")
    store.close()
    code, out, err = check(capsys, "--data", folder)
    assert code == 1 and "1 unreferenced files" in out
    assert f"unreferenced: {orphan.relative_to(folder)}" in err

    # A young orphan may belong to a writer about to commit its row: --repair keeps it.
    code, out, _ = check(capsys, "--data", folder, "--repair")
    assert code == 0 and orphan.is_file() and "0 removed files" in out

    old = time.time() - 3600
    os.utime(orphan, (old, old))
    code, out, err = check(capsys, "--data", folder, "--repair")
    assert code == 0
    assert "1 removed files" in out and f"removed: {orphan.relative_to(folder)}" in err
    assert not orphan.exists()
    code, out, _ = check(capsys, "--data", folder)
    assert code == 0 and "0 unreferenced files" in out


def test_json_output_shape(data, capsys):
    folder, paths = data
    code, out, _ = check(capsys, "--data", folder, "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == JSON_KEYS
    assert report == {"ok": True, "rows": 4, "files": 4, "problems": [], "orphans": [], "temporary": [],
                      "stuck_jobs": [], "repaired": False}

    paths[2].unlink()
    code, out, _ = check(capsys, "--data", folder, "--json")
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    report = json.loads(lines[0])
    assert report["ok"] is False and report["rows"] == 4 and report["files"] == 3
    assert len(report["problems"]) == 1 and "missing" in report["problems"][0]

    code, out, _ = check(capsys, "--data", folder, "--json", "--repair")
    assert json.loads(out)["repaired"] is True


def test_a_folder_without_a_store_exits_2_with_one_line(tmp_path, capsys):
    code, out, err = check(capsys, "--data", tmp_path)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "store" in lines[0] and "holds no noise2art store" in lines[0]
    assert not (tmp_path / "store.sqlite3").exists()  # checking never creates a store


def test_a_missing_folder_exits_2(tmp_path, capsys):
    code, _, err = check(capsys, "--data", tmp_path / "nope")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nope").exists()
