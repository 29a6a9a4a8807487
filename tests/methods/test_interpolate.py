"""Interpolation paths on the tiny SD model: positions, endpoints, seed paths, batching, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from noise2art import space
from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument
from noise2art.engine.settings import SamplingOverrides
from noise2art.methods.interpolate import (
    InterpolationConfig,
    InterpolationPath,
    interpolate,
    locate,
    plan_alphas,
    render_frames,
)

STEPS = 2
ATOL = 1e-4  # batched vs single UNet calls differ in float rounding only


@pytest.fixture(scope="module")
def prompts(tiny_model):
    return [tiny_model.encode([p]) for p in ("a red ball", "a blue cube", "a cat")]


def plain(model, emb, seeds):
    """The reference: an ordinary render, one sample per seed."""
    with torch.no_grad():
        return model.render(emb, seeds, steps=STEPS).float().cpu()


# --------------------------------------------------------------------------- positions


@pytest.mark.parametrize("frames, keyframes, rng", [(9, 3, (0.0, 1.0)), (10, 4, (0.0, 1.0)), (12, 3, (-0.3, 1.2)),
                                                   (7, 5, (0.0, 1.0)), (3, 5, (0.0, 1.0))])
def test_plan_has_each_join_once_and_is_monotone(frames, keyframes, rng):
    alphas = plan_alphas(frames, rng, keyframes)
    assert alphas.shape == (frames,)
    assert alphas[0] == rng[0] and alphas[-1] == rng[1]
    assert bool((alphas[1:] > alphas[:-1]).all())
    seg, t = locate(alphas, keyframes)
    assert bool((seg[1:] >= seg[:-1]).all())
    if frames - 1 >= keyframes - 1:
        for k in range(1, keyframes - 1):  # every join is a frame, exactly once
            hits = (alphas == k / (keyframes - 1)).sum()
            assert int(hits) == 1, (k, alphas)
            idx = int((alphas == k / (keyframes - 1)).nonzero())
            assert int(seg[idx]) == k and float(t[idx]) == 0.0


def test_plan_spreads_frames_over_segments_in_proportion():
    alphas = plan_alphas(13, (0.0, 1.0), 4)  # 12 steps over 3 equal segments
    seg, _ = locate(alphas, 4)
    assert [int((seg == s).sum()) for s in range(3)] == [4, 4, 5]  # the last keyframe closes segment 2
    steps = alphas[1:] - alphas[:-1]
    assert torch.allclose(steps, torch.full_like(steps, 1 / 12))


def test_locate_extrapolates_first_and_last_segment():
    seg, t = locate(torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], dtype=torch.float64), 3)
    assert seg.tolist() == [0, 0, 1, 1, 1]
    assert t.tolist() == [-1.0, 0.0, 0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- embeddings and noise


def test_path_embeddings_follow_space_and_hit_keyframes(tiny_model, prompts):
    a, b, c = prompts
    cfg = InterpolationConfig(frames=5, sampling=SamplingOverrides(steps=STEPS))
    path = InterpolationPath(tiny_model, [a, b, c], cfg)
    alphas = path.plan()
    assert alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    emb = path.embeddings(alphas)
    assert len(emb) == 5
    assert torch.equal(emb.cond[0], a.cond[0])
    assert torch.equal(emb.cond[2, 1:], b.cond[0, 1:])  # the join is B itself, once
    assert torch.equal(emb.cond[4, 1:], c.cond[0, 1:])
    expected = space.slerp(a.cond[0], b.cond[0], 0.5)
    assert torch.allclose(emb.cond[1], expected, atol=1e-6)
    # Row 0 held at the first keyframe's all along the path.
    assert torch.equal(emb.cond[:, 0], a.cond[0, 0].expand(5, -1))


@pytest.mark.parametrize("method, fn", [("lerp", space.lerp), ("blend", None)])
def test_other_methods(tiny_model, prompts, method, fn):
    a, b, _ = prompts
    path = InterpolationPath(tiny_model, [a, b], InterpolationConfig(frames=3, method=method, range=(-0.5, 1.5)))
    emb = path.embeddings(path.plan())
    if fn is not None:
        assert torch.allclose(emb.cond[0], fn(a.cond[0], b.cond[0], -0.5), atol=1e-6)
    else:
        std = emb.cond[1, 1:].std()
        assert torch.allclose(std, (a.cond[0, 1:].std() * b.cond[0, 1:].std()).sqrt(), rtol=1e-4)
    assert torch.isfinite(emb.cond).all()


def test_extrapolated_frames_continue_the_path(tiny_model, prompts):
    a, b, _ = prompts
    cfg = InterpolationConfig(frames=3, range=(-0.5, 1.5), sampling=SamplingOverrides(steps=STEPS, batch_size=3))
    res = interpolate(tiny_model, [a, b], cfg)
    assert res.alphas.tolist() == [-0.5, 0.5, 1.5]
    assert res.local_t.tolist() == [-0.5, 0.5, 1.5]
    path = InterpolationPath(tiny_model, [a, b], cfg)
    emb = path.embeddings(res.alphas)
    assert torch.allclose(emb.cond[2], space.slerp(a.cond[0], b.cond[0], 1.5), atol=1e-5)
    assert not torch.allclose(emb.cond[2, 1:], b.cond[0, 1:])
    assert res.images.shape == (3, 3, 32, 32) and torch.isfinite(res.images).all()
    # An extrapolated frame is not the keyframe's image.
    assert (res.images[2] - plain(tiny_model, b, [0])[0]).abs().max() > 1e-3


def test_joint_path_moves_prompt_and_noise_together(tiny_model, prompts):
    a, b, _ = prompts
    path = InterpolationPath(tiny_model, [a, b], InterpolationConfig(frames=5, seed=1, seed_to=2))
    alphas = path.plan()
    noise = path.noises(alphas)
    ends = tiny_model.initial_noise([1, 2]).float()
    assert torch.equal(noise[0], ends[0]) and torch.equal(noise[-1], ends[1])
    assert torch.allclose(noise[2], space.slerp_noise(ends[0], ends[1], 0.5), atol=1e-6)
    # slerp keeps the noise as strong as the endpoints (lerp's midpoint would be ~0.71x).
    assert abs(noise[2].norm() / ends[0].norm() - 1) < 0.05
    res = path.result(alphas, torch.zeros(5, 3, 32, 32))
    assert torch.equal(res.noise_alphas, res.alphas)
    rec = res.frame_records()[2]
    assert rec["seed"] == 1 and rec["seed_to"] == 2 and rec["noise_alpha"] == 0.5 and rec["prompts"] == [
        "a red ball", "a blue cube"]


# --------------------------------------------------------------------------- rendering


def test_keyframe_frames_equal_plain_renders(tiny_model, prompts):
    a, b, c = prompts
    res = interpolate(tiny_model, [a, b, c], InterpolationConfig(frames=5, seed=3, sampling=SamplingOverrides(steps=STEPS, batch_size=5)))
    ref = plain(tiny_model, PromptEmbedding.cat([a, b, c]), [3])
    assert torch.allclose(res.images[0], ref[0], atol=ATOL)
    assert torch.allclose(res.images[2], ref[1], atol=ATOL)  # the join, B
    assert torch.allclose(res.images[4], ref[2], atol=ATOL)
    assert (res.images[1] - ref[0]).abs().max() > 1e-3  # in-between frames are new images
    assert res.segments.tolist() == [0, 0, 1, 1, 1]
    assert res.frame_prompts[2] == ["a blue cube", "a cat"]


def test_seed_path_endpoints_equal_each_seed(tiny_model, prompts):
    a = prompts[0]
    res = interpolate(tiny_model, [a], InterpolationConfig(frames=3, seed=5, seed_to=6, sampling=SamplingOverrides(steps=STEPS, batch_size=3)))
    ref = plain(tiny_model, a, [5, 6])
    assert torch.allclose(res.images[0], ref[0], atol=ATOL)
    assert torch.allclose(res.images[-1], ref[1], atol=ATOL)
    assert res.noise_alphas.tolist() == [0.0, 0.5, 1.0]
    assert (res.images[1] - ref[0]).abs().max() > 1e-3


def test_batched_rendering_equals_one_by_one(tiny_model, prompts):
    a, b, _ = prompts
    cfg = InterpolationConfig(frames=3, seed=2, seed_to=9, sampling=SamplingOverrides(steps=STEPS))
    path = InterpolationPath(tiny_model, [a, b], cfg)
    alphas = path.plan()
    emb, noise = path.embeddings(alphas), path.noises(alphas)
    calls = []
    batched = render_frames(tiny_model, emb, noise, InterpolationConfig(frames=3, seed=2, sampling=SamplingOverrides(steps=STEPS, batch_size=3)),
                            callback=lambda i, total, lat: calls.append(lat.shape[0]))
    single = render_frames(tiny_model, emb, noise, InterpolationConfig(frames=3, seed=2, sampling=SamplingOverrides(steps=STEPS, batch_size=1)))
    assert set(calls) == {3}  # all three frames went through the UNet together
    assert torch.allclose(batched, single, atol=ATOL)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, name", [
    ({"frames": 1}, "frames"),
    ({"frames": 10001}, "frames"),
    ({"frames": 2.5}, "frames"),
    ({"method": "cubic"}, "method"),
    ({"range": (0.0, math.nan)}, "range"),
    ({"range": (-math.inf, 1.0)}, "range"),
    ({"range": (1.0, 0.0)}, "range"),
    ({"range": (0.0,)}, "range"),
    ({"seed": -1}, "seed"),
    ({"seed_to": 2**63}, "seed_to"),
    ({"sampling": SamplingOverrides(steps=0)}, "steps"),
    ({"sampling": SamplingOverrides(batch_size=0)}, "batch_size"),
    ({"sampling": SamplingOverrides(scheduler="warp")}, "scheduler"),
    ({"sampling": {"steps": 4}}, "sampling"),
])
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(InvalidArgument) as err:
        InterpolationConfig(**kwargs)
    assert err.value.name == name


def test_one_keyframe_needs_a_seed_path(tiny_model, prompts):
    with pytest.raises(InvalidArgument, match="seed_to"):
        InterpolationPath(tiny_model, [prompts[0]], InterpolationConfig())


def test_keyframes_from_another_model_are_named(tiny_model, prompts):
    a = prompts[0]
    foreign = PromptEmbedding(torch.zeros(1, 77, 16), torch.zeros(1, 77, 16), torch.ones(1, 77), "other-model")
    with pytest.raises(InvalidArgument) as err:
        InterpolationPath(tiny_model, [a, foreign], InterpolationConfig())
    assert "other-model" in str(err.value) and tiny_model.model_id in str(err.value)
    same_shape = PromptEmbedding(a.cond.clone(), a.uncond.clone(), a.mask.clone(), "other-model")
    with pytest.raises(InvalidArgument, match="other-model"):
        InterpolationPath(tiny_model, [same_shape, same_shape], InterpolationConfig())
