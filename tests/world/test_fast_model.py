"""The shipped few-step student world-64-fast: loads by name, 4 single-pass UNet calls, the full model's picture."""

from __future__ import annotations

import pytest
import torch

import noise2art

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fast():
    return noise2art.load_model("world-64-fast", device="cpu")


@pytest.fixture(scope="module")
def full():
    return noise2art.load_model("world-64", device="cpu")


def test_loads_by_name_with_its_few_step_defaults_and_its_base_parts(fast, full):
    assert fast.model_id == "world-64-fast"
    run = fast.resolve()
    assert (run.steps, run.guidance, run.scheduler) == (4, 1.0, "ddim")
    assert fast.scheduler_config["clip_sample"] is False
    # The autoencoder, text encoder, vocabulary and companions are the base model's.
    assert set(fast.companions.loaded()) >= {"world_clip", "aesthetic", "attributes"}
    assert fast.vocabulary == full.vocabulary and fast.embedding_shape == full.embedding_shape
    for a, b in zip(fast.vae.state_dict().values(), full.vae.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(fast.unet.state_dict().values(), full.unet.state_dict().values()))


def test_an_image_takes_four_unet_calls(fast):
    calls = []
    handle = fast.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            fast.render("a red ball", seeds=[0, 1, 2], precision="model")
    finally:
        handle.remove()
    assert calls == [3, 3, 3, 3]  # one pass a step: guidance is distilled


def test_red_ball_is_classified_red(fast):
    with torch.no_grad():
        images = fast.render("a red ball", seeds=[0, 1, 2, 3, 4, 5])
    preds = fast.companions.attributes.predict(images)
    assert sum(p["color"] == "red" for p in preds) >= 4
    assert all(p["scene"] == "still_life" for p in preds)


def test_it_draws_the_full_models_picture_for_the_same_seed(fast, full):
    """A preview on the student and the full-quality image on the teacher show the same thing:
    the same seed is closer to the full model's image than other seeds are."""
    clip = full.companions.world_clip
    prompt = "a snow-capped mountain above a lake at sunset"
    with torch.no_grad():
        a = clip.encode_image(fast.render(prompt, seeds=list(range(6))))
        b = clip.encode_image(full.render(prompt, seeds=list(range(6))))
    sims = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T  # [6, 6]
    same = sims.diagonal()
    others = (sims.sum() - same.sum()) / (sims.numel() - len(same))
    assert same.mean() > others + 0.05


def test_world_64_previews_run_its_student(fast, full):
    """world-64's preview is world-64-fast at its own settings: the very same image, and a
    record that names the student (so `--from` loads it and draws it again)."""
    from noise2art.pngmeta import GenerationParams

    run = full.resolve(quality="preview")
    assert (run.unet, run.steps, run.guidance, run.scheduler) == ("world-64-fast", 4, 1.0, "ddim")
    assert full.resolve().unet == "" and fast.unet_variants == {}
    with torch.no_grad():
        torch.testing.assert_close(full.render("a red ball", seeds=[3, 4], quality="preview"),
                                   fast.render("a red ball", seeds=[3, 4]), atol=0, rtol=0)
    params = GenerationParams.from_settings(run, prompt="a red ball", negative="", seed=3, model=full.model_id,
                                            version="x", embedding_hash="h")
    assert params.model == "world-64-fast"


def test_only_the_model_a_student_was_distilled_from_previews_with_it():
    from noise2art.engine.loading import _preview_student

    assert _preview_student({"unet": "world-64-fast"}, "world-64")[0] == "world-64-fast"
    assert _preview_student({"unet": "world-64-fast"}, "/some/copy/of/world-64") is None
    assert _preview_student(None, "world-64") is None
    with pytest.raises(noise2art.ModelLoadError):
        _preview_student({"unet": "no-such-model"}, "world-64")
