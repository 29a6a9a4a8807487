"""`noise2art explore` on the tiny SD model, with the answers fed to `input()`."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from noise2art.cli.main import main

FAST = ["--steps", "2", "--scheduler", "ddim", "--pool-size", "24"]


def feed(monkeypatch, lines):
    """Answer `input()` with these lines, then end of input."""
    answers = iter(lines)

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state(folder):
    return json.loads((folder / "session.json").read_text())


def test_choose_undo_choose_quit(tiny_sd_path, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    feed(monkeypatch, ["3 0.5", "u", "2 0.25", "q"])
    code, out, err = run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder),
                         "--seed", "4", *FAST)
    assert code == 0, err
    saved = state(folder)
    assert saved["seed"] == 4 and saved["round"] == 2
    assert [(h["index"], h["strength"]) for h in saved["history"]] == [(1, 0.25)]  # 1-based "2" is index 1
    assert str(folder / "round_0001.png") in out and str(folder / "round_0002.png") in out
    assert "undid the choice of round 1" in out and "resume with" in out
    with Image.open(folder / "round_0001.png") as sheet:
        assert sheet.size[0] == 6 * (32 + 2) + 2  # current + 5 candidates in one row
    with Image.open(folder / "map.png") as im:
        assert im.size == (512, 512)
    assert (folder / "current.safetensors").is_file()
    assert not list(folder.rglob(".*.tmp"))


def test_bad_answers_are_asked_again_and_end_of_input_quits(tiny_sd_path, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    feed(monkeypatch, ["", "x", "7", "1 1.5", "1 nan", "1 0.5 9", "u"])  # then EOF
    code, out, err = run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder),
                         *FAST)
    assert code == 0
    assert err.count("error:") == 7
    assert "[1, 5]" in err and "strength" in err and "no choice to undo" in err
    assert state(folder)["history"] == []


def test_resume_continues_and_rejects_contradicting_flags(tiny_sd_path, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    feed(monkeypatch, ["1 0.5", "q"])
    assert run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder), *FAST)[0] == 0
    feed(monkeypatch, ["4 1", "q"])
    code, out, err = run(capsys, "explore", "--model", str(tiny_sd_path), "--session", str(folder))
    assert code == 0, err
    assert "resumed" in err and "round 2" in err
    assert [h["index"] for h in state(folder)["history"]] == [0, 3]
    before = (folder / "session.json").read_bytes()
    code, _, err = run(capsys, "explore", "--model", str(tiny_sd_path), "--session", str(folder), "--variants", "3")
    assert code == 2 and "variants" in err and "uses 5" in err
    code, _, err = run(capsys, "explore", "a blue cube", "--model", str(tiny_sd_path), "--session", str(folder))
    assert code == 2 and "prompt" in err
    code, _, err = run(capsys, "explore", "--model", str(tiny_sd_path), "--session", str(folder), "--precision", "bf16")
    assert code == 2 and "precision" in err and "uses 'auto'" in err
    assert (folder / "session.json").read_bytes() == before


def test_a_session_file_without_a_newer_setting_resumes_with_its_default(tiny_sd_path, tmp_path, monkeypatch,
                                                                         capsys):
    folder = tmp_path / "s"
    feed(monkeypatch, ["1 0.5", "q"])
    assert run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder), *FAST,
               "--precision", "auto")[0] == 0
    data = state(folder)
    # As written before sessions had a precision, when sampling settings sat at the config's top level.
    sampling = data["config"].pop("sampling")
    data["config"].update({k: sampling[k] for k in ("steps", "guidance", "scheduler", "batch_size")})
    (folder / "session.json").write_text(json.dumps(data))
    feed(monkeypatch, ["q"])
    code, _, err = run(capsys, "explore", "--model", str(tiny_sd_path), "--session", str(folder), "--precision", "auto")
    assert code == 0, err
    assert "resumed" in err


def test_auto_target_json(tiny_sd_path, tmp_path, capsys):
    folder = tmp_path / "auto"
    code, out, err = run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder),
                         "--auto-target", "a blue cube", "--rounds", "2", "--recommender", "random", "--json", *FAST)
    assert code == 0, err
    data = json.loads(out)  # exactly one JSON object on stdout
    assert len(data["distances"]) == 3 and len(data["baseline_distances"]) == 3
    assert all(isinstance(d, float) and d >= 0 for d in data["distances"] + data["baseline_distances"])
    # The baseline keeps a rewrite only when it is nearer the target.
    b = data["baseline_distances"]
    assert all(y <= x for x, y in zip(b, b[1:]))
    assert len(data["choices"]) == 2 and all(1 <= c <= 5 for c in data["choices"])
    assert data["similarity_error_max"] < 1e-3
    assert data["target"] == "a blue cube" and data["session"] == str(folder)
    assert len(state(folder)["history"]) == 2
    with Image.open(data["sheet"]) as sheet:
        assert sheet.size[0] == 3 * (32 + 2) + 2


def test_auto_target_prints_per_round_distances(tiny_sd_path, tmp_path, capsys):
    code, out, err = run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--out", str(tmp_path),
                         "--auto-target", "a cat", "--rounds", "1", "--no-baseline", *FAST)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("round")]
    assert [line.split(":")[0] for line in lines] == ["round 0", "round 1"]
    assert list(tmp_path.glob("explore_a-red-ball*/session.json"))


@pytest.mark.parametrize("argv, message", [
    (["a red ball", "--json"], "json"),
    (["--session", "{tmp}/none"], "prompt"),
    (["a red ball", "--variants", "0"], "n_variants"),
    (["a red ball", "--similarity", "1.5"], "similarity"),
    (["a red ball", "--auto-target", "a cat", "--rounds", "0"], "rounds"),
    (["a red ball", "--auto-target", "a cat", "--strength", "2"], "strength"),
])
def test_bad_arguments_fail_before_loading(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, "explore", *argv, "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and message in err and "no-such-model" not in err
    assert out == ""


def test_corrupted_session_is_a_clear_error(tiny_sd_path, tmp_path, capsys):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "session.json").write_text("{not json")
    code, out, err = run(capsys, "explore", "--model", str(tiny_sd_path), "--session", str(folder))
    assert code == 2 and "session" in err and "JSON" in err
    assert [p.name for p in folder.iterdir()] == ["session.json"]


def test_resume_with_another_model_names_both(tiny_sd_path, tiny_sd_v_path, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    feed(monkeypatch, ["q"])
    assert run(capsys, "explore", "a red ball", "--model", str(tiny_sd_path), "--session", str(folder), *FAST)[0] == 0
    code, _, err = run(capsys, "explore", "--model", str(tiny_sd_v_path), "--session", str(folder))
    assert code == 2 and str(tiny_sd_path) in err and str(tiny_sd_v_path) in err


def test_session_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    from noise2art.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["explore", "a cat", "--session", str(blocker / "session")])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "session" in err and "cannot create" in err
