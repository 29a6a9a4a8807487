"""`noise2art feed` on the tiny SD model: a terminal feed that saves and resumes; the study's checks."""

from __future__ import annotations

import io
import json

import pytest

from noise2art.cli.main import main


def run(capsys, monkeypatch, stdin: str, *argv):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_terminal_feed_saves_likes_and_resumes(tiny_sd_path, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "feed"
    common = ("--model", str(tiny_sd_path), "--steps", "2", "--scheduler", "ddim", "--page", "3")
    code, out, _ = run(capsys, monkeypatch, "2\nq\n", "feed", "a red ball", "--session", str(folder), *common)
    assert code == 0 and out.count("item_") == 6  # two pages shown before quitting
    state = json.loads((folder / "feed.json").read_text())["feed"]
    reactions = [i["reaction"] for i in state["items"]]
    assert reactions[:3] == ["skip", "like", "skip"] and reactions[3:] == [None] * 3
    assert len(list(folder.glob("item_*.png"))) == 6
    code, out, _ = run(capsys, monkeypatch, "q\n", "feed", "--session", str(folder), *common)
    assert code == 0 and "item_00006.png" in out  # it goes on where it stopped


def test_feed_arguments(tiny_sd_path, tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "", "feed", "--model", str(tiny_sd_path))
    assert code == 2 and "topics" in err
    code, _, err = run(capsys, monkeypatch, "", "feed", "a", "--serendipity", "2", "--model", str(tiny_sd_path),
                       "--session", str(tmp_path / "x"))
    assert code == 2 and "serendipity" in err
    code, _, err = run(capsys, monkeypatch, "", "feed", "simulate", "--items", "20", "--pool", "30",
                       "--model", str(tiny_sd_path))
    assert code == 2 and "pool" in err
    # The tiny model has no attribute classifiers: the study says what it needs.
    code, _, err = run(capsys, monkeypatch, "", "feed", "simulate", "--users", "2", "--items", "12", "--pool", "24",
                       "--model", str(tiny_sd_path), "--steps", "2")
    assert code == 2 and "attribute classifiers" in err


@pytest.mark.slow
def test_the_study_keeps_its_pool_and_loads_it_for_the_same_settings(tmp_path, capsys, monkeypatch):
    """On the embedded model (it has the attribute classifiers), at 2 steps."""
    pool = tmp_path / "pool.npz"
    args = ("feed", "simulate", "--users", "2", "--items", "12", "--pool", "24", "--steps", "2", "--json",
            "--pool-file", str(pool))
    code, first, _ = run(capsys, monkeypatch, "", *args)
    assert code == 0 and pool.is_file()
    mtime = pool.stat().st_mtime_ns
    code, again, _ = run(capsys, monkeypatch, "", *args)
    assert code == 0 and json.loads(again) == json.loads(first) and pool.stat().st_mtime_ns == mtime
    # Other settings render (and keep) another pool.
    code, _, _ = run(capsys, monkeypatch, "", *args[:-5], "--steps", "3", "--json", "--pool-file", str(pool))
    assert code == 0 and pool.stat().st_mtime_ns != mtime
