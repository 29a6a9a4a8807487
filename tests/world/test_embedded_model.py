"""The shipped embedded model: loads offline, follows a prompt, evaluates itself."""

from __future__ import annotations

import json

import pytest
import torch

import noise2art
from noise2art.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    return noise2art.load_model("embedded", device="cpu")


def test_loads_offline_with_companions(embedded):
    assert embedded.model_id == "world-64"
    assert embedded.embedding_shape == (32, 384)
    assert embedded.native_size == 64
    assert set(embedded.companions.loaded()) >= {"world_clip", "aesthetic", "attributes"}


def test_red_ball_is_classified_red(embedded):
    with torch.no_grad():
        images = embedded.render("a red ball", seeds=[0, 1, 2, 3, 4, 5], steps=20)
    preds = embedded.companions.attributes.predict(images)
    assert sum(p["color"] == "red" for p in preds) >= 4
    assert all(p["scene"] == "still_life" for p in preds)


def test_landscape_prompt_gives_landscapes(embedded):
    with torch.no_grad():
        images = embedded.render("mountain with a sunset and a river", seeds=[0, 1, 2, 3], steps=20)
    preds = embedded.companions.attributes.predict(images)
    assert all(p["scene"] == "landscape" for p in preds)


def test_world_eval_json(capsys, tmp_path):
    """Adherence tells right labels from wrong ones: the same prompts and seeds (so the same
    images) score high against the attributes they name and low against contradicting ones."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na forest at night\n"
                       '{"prompt": "a red ball", "attributes": {"color": "blue", "shape": "cube"}}\n'
                       '{"prompt": "a forest at night", "attributes": {"time": "day"}}\n')
    code = main(["world", "eval", "--prompts", str(prompts), "--seeds", "2", "--steps", "4", "--precision", "bf16",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["n_images"] == 8 and {"color", "shape", "time", "trees"} <= set(out["per_family"])
    right, wrong = [p["adherence"] for p in out["prompts"][:2]], [p["adherence"] for p in out["prompts"][2:]]
    assert min(right) >= 0.75 and max(wrong) <= 0.25, (right, wrong)
    assert out["mean_adherence"] == pytest.approx(sum(right + wrong) / 4)
