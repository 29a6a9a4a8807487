"""Retrievability: speed profiles, jumps and basins, and the study over many paths."""

from __future__ import annotations

import pytest
import torch

from noise2art.errors import InvalidArgument
from noise2art.engine.settings import SamplingOverrides
from noise2art.methods.interpolate import InterpolationConfig
from noise2art.methods.retrievability import (
    RetrievabilityConfig,
    retrievability,
    retrievability_study,
    speed_profile,
    summarize,
)


def test_jumps_split_the_path_into_basins():
    alphas = torch.linspace(0, 1, 9, dtype=torch.float64)
    d = torch.tensor([0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.8, 0.1])
    prof = speed_profile(alphas, d, jump_factor=3.0)
    assert prof.median_speed == pytest.approx(0.8)  # 0.1 per step of 1/8
    assert prof.threshold == pytest.approx(2.4)
    assert prof.jumps == [3, 6]
    assert [(b.start, b.end) for b in prof.basins] == [(0.0, 0.375), (0.5, 0.75), (0.875, 1.0)]
    assert [b.share for b in prof.basins] == [0.375, 0.25, 0.125]
    # Basins and jumps together cover the path.
    assert sum(b.share for b in prof.basins) + len(prof.jumps) / 8 == pytest.approx(1.0)
    assert prof.max_mean_ratio == pytest.approx(0.9 / d.double().mean().item())
    assert prof.largest_basin_share == 0.375


def test_even_path_is_one_basin_and_adjacent_jumps_leave_no_empty_basin():
    alphas = torch.linspace(0, 1, 5, dtype=torch.float64)
    even = speed_profile(alphas, torch.full((4,), 0.2))
    assert even.jumps == [] and len(even.basins) == 1 and even.basins[0].share == 1.0
    assert even.max_mean_ratio == pytest.approx(1.0)
    two = speed_profile(torch.linspace(0, 1, 7, dtype=torch.float64), torch.tensor([0.1, 0.1, 2.0, 2.0, 0.1, 0.1]),
                        jump_factor=3.0)
    assert two.jumps == [2, 3] and len(two.basins) == 2


def test_speed_uses_alpha_spacing():
    alphas = torch.tensor([0.0, 0.1, 0.2, 1.0], dtype=torch.float64)
    prof = speed_profile(alphas, torch.tensor([0.1, 0.1, 0.8]))
    assert prof.speeds.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert prof.jumps == []  # same speed everywhere, however uneven the distances


@pytest.mark.parametrize("kwargs, name", [({"fine": 2}, "fine"), ({"fine": 10001}, "fine"),
                                          ({"jump_factor": 0.5}, "jump_factor"),
                                          ({"jump_factor": float("inf")}, "jump_factor")])
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(InvalidArgument) as err:
        RetrievabilityConfig(**kwargs)
    assert err.value.name == name


def test_profile_rejects_mismatched_input():
    with pytest.raises(InvalidArgument):
        speed_profile(torch.linspace(0, 1, 4), torch.zeros(4))
    with pytest.raises(InvalidArgument, match="increasing"):
        speed_profile(torch.tensor([0.0, 0.5, 0.5]), torch.zeros(2))


def test_study_on_the_model(tiny_model):
    a, b, c = (tiny_model.encode([p]) for p in ("a red ball", "a blue cube", "a cat"))
    cfg = InterpolationConfig(sampling=SamplingOverrides(steps=2, batch_size=4))
    seen = []

    def distance(x, y):
        seen.append(x.shape[0])
        return (x - y).abs().mean(dim=(1, 2, 3))

    res = retrievability(tiny_model, a, b, cfg, RetrievabilityConfig(fine=4), distance=distance)
    assert res.profile.alphas.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert res.images.shape == (4, 3, 32, 32) and seen == [3]
    assert res.prompts == ("a red ball", "a blue cube")
    summary = res.summary()
    assert {"max_mean_ratio", "basins", "jumps"} <= summary.keys()
    # The profile's step distances are the injected distance between consecutive returned frames...
    assert torch.allclose(res.profile.distances.float(), distance(res.images[:-1], res.images[1:]).float(), atol=1e-6)
    # ...and basins plus jump steps tile the path exactly (3 steps of 1/3).
    assert sum(bs["share"] for bs in summary["basins"]) + len(summary["jumps"]) / 3 == pytest.approx(1.0)

    study = retrievability_study(tiny_model, [(a, b), (a, c)], cfg, RetrievabilityConfig(fine=3, keep_images=False),
                                 distance=distance)
    assert len(study.results) == 2 and study.results[0].images is None
    s = study.summary
    ratios = [r.max_mean_ratio for r in study.results]
    assert s.pairs == 2 and s.max_mean_ratio.max == max(ratios) and s.max_mean_ratio.mean == pytest.approx(sum(ratios) / 2)
    assert s.largest_basin_share.max == max(r.profile.largest_basin_share for r in study.results)


def test_path_from_a_prompt_to_itself_is_flat(tiny_model):
    """Same prompt and seed at both ends: every frame is the same image, so each step
    distance is ~0, while a path to another prompt moves clearly."""
    a, b = tiny_model.encode(["a red ball"]), tiny_model.encode(["a blue cube"])
    cfg = InterpolationConfig(sampling=SamplingOverrides(steps=2, batch_size=4))
    same = retrievability(tiny_model, a, a, cfg, RetrievabilityConfig(fine=4))
    other = retrievability(tiny_model, a, b, cfg, RetrievabilityConfig(fine=4))
    assert float(other.profile.distances.min()) > 0
    assert float(same.profile.distances.max()) < 1e-3 * float(other.profile.distances.min())


def test_summarize_needs_results():
    with pytest.raises(InvalidArgument):
        summarize([])
