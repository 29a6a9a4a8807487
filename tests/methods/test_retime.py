"""Constant-speed re-timing: the arc-length inversion, refinement where the image jumps, and the model path."""

from __future__ import annotations

import pytest
import torch

from noise2art.errors import InvalidArgument
from noise2art.engine.settings import SamplingOverrides
from noise2art.methods.interpolate import InterpolationConfig, interpolate
from noise2art.methods.retime import RetimeConfig, arc_length_alphas, retime, retime_alphas, step_ratio


def jump_render(centre: float = 0.43, sharpness: float = 80.0):
    """A fake renderer whose image flips from black to white in a narrow band of alpha, counting its calls."""
    calls = []

    def render(alphas):
        a = torch.as_tensor(alphas, dtype=torch.float64)
        calls.append(a.numel())
        v = torch.sigmoid((a - centre) * sharpness).float()
        return v.reshape(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()

    return render, calls


def pixel_distance(x, y):
    return (x - y).abs().mean(dim=(1, 2, 3))


def test_arc_length_inversion_is_exact_on_a_known_curve():
    a = torch.linspace(0, 1, 201, dtype=torch.float64)
    s = a**2  # arc length grows quadratically: equal steps of s sit at sqrt of even steps
    out = arc_length_alphas(a, s, 5)
    assert torch.allclose(out, torch.linspace(0, 1, 5, dtype=torch.float64).sqrt(), atol=1e-3)
    assert out[0] == 0 and out[-1] == 1


def test_flat_curve_spreads_frames_evenly():
    a = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    out = arc_length_alphas(a, torch.zeros(3, dtype=torch.float64), 5)
    assert torch.allclose(out, torch.linspace(0, 1, 5, dtype=torch.float64))
    # A jump in the middle: all interior frames crowd into it.
    out = arc_length_alphas(a, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 5)
    assert bool((out[1:-1] > 0.5).all())


def test_retiming_cuts_the_ratio_where_the_jump_is_concentrated():
    render, calls = jump_render()
    alphas = torch.linspace(0, 1, 12, dtype=torch.float64)
    images = render(alphas)
    calls.clear()
    plan = retime_alphas(alphas, images, render, pixel_distance, RetimeConfig(refine=16), per_round=4)
    assert plan.ratio_before > 5
    assert plan.ratio_after < plan.ratio_before / 3
    # The promise itself, measured on the frames rather than read from the plan: the re-timed
    # path's image-space steps are at least 3x more even than the uniform path's (which fails it).
    uniform = step_ratio(pixel_distance(images[:-1], images[1:]))
    even = step_ratio(pixel_distance(plan.images[:-1], plan.images[1:]))
    assert uniform > 5 and even < uniform / 3, (uniform, even)
    assert plan.alphas[0] == 0 and plan.alphas[-1] == 1 and plan.alphas.shape == (12,)
    assert bool((plan.alphas[1:] > plan.alphas[:-1]).all())
    # Frames crowd into the jump: most interior alphas sit near the centre.
    assert int(((plan.alphas - 0.43).abs() < 0.05).sum()) >= 8
    # Budget: refinement rounds of at most 4, 16 in all; then one batch for the new output frames.
    assert plan.refine_renders == 16 and sum(calls[:-1]) == 16 and max(calls[:-1]) <= 4
    assert calls[-1] == plan.final_renders < 12  # the ends (and any coinciding samples) were reused
    # The images returned are the renders of the returned alphas.
    assert torch.allclose(plan.images, render(plan.alphas), atol=1e-6)


def test_refinement_helps_beyond_the_input_frames():
    render, _ = jump_render(sharpness=300.0)
    alphas = torch.linspace(0, 1, 10, dtype=torch.float64)
    coarse = retime_alphas(alphas, render(alphas), render, pixel_distance, RetimeConfig(refine=0))
    fine = retime_alphas(alphas, render(alphas), render, pixel_distance, RetimeConfig(refine=24), per_round=8)
    assert coarse.refine_renders == 0
    assert fine.ratio_after < coarse.ratio_after


def test_arc_length_adds_angles_so_measuring_finer_keeps_the_length():
    # A path that turns its features steadily (angle 1.2 * alpha), fast in the middle third
    # (three times the speed): re-timed with the cosine distance `1 - cos`, the length must
    # add angles, or every bisected (fast) gap would count for half of what it holds.
    from noise2art.metrics.features import distance_to_angle

    def angle(alpha):
        a = torch.as_tensor(alpha, dtype=torch.float64)
        return 0.6 * (a + 2 * (a.clamp(1 / 3, 2 / 3) - 1 / 3))

    def render(alphas):
        th = angle(alphas).float()
        return torch.stack([th.cos(), th.sin(), torch.zeros_like(th)], 1)[:, :, None, None].expand(-1, 3, 2, 2).clone()

    def cosine(x, y):
        return 1 - torch.nn.functional.cosine_similarity(x[:, :, 0, 0], y[:, :, 0, 0], dim=1).double()

    alphas = torch.linspace(0, 1, 7, dtype=torch.float64)

    def plan(refine, length):
        return retime_alphas(alphas, render(alphas), render, cosine, RetimeConfig(refine=refine), per_round=2,
                             length=length)

    coarse, fine = plan(0, distance_to_angle), plan(6, distance_to_angle)
    assert fine.refine_renders > 0
    for p in (coarse, fine):  # the path's true length, however finely measured
        assert float(p.arc_length[-1]) == pytest.approx(float(angle(1.0)), rel=1e-4)
    # Raw `1 - cos` is not a length: bisecting the fast gaps shrinks the path by half or more.
    assert float(plan(6, None).arc_length[-1]) < 0.5 * float(plan(0, None).arc_length[-1])
    # Equal steps of angle: every output frame turns the features by the same angle.
    steps = angle(fine.alphas).diff()
    assert float(steps.max() / steps.mean()) < 1.01
    assert fine.ratio_after == pytest.approx(1.0, abs=0.02)  # the ratio is read in the distance itself


def test_even_path_stays_even_and_reuses_every_frame():
    def render(alphas):
        return torch.as_tensor(alphas, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()

    alphas = torch.linspace(0, 1, 6, dtype=torch.float64)
    plan = retime_alphas(alphas, render(alphas), render, pixel_distance, RetimeConfig(refine=8))
    assert plan.refine_renders == 0  # no gap above half the step: nothing to refine
    assert plan.final_renders == 0
    assert torch.allclose(plan.alphas, alphas)
    assert abs(plan.ratio_after - 1) < 1e-6


def test_step_ratio():
    assert step_ratio(torch.tensor([1.0, 1.0, 4.0])) == 2.0
    assert step_ratio(torch.zeros(3)) == 1.0


def test_retime_on_the_model_with_an_injected_distance(tiny_model):
    a, b = tiny_model.encode(["a red ball"]), tiny_model.encode(["a blue cube"])
    cfg = InterpolationConfig(frames=4, seed=1, seed_to=2, sampling=SamplingOverrides(steps=2, batch_size=4))
    initial = interpolate(tiny_model, [a, b], cfg)
    seen = []

    def distance(x, y):
        seen.append(x.shape[0])
        return pixel_distance(x, y)

    res = retime(tiny_model, [a, b], cfg, RetimeConfig(refine=2), initial=initial, distance=distance)
    out = res.interpolation
    assert len(out) == 4 and out.alphas[0] == 0 and out.alphas[-1] == 1
    assert bool((out.alphas[1:] > out.alphas[:-1]).all())
    assert torch.equal(out.images[0], initial.images[0]) and torch.equal(out.images[-1], initial.images[-1])
    assert res.plan.refine_renders <= 2
    assert res.ratio_before == pytest.approx(step_ratio(pixel_distance(initial.images[:-1], initial.images[1:])), rel=1e-5)
    assert res.ratio_after == pytest.approx(step_ratio(pixel_distance(out.images[:-1], out.images[1:])), rel=1e-5)
    assert torch.equal(out.noise_alphas, out.alphas)
    assert seen and seen[0] == 3  # the injected distance measured the 3 steps of the initial path


@pytest.mark.parametrize("kwargs, name", [({"frames": 1}, "frames"), ({"refine": -1}, "refine"),
                                          ({"per_round": 0}, "per_round"), ({"snap": 0.5}, "snap"),
                                          ({"min_width": float("nan")}, "min_width")])
def test_retime_config_rejects_bad_values(kwargs, name):
    with pytest.raises(InvalidArgument) as err:
        RetimeConfig(**kwargs)
    assert err.value.name == name


def test_retime_alphas_rejects_unsorted_input():
    render, _ = jump_render()
    alphas = torch.tensor([0.0, 0.6, 0.5, 1.0], dtype=torch.float64)
    with pytest.raises(InvalidArgument, match="increasing"):
        retime_alphas(alphas, render(alphas), render, pixel_distance)
