"""Metric-based optimisation on the tiny random SD model (2 denoising steps, few iterations)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from noise2art import metrics
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from tests.methods.nan_grad import NanGrad
from noise2art.methods.optimize import (
    CANCELLED,
    COMPLETED,
    NAN_GRADIENT,
    NAN_SCORE,
    OptimizeConfig,
    evaluate_on_seeds,
    optimize,
    renormalise_,
)
from noise2art.metrics import MetricUnavailable, sharpness

PROMPT = "a red ball"
# Sharpness of the tiny random model's images rises steadily under the gradient
# (brightness barely moves there: the random VAE's output mean is nearly flat in the embedding).
FAST = dict(metric="sharpness", sampling=SamplingOverrides(steps=2, scheduler="ddim"), grad_steps="last", lr=0.05)


@pytest.fixture(scope="module")
def run(tiny_model):
    """One 4-iteration sharpness run with guidance, kept for several checks."""
    emb = tiny_model.encode([PROMPT])
    config = OptimizeConfig(iterations=4, trajectory_every=1, **FAST)
    return emb, optimize(tiny_model, emb, config)


@pytest.fixture
def scripted_metric():
    """Register metrics by name for one test; removed afterwards."""
    names = []

    def add(name, fn, **kwargs):
        metrics.register(name, fn, replace=True, **kwargs)
        names.append(name)
        return name

    yield add
    for name in names:
        metrics.unregister(name)


def test_sharpness_rises_every_iteration(run):
    _, result = run
    assert result.stop_reason == COMPLETED and result.iterations == 4
    assert all(b > a for a, b in zip(result.scores, result.scores[1:])), result.scores
    assert result.scores[-1] - result.scores[0] > 1e-5  # about 4e-5 on the tiny model; float noise is 1e-7
    assert result.gain() > 0


def test_row0_fixed_and_uncond_rows_move(run):
    emb, result = run
    for out in (result.best_embedding, result.final_embedding):
        assert torch.equal(out.cond[:, 0], emb.cond[:, 0])
        assert torch.equal(out.uncond[:, 0], emb.uncond[:, 0])
        assert not torch.allclose(out.cond[:, 1:], emb.cond[:, 1:])
        assert not torch.allclose(out.uncond[:, 1:], emb.uncond[:, 1:])


def test_best_is_max_and_initial_is_iteration_zero(run):
    emb, result = run
    assert result.best_score == max(result.scores)
    assert result.best_iteration == result.scores.index(max(result.scores))
    assert result.initial_score == result.scores[0]
    assert torch.equal(result.initial_images, result.trajectory[0])
    assert torch.equal(result.best_images, result.trajectory[result.best_iteration])
    assert torch.equal(result.initial_embedding.cond, emb.cond)
    assert len(result.seconds) == 4 and all(t > 0 for t in result.seconds)
    assert result.best_so_far() == result.scores  # monotone run


def test_best_iterate_is_kept_when_later_ones_are_worse(tiny_model, scripted_metric):
    # Iteration 1 gets a bonus no later iterate can beat, so it must be the one returned.
    calls = {"n": 0}

    def bonus_once(images):
        calls["n"] += 1
        return sharpness(images) + (5.0 if calls["n"] == 2 else 0.0)

    name = scripted_metric("bonus_once", bonus_once)
    config = OptimizeConfig(iterations=3, trajectory_every=1, **{**FAST, "metric": name})
    result = optimize(tiny_model, PROMPT, config)
    assert result.best_iteration == 1 and result.best_score == max(result.scores)
    assert torch.equal(result.best_images, result.trajectory[1])
    assert not torch.equal(result.best_embedding.cond, result.final_embedding.cond)
    assert result.embedding is result.best_embedding
    assert dataclasses.replace(result, keep_best=False).embedding is result.final_embedding


def test_nan_score_stops_and_keeps_last_good(tiny_model, scripted_metric):
    calls = {"n": 0}

    def nan_at_2(images):
        calls["n"] += 1
        s = sharpness(images)
        return s * math.nan if calls["n"] == 3 else s

    name = scripted_metric("nan_at_2", nan_at_2)
    result = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=4, **{**FAST, "metric": name}))
    assert result.stop_reason == NAN_SCORE and "iteration 2" in result.stop_message
    assert len(result.scores) == 2 and all(math.isfinite(s) for s in result.scores)
    assert not torch.equal(result.final_embedding.cond, result.initial_embedding.cond)
    # The kept embedding is the iterate that scored scores[1]: rendering it again gives that score.
    _, _, again = evaluate_on_seeds(tiny_model, result.final_embedding, "sharpness", [0], steps=2, scheduler="ddim")
    assert again[0] == pytest.approx(result.scores[1], rel=1e-5)


def test_nan_gradient_stops_without_moving(tiny_model, scripted_metric):
    name = scripted_metric("nan_grad", lambda im: sharpness(NanGrad.apply(im)))
    emb = tiny_model.encode([PROMPT])
    result = optimize(tiny_model, emb, OptimizeConfig(iterations=3, **{**FAST, "metric": name}))
    assert result.stop_reason == NAN_GRADIENT
    assert len(result.scores) == 1 and math.isfinite(result.best_score)
    assert torch.equal(result.final_embedding.cond, emb.cond)
    assert torch.equal(result.final_embedding.uncond, emb.uncond)


def test_cancel_between_iterations_returns_best_so_far(tiny_model):
    done = []
    result = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=10, **FAST),
                      callback=lambda i, total, score, best: done.append((i, total, score, best)),
                      cancel=lambda: len(done) >= 2)
    assert result.stop_reason == CANCELLED
    assert [d[0] for d in done] == [0, 1] and all(d[1] == 10 for d in done)
    assert result.iterations == 2 and result.best_score == max(result.scores)
    assert done[-1][3] == result.best_score


def test_cancel_inside_sampling_is_not_an_exception(tiny_model):
    checks = {"n": 0}

    def cancel():
        checks["n"] += 1
        return checks["n"] > 4  # true in the middle of the second iteration's denoising

    result = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=10, **FAST), cancel=cancel)
    assert result.stop_reason == CANCELLED and "during" in result.stop_message
    assert result.iterations == 1 and result.best_iteration == 0


def test_seeds_render_in_one_batch(tiny_model):
    calls = []
    hook = tiny_model.unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        result = optimize(tiny_model, PROMPT, OptimizeConfig(seeds=[0, 1, 2], iterations=2, **FAST))
    finally:
        hook.remove()
    # One UNet call per step and iteration, each holding 3 seeds x (uncond, cond).
    assert calls == [6] * (2 * 2)
    assert [len(s) for s in result.seed_scores] == [3, 3]
    assert result.scores[0] == pytest.approx(sum(result.seed_scores[0]) / 3)
    assert result.best_images.shape[0] == 3


def test_renormalisation_restores_mean_and_std(tiny_model):
    emb = tiny_model.encode([PROMPT])
    result = optimize(tiny_model, emb, OptimizeConfig(iterations=2, renorm_every=1, **{**FAST, "lr": 0.2}))
    out = result.final_embedding
    assert not torch.allclose(out.cond[:, 1:], emb.cond[:, 1:])
    for new, old in ((out.cond, emb.cond), (out.uncond, emb.uncond)):
        assert new[:, 1:].mean().item() == pytest.approx(old[:, 1:].mean().item(), abs=1e-5)
        assert new[:, 1:].std().item() == pytest.approx(old[:, 1:].std().item(), rel=1e-5)


def test_renormalise_is_per_side():
    param = torch.randn(2, 5, 4) * torch.tensor([3.0, 0.5]).view(2, 1, 1) + 7
    mean, std = torch.tensor([0.0, 1.0]).view(2, 1, 1), torch.tensor([1.0, 2.0]).view(2, 1, 1)
    renormalise_(param, mean, std)
    assert param[0].mean().item() == pytest.approx(0.0, abs=1e-5) and param[0].std().item() == pytest.approx(1.0)
    assert param[1].mean().item() == pytest.approx(1.0, abs=1e-5) and param[1].std().item() == pytest.approx(2.0)


def test_proximity_keeps_the_embedding_closer(tiny_model):
    emb = tiny_model.encode([PROMPT])

    def moved(proximity):
        r = optimize(tiny_model, emb, OptimizeConfig(iterations=4, proximity=proximity, **FAST))
        return (r.final_embedding.cond - emb.cond).norm().item()

    assert moved(100.0) < 0.5 * moved(0.0)


def test_evaluate_on_seeds_matches_the_optimised_render(tiny_model, run):
    _, result = run
    mean, std, scores = evaluate_on_seeds(tiny_model, result.initial_embedding, "sharpness", [0, 5],
                                          steps=2, scheduler="ddim")
    assert len(scores) == 2 and mean == pytest.approx(sum(scores) / 2)
    assert std == pytest.approx(abs(scores[0] - scores[1]) / 2, rel=1e-5)
    assert scores[0] == pytest.approx(result.initial_score, rel=1e-4)  # seed 0 was the optimised seed


def test_reference_preset():
    ref = OptimizeConfig.reference("aesthetic", iterations=400)
    assert (ref.sampling.steps, ref.sampling.scheduler, ref.grad_steps, ref.renorm_every) == (70, "lms", "last", 1)
    assert ref.loss_scale is None and ref.lr == 0.01 and ref.proximity == 0
    assert (ref.betas, ref.gammas, ref.eps) == ((0.9, 0.999), (0.9, 0.99), 1e-3)
    assert ref.metric == "aesthetic" and ref.iterations == 400
    ours = OptimizeConfig()
    assert (ours.sampling.steps, ours.grad_steps, ours.renorm_every) != (ref.sampling.steps, ref.grad_steps,
                                                                         ref.renorm_every)


@pytest.mark.parametrize(
    "field, value",
    [("iterations", 0), ("iterations", 2.5), ("lr", 0.0), ("lr", -1.0), ("lr", math.nan), ("lr", math.inf),
     ("grad_steps", "sideways"), ("grad_steps", "none"), ("grad_steps", 0), ("grad_steps", "last-x"),
     ("renorm_every", 0), ("proximity", -1.0), ("loss_scale", 0.0), ("seeds", []), ("steps", 0),
     ("scheduler", "nope"), ("betas", (0.9, 1.5)), ("sampling", {"steps": 20})],
)
def test_bad_config_names_the_field(field, value):
    fields = {"sampling": SamplingOverrides(**{field: value})} if field in ("steps", "scheduler") else {field: value}
    with pytest.raises(InvalidArgument) as err:
        OptimizeConfig(**fields).check()
    assert err.value.name == field


def test_bad_metric_and_embedding(tiny_model):
    with pytest.raises(InvalidArgument, match="known: .*sharpness"):
        optimize(tiny_model, PROMPT, OptimizeConfig(metric="sharpnes", iterations=1))
    with pytest.raises(MetricUnavailable, match="aesthetic"):
        optimize(tiny_model, PROMPT, OptimizeConfig(metric="aesthetic", iterations=1))
    with pytest.raises(InvalidArgument, match="one prompt"):
        optimize(tiny_model, tiny_model.encode(["a", "b"]), OptimizeConfig(iterations=1))


# --------------------------------------------------------------------------- keeping the picture


class SharpnessColourClassifier(torch.nn.Module):
    """Calls an image "red" while its sharpness stays below `threshold`, "blue" above it.

    Sharpness rises under the gradient on the tiny model, so the prompt's "red" is lost as
    the metric gains: what a real classifier sees when a metric ruins the picture.
    """

    def __init__(self, threshold: float, scale: float = 1e6):
        super().__init__()
        self.cfg = type("Cfg", (), {"families": {"color": ["red", "blue"]}})()
        self.threshold, self.scale = threshold, scale

    def forward(self, images):
        margin = (self.threshold - sharpness(images.float())) * self.scale  # [B]
        return {"color": torch.stack([margin, -margin], dim=-1)}

    def predict(self, images):
        return [{"color": self.cfg.families["color"][int(k)]} for k in self(images)["color"].argmax(-1)]


@pytest.fixture
def colour_classifier(tiny_model, monkeypatch):
    with torch.no_grad():
        start = float(sharpness(tiny_model.render(PROMPT, [0], steps=2, scheduler="ddim")))

    def install(margin: float):
        classifier = SharpnessColourClassifier(start + margin)
        monkeypatch.setattr(tiny_model.companions, "attributes", classifier)
        return classifier

    return install


def test_each_iteration_reports_adherence_and_distance_to_the_first_image(tiny_model, colour_classifier):
    colour_classifier(1e-5)  # the first updates' sharpness gain (about 1e-5 each) turns "red" to "blue"
    result = optimize(tiny_model, PROMPT, OptimizeConfig.unconstrained(iterations=5, **FAST))
    assert result.named == {"color": "red"}
    assert result.adherence[0] == 1.0 and result.adherence[-1] == 0.0
    assert result.distance[0] == 0.0 and result.distance[-1] > 0
    assert len(result.adherence) == len(result.distance) == result.iterations
    # Unconstrained, the best is the highest score even though it lost the prompt's colour.
    assert result.best_iteration == 4 and result.best_picture.adherence == 0.0
    assert result.initial_picture.adherence == 1.0


def test_the_adherence_floor_keeps_the_best_iterate_that_still_shows_the_prompt(tiny_model, colour_classifier):
    colour_classifier(1e-5)
    result = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=5, adherence_weight=0.0, adherence_floor=0.9,
                                                         **FAST))
    kept = [i for i, a in enumerate(result.adherence) if a == 1.0]
    assert result.adherence[-1] == 0.0  # the run went on past the floor ...
    assert result.best_iteration == max(kept, key=lambda i: result.scores[i])  # ... the best did not
    assert result.best_picture.adherence == 1.0
    assert result.best_score < max(result.scores)


def test_the_adherence_loss_holds_back_a_gain_that_loses_the_prompt(tiny_model, colour_classifier):
    colour_classifier(0.0)
    free = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=4, adherence_weight=0.0, adherence_floor=None, **FAST))
    kept = optimize(tiny_model, PROMPT, OptimizeConfig(iterations=4, adherence_weight=50.0, adherence_floor=None,
                                                       **FAST))
    assert kept.scores[-1] - kept.scores[0] < free.scores[-1] - free.scores[0]


def test_a_model_without_classifiers_reports_no_adherence(run):
    _, result = run
    assert result.named == {} and set(result.adherence) == {None}
    assert result.best_picture.adherence is None and result.best_picture.distance >= 0


@pytest.mark.parametrize("fields, name", [(dict(adherence_weight=-1), "adherence_weight"),
                                          (dict(picture_weight=math.inf), "picture_weight"),
                                          (dict(adherence_floor=1.5), "adherence_floor")])
def test_bad_keep_settings_name_the_field(fields, name):
    with pytest.raises(InvalidArgument) as info:
        OptimizeConfig(**fields).check()
    assert info.value.name == name
