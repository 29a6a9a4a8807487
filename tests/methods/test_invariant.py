"""Seed-invariant embeddings on the tiny random SD model (3 denoising steps, 2-4 iterations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from tests.methods.nan_grad import NanGrad
from noise2art.methods.invariant import (
    CANCELLED,
    COMPLETED,
    ConsistencyReport,
    InvariantConfig,
    consistency,
    draw_seeds,
    invariant,
    noised_target,
    prepare_image,
    render_target,
    schedule_timesteps,
    unnamed_families,
)

PROMPT = "a red ball"
TARGET = 7
# Two stages of two iterations: stage 0 compares latents after 1 step, stage 1 after 2 (the
# reference's comparison of noisy latents; the clean-prediction default is tested below).
FAST = dict(sampling=SamplingOverrides(steps=3), stage_iterations=2, max_stage=1, stage_steps=None, compare="latents")
FRESH = [101, 102, 103, 104, 105]  # never drawn by the runs below (draws are in [0, 2^32) from seed 0)


def cos_score(model, embedding, reference, seeds, stop_after, **kwargs):
    """Mean `10000 cos` of `embedding`'s latents on `seeds` (no slerp) to `reference`'s on the target seed."""
    with torch.no_grad():
        target = model.sample(reference, [TARGET], stop_after=stop_after, steps=3, **kwargs).double().flatten(1)
        z = model.sample(embedding, seeds, stop_after=stop_after, steps=3, **kwargs).double().flatten(1)
    return float((10000 * (z @ target.T).squeeze(1) / (z.norm(dim=1) * target.norm())).mean())


def single_vector_start(emb):
    """The reference's initial iterate: the prompt's last row repeated over rows 1..L-1."""
    cond = emb.cond.clone()
    cond[0, 1:] = emb.cond[0, -1]
    return emb.with_tensors(cond)


@pytest.fixture(scope="module")
def runs(tiny_model):
    """One 4-iteration run per mode, two stages each."""
    emb = tiny_model.encode([PROMPT])
    out = {}
    for mode in ("single-vector", "full"):
        out[mode] = invariant(tiny_model, emb, InvariantConfig(target_seed=TARGET, iterations=4, mode=mode, lr=0.2,
                                                               **FAST))
    return emb, out


def test_cosine_to_the_target_rises_on_fresh_seeds(tiny_model, runs):
    emb, out = runs
    for mode, start in (("single-vector", single_vector_start(emb)), ("full", emb)):
        result = out[mode]
        assert result.stop_reason == COMPLETED and result.iterations == 4
        assert all(math.isfinite(s) for s in result.scores)
        # Judged on seeds the run never drew, without the slerp toward the target's noise,
        # at the last stage's step: the embedding itself moved the latents toward the target.
        before = cos_score(tiny_model, start, emb, FRESH, stop_after=2)
        after = cos_score(tiny_model, result.final_embedding, emb, FRESH, stop_after=2)
        assert after > before + 5, (mode, before, after)  # about +15 (single) / +11 (full) on the tiny model


def test_single_vector_keeps_rows_equal_row0_and_uncond(runs):
    emb, out = runs
    result = out["single-vector"]
    for final in (result.final_embedding, result.best_embedding):
        rows = final.cond[0, 1:]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # one vector over rows 1..L-1
        assert torch.equal(final.cond[0, 0], emb.cond[0, 0])  # row 0 never moves
        assert torch.equal(final.uncond, emb.uncond)
    assert not torch.allclose(result.final_embedding.cond[0, 1], emb.cond[0, -1])  # it did move


def test_full_mode_moves_rows_independently(runs):
    emb, out = runs
    final = out["full"].final_embedding
    delta = final.cond[0, 1:] - emb.cond[0, 1:]
    assert torch.equal(final.cond[0, 0], emb.cond[0, 0])
    assert torch.equal(final.uncond, emb.uncond)
    assert (delta.abs().sum(-1) > 0).all()  # every row 1.. moved
    assert not torch.allclose(delta[0], delta[1])  # ... each by its own update
    assert not torch.allclose(final.cond[0, 1], final.cond[0, 2])


def test_result_records_stages_slerp_and_seeds(runs):
    _, out = runs
    result = out["single-vector"]
    assert result.stage_of == [0, 0, 1, 1]
    assert result.slerp == pytest.approx([0.01, 0.01495, 0.01, 0.01495])  # v restarts with each stage
    assert [(s.stage, s.stop_after, s.first_iteration, s.iterations) for s in result.stages] == [(0, 1, 0, 2),
                                                                                                 (1, 2, 2, 2)]
    assert all(len(seeds) == 3 and TARGET not in seeds for seeds in result.seeds)
    assert result.best_iteration in (2, 3)  # the best of the last stage reached
    assert len(result.seconds) == result.iterations and all(t > 0 for t in result.seconds)
    assert result.total_seconds == pytest.approx(result.setup_seconds + sum(result.seconds)) and result.setup_seconds > 0


def test_each_iteration_sends_all_its_seeds_through_the_unet_in_one_batch(tiny_model):
    sizes: list[int] = []
    hook = tiny_model.unet.register_forward_pre_hook(lambda mod, args: sizes.append(int(args[0].shape[0])))
    try:
        invariant(tiny_model, PROMPT, InvariantConfig(target_seed=TARGET, iterations=3, seeds_per_step=3,
                                                      **{**FAST, "sampling": SamplingOverrides(steps=3, guidance=7.5)}))
    finally:
        hook.remove()
    # With guidance every call holds (uncond, cond) for each sample: the target is 1 sample (2 rows),
    # an iteration's seeds are 3 samples (6 rows).
    assert sizes[:3] == [2, 6, 6]  # stage 0 target (1 step), two iterations of 1 step each
    assert sizes[3:5] == [2, 2]  # stage 1: the target recomputed, now 2 steps
    # Iteration 2: two steps, each re-run in the backward pass by checkpointing; never one seed at a time.
    assert sizes[5:] == [6, 6, 6, 6]


def test_stage_targets_are_the_target_seeds_latents_at_each_step(tiny_model, runs):
    emb, out = runs
    stages = out["single-vector"].stages
    for info in stages:
        with torch.no_grad():
            expected = tiny_model.sample(emb, [TARGET], stop_after=info.stop_after, steps=3)
        torch.testing.assert_close(info.target, expected)
    assert not torch.allclose(stages[0].target, stages[1].target)


def test_image_target_is_encoded_and_noised_to_each_step(tiny_model):
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    config = InvariantConfig(target_image=image, iterations=3, seed=11,
                             **{**FAST, "sampling": SamplingOverrides(steps=3, scheduler="ddim")})
    with pytest.warns(UserWarning, match="48x40; resized, centre-cropped to 40x40 to the model's 32x32"):
        result = invariant(tiny_model, PROMPT, config)
    assert result.stop_reason == COMPLETED and result.target_seed is None and result.noise_seed == 11
    assert all(11 not in seeds for seeds in result.seeds)

    prepared, notice = prepare_image(tiny_model, image)
    assert prepared.shape == (1, 3, 32, 32) and notice
    with torch.no_grad():
        z0 = tiny_model.encode_images(prepared)
    eps = tiny_model.initial_noise([11])
    sched_timesteps = schedule_timesteps(tiny_model, 3, "ddim")
    from diffusers import DDIMScheduler

    alphas = DDIMScheduler.from_config(tiny_model.scheduler_config).alphas_cumprod
    for info in result.stages:
        abar = alphas[int(sched_timesteps[info.stop_after])]
        expected = abar.sqrt() * z0 + (1 - abar).sqrt() * eps  # the forward process at the step's timestep
        torch.testing.assert_close(info.target, expected, rtol=1e-5, atol=1e-5)
    # After the last step a perfect denoiser holds the clean latents.
    torch.testing.assert_close(noised_target(tiny_model, z0, eps, len(sched_timesteps), steps=3, scheduler="ddim"), z0)


def test_image_target_under_a_sigma_scheduler_is_z0_plus_sigma_eps(tiny_model):
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    eps = tiny_model.initial_noise([3])
    from diffusers import LMSDiscreteScheduler

    sched = LMSDiscreteScheduler.from_config(tiny_model.scheduler_config)
    sched.set_timesteps(3)
    got = noised_target(tiny_model, z0, eps, 1, steps=3, scheduler="lms")
    torch.testing.assert_close(got, z0 + sched.sigmas[1] * eps)


def test_image_target_at_native_size_has_no_notice(tiny_model):
    image = torch.rand(3, 32, 32)
    prepared, notice = prepare_image(tiny_model, image)
    assert notice is None and torch.equal(prepared[0], image)


def test_same_config_seed_gives_the_same_run(tiny_model):
    config = dict(target_seed=TARGET, iterations=2, lr=0.1, **FAST)
    a = invariant(tiny_model, PROMPT, InvariantConfig(**config))
    b = invariant(tiny_model, PROMPT, InvariantConfig(**config))
    c = invariant(tiny_model, PROMPT, InvariantConfig(seed=1, **config))
    assert a.seeds == b.seeds and a.scores == b.scores
    assert torch.equal(a.final_embedding.cond, b.final_embedding.cond)
    assert c.seeds != a.seeds


def test_drawn_seeds_avoid_the_target():
    first = int(np.random.default_rng(0).integers(0, 2**32))
    seeds = draw_seeds(np.random.default_rng(0), 3, {first})
    assert first not in seeds and len(set(seeds)) == 3


def test_cancel_returns_the_best_so_far(tiny_model):
    done = []
    config = dict(target_seed=TARGET, iterations=4, lr=0.2, **FAST)
    result = invariant(tiny_model, PROMPT, InvariantConfig(**config), callback=lambda *a: done.append(a),
                       cancel=lambda: len(done) >= 3)
    assert result.stop_reason == CANCELLED and result.iterations == 3
    assert [a[0] for a in done] == [0, 1, 2]
    # The best of the last stage reached is its only iteration, 2: the iterate after two updates,
    # which a two-iteration run ends with (the seeds drawn are the same).
    assert result.best_iteration == 2
    two = invariant(tiny_model, PROMPT, InvariantConfig(**{**config, "iterations": 2}))
    torch.testing.assert_close(result.embedding.cond, two.final_embedding.cond)


def test_cancel_before_the_first_iteration_keeps_the_start(tiny_model):
    emb = tiny_model.encode([PROMPT])
    result = invariant(tiny_model, emb, InvariantConfig(target_seed=TARGET, iterations=3, mode="full", **FAST),
                       cancel=lambda: True)
    assert result.stop_reason == CANCELLED and result.iterations == 0 and result.best_iteration is None
    assert torch.equal(result.embedding.cond, emb.cond)


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(), "target"),
        (dict(target_seed=1, target_image=torch.rand(1, 3, 32, 32)), "target"),
        (dict(target_seed=-1), "target_seed"),
        (dict(target_seed=2**63), "target_seed"),
        (dict(target_seed=1, iterations=0), "iterations"),
        (dict(target_seed=1, seeds_per_step=0), "seeds_per_step"),
        (dict(target_seed=1, mode="diagonal"), "mode"),
        (dict(target_seed=1, anneal=(0.5, 0.1)), "anneal"),
        (dict(target_seed=1, seed=2**63), "seed"),
        (dict(target_image=torch.rand(1, 3, 32, 32) * 2), "target_image"),
        (dict(target_image=torch.rand(2, 3, 32, 32)), "target_image"),
    ],
)
def test_bad_config_names_the_field(fields, name):
    with pytest.raises(InvalidArgument) as info:
        InvariantConfig(**fields).check()
    assert info.value.name == name


def test_max_stage_needs_enough_steps(tiny_model):
    with pytest.raises(InvalidArgument, match="max_stage"):
        invariant(tiny_model, PROMPT, InvariantConfig(target_seed=1, sampling=SamplingOverrides(steps=2, scheduler="ddim"),
                                                      max_stage=2, stage_steps=None))


def test_consistency_of_the_target_seed_itself_is_zero(tiny_model):
    config = InvariantConfig(target_seed=TARGET, sampling=SamplingOverrides(steps=3))
    target = render_target(tiny_model, PROMPT, config)
    report = consistency(tiny_model, PROMPT, target, [TARGET, 1], steps=3)
    assert isinstance(report, ConsistencyReport) and report.feature_kind == "thumbnail"
    assert report.distances[0] == pytest.approx(0, abs=1e-5)
    assert report.distances[1] > 0.01
    assert report.mean_distance == pytest.approx(sum(report.distances) / 2)
    assert report.agreement is None and report.images.shape == (2, 3, 32, 32)  # no attribute classifier


class ScriptedClassifier:
    """Predicts the target's attributes for the first call, then the scripted list."""

    def __init__(self, target, images):
        self.replies = [[target], images]

    def predict(self, images):
        return self.replies.pop(0)


BALL = {"scene": "still_life", "shape": "ball", "color": "red", "background": "plain", "style": "photo",
        "modifier": "none"}


def test_agreement_counts_the_families_the_prompt_leaves_unnamed(tiny_model, monkeypatch):
    images = [dict(BALL), {**BALL, "color": "blue"}, {**BALL, "style": "oil"}]
    monkeypatch.setattr(tiny_model.companions, "attributes", ScriptedClassifier(BALL, images))
    target = torch.rand(1, 3, 32, 32)
    report = consistency(tiny_model, PROMPT, target, [1, 2, 3], prompt="single color ball", steps=2)
    assert report.families == ["color", "background", "style", "modifier"]  # shape and scene are named
    assert report.agreement == pytest.approx(1 / 3)
    assert report.family_agreement == pytest.approx({"color": 2 / 3, "background": 1.0, "style": 2 / 3,
                                                     "modifier": 1.0})
    assert report.target_attributes == BALL and "images" not in report.as_dict()


def test_unnamed_families():
    assert unnamed_families("a red ball", BALL) == ["background", "style", "modifier"]
    # Colour is invisible in a sketch: it is not compared there.
    assert unnamed_families("single color ball", {**BALL, "style": "sketch"}) == ["background", "style", "modifier"]


def test_non_finite_score_stops_and_keeps_the_iterates_before_it(tiny_model, monkeypatch):
    from noise2art.methods import invariant as inv

    calls = {"n": 0}
    original = inv.cosine_scores

    def nan_on_third(target, latents):
        calls["n"] += 1
        scores = original(target, latents)
        return scores * math.nan if calls["n"] == 3 else scores

    monkeypatch.setattr(inv, "cosine_scores", nan_on_third)
    config = dict(target_seed=TARGET, iterations=4, lr=0.2, **FAST)
    result = invariant(tiny_model, PROMPT, InvariantConfig(**config))
    assert result.stop_reason == inv.NAN_SCORE and result.iterations == 2
    assert all(math.isfinite(s) for s in result.scores)
    # The update that led to the non-finite score is not kept: the final embedding is the
    # iterate that scored scores[1], the one a single update made (what a one-iteration run ends with).
    monkeypatch.setattr(inv, "cosine_scores", original)
    one = invariant(tiny_model, PROMPT, InvariantConfig(**{**config, "iterations": 1}))
    torch.testing.assert_close(result.final_embedding.cond, one.final_embedding.cond)
    assert not torch.equal(result.final_embedding.cond, result.initial_embedding.cond)


def test_non_finite_gradient_stops_without_an_update(tiny_model, monkeypatch):
    from noise2art.methods import invariant as inv

    original = inv.cosine_scores
    monkeypatch.setattr(inv, "cosine_scores", lambda target, latents: original(target, NanGrad.apply(latents)))
    config = InvariantConfig(target_seed=TARGET, iterations=3, lr=0.2, **FAST)
    result = invariant(tiny_model, PROMPT, config)
    assert result.stop_reason == inv.NAN_GRADIENT and result.iterations == 1
    # No step follows a non-finite gradient: the embedding is the start (that of a run cancelled at once).
    monkeypatch.setattr(inv, "cosine_scores", original)
    start = invariant(tiny_model, PROMPT, config, cancel=lambda: True)
    torch.testing.assert_close(result.final_embedding.cond, start.final_embedding.cond)
    assert torch.isfinite(result.embedding.cond).all()


# --------------------------------------------------------------------------- clean-prediction comparisons

PREDICT = dict(sampling=SamplingOverrides(steps=3), stage_iterations=2, stage_steps=(1, 2), compare="prediction")


def test_prediction_stages_compare_clean_estimates_with_the_targets_final_latents(tiny_model):
    emb = tiny_model.encode([PROMPT])
    result = invariant(tiny_model, emb, InvariantConfig(target_seed=TARGET, iterations=4, mode="full", lr=0.2,
                                                        **PREDICT))
    assert result.stop_reason == COMPLETED
    assert [(s.stage, s.stop_after) for s in result.stages] == [(0, 1), (1, 2)]
    with torch.no_grad():
        final = tiny_model.sample(emb, [TARGET], steps=3)
    for info in result.stages:  # every stage aims at the picture itself, not at noisy latents
        torch.testing.assert_close(info.target, final)

    def clean_cos(embedding):
        with torch.no_grad():
            x0 = tiny_model.sample(embedding, FRESH, steps=3, stop_after=2, predict_clean=True)
        return float(torch.nn.functional.cosine_similarity(x0.flatten(1), final.flatten(1)).mean())

    assert clean_cos(result.final_embedding) > clean_cos(emb) + 0.001


def test_image_comparison_scores_features_of_the_predicted_picture(tiny_model):
    from noise2art.metrics.features import image_features

    emb = tiny_model.encode([PROMPT])
    result = invariant(tiny_model, emb, InvariantConfig(target_seed=TARGET, iterations=2, mode="full", lr=0.2,
                                                        **{**PREDICT, "compare": "image"}))
    with torch.no_grad():
        target = image_features(tiny_model, tiny_model.decode(tiny_model.sample(emb, [TARGET], steps=3)))
        seeds = result.seeds[0]
        noise = tiny_model.initial_noise(seeds)
        from noise2art import space

        start = space.slerp_noise(noise, tiny_model.initial_noise([TARGET]), result.slerp[0])
        x0 = tiny_model.sample(emb, seeds, latents=start, steps=3, stop_after=1, predict_clean=True)
        feats = image_features(tiny_model, tiny_model.decode(x0))
    expected = 10000 * torch.nn.functional.cosine_similarity(feats.double(), target.double())
    assert result.seed_scores[0] == pytest.approx(expected.tolist(), rel=1e-4)


@pytest.mark.parametrize("steps", [(), (2, 1), (0, 1), (1, 1), (1.5,)])
def test_stage_steps_must_be_increasing_counts(steps):
    with pytest.raises(InvalidArgument) as info:
        InvariantConfig(target_seed=1, stage_steps=steps).check()
    assert info.value.name == "stage_steps"


def test_stage_steps_past_the_schedule_compare_at_its_last_step(tiny_model):
    result = invariant(tiny_model, PROMPT, InvariantConfig(target_seed=1, iterations=3, stage_iterations=1,
                                                           sampling=SamplingOverrides(steps=2, scheduler="ddim"),
                                                           stage_steps=(1, 3, 8), compare="prediction"))
    # 2 DDIM steps make 2 UNet calls: 3 and 8 both become the last, so two stages run.
    assert [(s.stage, s.stop_after) for s in result.stages] == [(0, 1), (1, 2)]
    assert result.stage_of == [0, 1, 1]


def test_unknown_comparison_is_refused():
    with pytest.raises(InvalidArgument) as info:
        InvariantConfig(target_seed=1, compare="pixels").check()
    assert info.value.name == "compare"
