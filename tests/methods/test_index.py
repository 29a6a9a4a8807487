"""The infinite index on the tiny random model: seeds, pages, like, between, beyond, directed queries."""

from __future__ import annotations

import pytest
import torch

from noise2art import space
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.index import (
    PATH_SHAPES,
    Anchor,
    Stream,
    StreamConfig,
    _mix,
    concept_direction,
    directed_weight,
    page_indices,
    path_alphas,
    van_der_corput,
)

FAST = SamplingOverrides(steps=2, scheduler="ddim")


def fake_lengths(monkeypatch, distance_factory) -> None:
    """Streams measure paths with `distance_factory(model)`, whose values are the lengths."""
    from noise2art.methods import retime

    monkeypatch.setattr(retime, "model_distance", distance_factory)
    monkeypatch.setattr(retime, "model_length", lambda model: lambda d: d)


def config(**kw) -> StreamConfig:
    return StreamConfig(sampling=FAST, **kw)


def test_the_same_query_gives_the_same_stream_and_seeds(tiny_model):
    a = Stream.query(tiny_model, "a red ball", config())
    b = Stream.query(tiny_model, "a red ball", config())
    other = Stream.query(tiny_model, "a blue cube", config())
    assert a.id == b.id != other.id
    assert [a.seed_of(i) for i in range(50)] == [b.seed_of(i) for i in range(50)]
    assert a.seed_of(0) != other.seed_of(0)
    # Other sampling settings are another stream.
    assert Stream.query(tiny_model, "a red ball", StreamConfig(sampling=SamplingOverrides(steps=3))).id != a.id


def test_pages_never_share_a_seed(tiny_model):
    stream = Stream.query(tiny_model, "a red ball", config())
    seeds = [stream.seed_of(i) for p in range(40) for i in page_indices(p, 24)]
    assert len(seeds) == len(set(seeds)) == 960
    assert all(0 <= s < 2**63 for s in seeds)
    assert list(page_indices(2, 24)) == list(range(48, 72))


def test_the_seed_mix_is_a_bijection_on_a_block():
    # A bijection of [0, 2^63) keeps every block of inputs distinct; check a dense block.
    outputs = {_mix(x, 12345) for x in range(20000)}
    assert len(outputs) == 20000


def test_shared_seed_rule_gives_result_k_the_same_noise_for_every_query(tiny_model):
    a = Stream.query(tiny_model, "a red ball", config(seed_rule="shared"))
    b = Stream.query(tiny_model, "a blue cube", config(seed_rule="shared"))
    assert a.id != b.id
    assert [a.seed_of(k) for k in range(10)] == [b.seed_of(k) for k in range(10)]


def test_a_query_result_is_the_prompt_on_its_seed(tiny_model):
    stream = Stream.query(tiny_model, "a red ball", config())
    results = stream.results(range(3))
    images = stream.render(results)
    for k, r in enumerate(results):
        assert r.noise is None and r.record == {"stream": stream.id, "kind": "query", "idx": k}
        expected = tiny_model.render("a red ball", [r.seed], steps=2, scheduler="ddim").float().cpu()
        # Same noise and embedding; the batch may differ by float rounding only.
        torch.testing.assert_close(images[k:k + 1], expected, atol=2e-3, rtol=0)
    assert not torch.allclose(images[0], images[1])


def test_bad_pages_and_configs_name_the_field(tiny_model):
    with pytest.raises(InvalidArgument, match="page"):
        page_indices(-1)
    with pytest.raises(InvalidArgument, match="page_size"):
        page_indices(0, 0)
    with pytest.raises(InvalidArgument, match="seed_rule"):
        Stream.query(tiny_model, "a", config(seed_rule="random"))
    with pytest.raises(InvalidArgument, match="similarity"):
        Stream.query(tiny_model, "a", config(similarity=1.5))


def test_like_results_sit_at_the_asked_similarity_around_the_image(tiny_model):
    emb = tiny_model.encode(["a red ball"])
    stream = Stream.like(tiny_model, Anchor(emb, 5), config(similarity=0.9, noise_strength=0.0))
    results = stream.results(range(4))
    own_noise = tiny_model.initial_noise([5]).float().cpu()
    for r in results:
        sim = float(space.similarity(emb.cond[0].float(), r.embedding.cond[0].float()))
        assert sim == pytest.approx(0.9, abs=2e-3)
        torch.testing.assert_close(r.noise, own_noise)  # strength 0: the image's own noise
        assert torch.equal(r.embedding.cond[0, 0], emb.cond[0, 0])  # row 0 stays
    assert not torch.allclose(results[0].embedding.cond, results[1].embedding.cond)
    moved = Stream.like(tiny_model, Anchor(emb, 5), config(noise_strength=0.5)).results([0])[0]
    assert not torch.allclose(moved.noise, own_noise)


def test_van_der_corput_fills_the_largest_gaps():
    points = [van_der_corput(n) for n in range(1, 8)]
    assert points == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def test_between_positions_are_equal_arc_length_fractions(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    # A path whose image changes all in its first quarter: re-timed positions crowd there.
    fake_lengths(monkeypatch, lambda model: lambda x, y: torch.tensor(
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    stream = Stream.between(tiny_model, a, b, config(coarse=9, refine=0, bridges=0))
    ts = [r.record["t"] for r in stream.results(range(7))]
    # Arc length is all in t in [0, 0.25]: fractions 1/2, 1/4, 3/4 ... map to t = u / 4.
    assert ts == pytest.approx([0.125, 0.0625, 0.1875, 0.03125, 0.15625, 0.09375, 0.21875])
    assert len(set(ts)) == 7 and all(0 < t < 1 for t in ts)


def test_between_results_render_between_the_two_images(tiny_model):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    stream = Stream.between(tiny_model, a, b, config(coarse=5))
    results = stream.results(range(3))
    images = stream.render(results)
    assert images.shape[0] == 3 and torch.isfinite(images).all()
    assert all(r.record["anchor_seeds"] == [1, 2] for r in results)


def test_beyond_stops_before_the_path_jumps(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    # Coarse positions 1, 1.125, ..., 2: the step after the fourth position jumps.
    fake_lengths(monkeypatch, lambda model: lambda x, y: torch.tensor(
        [1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0, 1.0]))
    stream = Stream.beyond(tiny_model, a, b, config(coarse=9, refine=0, beyond_max=2.0))
    ts = [r.record["t"] for r in stream.results(range(6))]
    assert stream.end == pytest.approx(1.375)
    assert all(1.0 < t <= 1.375 for t in ts)


def test_a_directed_query_keeps_the_similarity_floor_and_records_the_concept(tiny_model):
    base = Stream.query(tiny_model, "a ball", config())
    steered = Stream.query(tiny_model, "a ball", config(), toward="snow", min_similarity=0.95)
    assert steered.id != base.id
    w = steered.direction.weight
    r = steered.results([0])[0]
    sim = float(space.similarity(base.anchors[0].embedding.cond[0].float(), r.embedding.cond[0].float()))
    assert sim >= 0.95 - 1e-4 and (w == 4.0 or sim == pytest.approx(0.95, abs=2e-3))
    assert r.record["toward"] == {"concept": "snow", "weight": w}
    # A lower floor steers harder.
    harder = Stream.query(tiny_model, "a ball", config(), toward="snow", min_similarity=0.8)
    assert harder.direction.weight >= w
    d = concept_direction(tiny_model, "a ball", "snow")
    assert torch.equal(d[0], torch.zeros_like(d[0])) and d.abs().sum() > 0
    with pytest.raises(InvalidArgument, match="min_similarity"):
        directed_weight(base.anchors[0].embedding, d, 1.5)


def test_refinement_bisects_where_the_picture_changes(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    # Every step of the path is as large (1): each gap is wider than the output step, so the
    # whole budget of 3 bisections is spent, each halving one gap into two steps of 1.
    fake_lengths(monkeypatch,
                        lambda model: lambda x, y: torch.ones(x.shape[0], dtype=torch.float64))
    stream = Stream.between(tiny_model, a, b, config(coarse=5, refine=3, bridges=0))
    stream.results([0])
    alphas, arc = stream.measured.alphas, stream.measured.arc
    assert len(alphas) == 5 + 3 and float(arc[-1]) == 4 + 3
    assert alphas.tolist() == sorted(alphas.tolist()) and len(set(alphas.tolist())) == 8
    unrefined = Stream.between(tiny_model, a, b, config(coarse=5, refine=0, bridges=0))
    unrefined.results([0])
    assert len(unrefined.measured.alphas) == 5


def test_path_shapes_start_and_end_on_the_two_images():
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    for shape in PATH_SHAPES:
        along_embedding, along_noise = path_alphas(shape, t)
        assert (float(along_embedding[0]), float(along_noise[0])) == (0.0, 0.0)
        assert (float(along_embedding[-1]), float(along_noise[-1])) == (1.0, 1.0)
    assert path_alphas("embedding first", t)[0].tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert path_alphas("embedding first", t)[1].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    with pytest.raises(InvalidArgument, match="shapes"):
        config(shapes=("sideways",)).check()
    with pytest.raises(InvalidArgument, match="shapes"):
        config(shapes=()).check()


def test_between_takes_the_shape_whose_largest_step_is_the_smallest_share(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    # The coarse render of each shape in turn: together jumps (4 of 11), embedding first is
    # even (1 of 8), noise first in between (2 of 9).
    measured = iter([[4.0] + [1.0] * 7, [1.0] * 8, [2.0] + [1.0] * 7])
    fake_lengths(monkeypatch, lambda model: lambda x, y: torch.tensor(next(measured)))
    stream = Stream.between(tiny_model, a, b, config(coarse=9, refine=0, bridges=0))
    progress = []
    first = stream.results([0], callback=lambda step, total, latents: progress.append((step, total)))[0]
    assert first.record["shape"] == "embedding first" and first.record["t"] == pytest.approx(0.5)
    # One progress bar over the three shapes' renders: it only moves forward, to its end.
    assert [s for s, _ in progress] == sorted(s for s, _ in progress) and progress[-1][0] == progress[-1][1]
    assert len({t for _, t in progress}) == 1
    # Halfway along "embedding first": the second image's embedding on the first image's noise.
    torch.testing.assert_close(first.embedding.cond, b.embedding.cond, atol=1e-5, rtol=0)
    torch.testing.assert_close(first.noise, tiny_model.initial_noise([1]), atol=1e-5, rtol=0)
    only = Stream.between(tiny_model, a, b, config(shapes=("together",)))
    assert only.id != stream.id  # the shapes measured are part of what names a between stream


def fake_path(monkeypatch, f):
    """Paths whose image at t is the grey level f(t), and f blended linearly across a bridge
    (the morph); the image distance is the grey difference, a length as it is."""
    from noise2art.methods import retime

    def render_points(self, measured, ts, callback, cancel):
        ts = torch.as_tensor(ts, dtype=torch.float64)
        v = f(ts)
        for bridge in measured.bridges:
            lo, hi = f(torch.tensor([bridge.lo]))[0], f(torch.tensor([bridge.hi]))[0]
            s = (ts - bridge.lo) / (bridge.hi - bridge.lo)
            v = torch.where(bridge.covers(ts), lo + s * (hi - lo), v)
        return v.float().reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()

    monkeypatch.setattr(Stream, "_render_points", render_points)
    fake_lengths(monkeypatch, lambda model: lambda x, y: (x - y).abs().mean(dim=(1, 2, 3)).double())
    return render_points


def jump_at(t0: float, size: float = 4.0):
    return lambda t: torch.as_tensor(t, dtype=torch.float64) + size * (torch.as_tensor(t) > t0).double()


def grey_steps(stream, results) -> torch.Tensor:
    ts = torch.tensor(sorted([0.0, 1.0] + [r.record["t"] for r in results]), dtype=torch.float64)
    grey = Stream._render_points(stream, stream.measured, ts, None, None)[:, 0, 0, 0].double()
    return grey.diff().abs()


def test_a_jump_is_bridged_and_results_cross_it_at_an_even_pace(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    fake_path(monkeypatch, jump_at(0.4, size=2.0))  # 2 of the path's length 3 in one flip at t = 0.4
    stream = Stream.between(tiny_model, a, b, config())
    results = stream.results(range(7))
    bridges = stream.measured.bridges
    assert len(bridges) == 1
    bridge = bridges[0]
    # Probed down to a sliver of t around the flip (coarse step 1/8, then bisections).
    assert bridge.lo < 0.4 < bridge.hi and bridge.hi - bridge.lo <= 1 / 8 / 2**4
    assert bridge.start_at == 1 and bridge.latents.shape == (2, *tiny_model.initial_noise([0]).shape[1:])
    inside = [r for r in results if "bridge" in r.record]
    # The bridge holds arc-length fractions 0.4/3 to 2.4/3: five of the first seven (1/4,
    # 3/8, 1/2, 5/8, 3/4) cross it, each resuming from the mixed latents at its step.
    assert sorted(r.idx for r in inside) == [0, 1, 2, 4, 5]
    assert all(r.start_at == 1 and r.record["bridge"] == {"from": bridge.lo, "to": bridge.hi, "step": 1}
               for r in inside)
    assert all(r.start_at == 0 and "bridge" not in r.record for r in results if r not in inside)
    steps = grey_steps(stream, results)
    assert float(steps.max() / steps.mean()) < 1.3

    # Without bridges the flip stays one step of the results, however they are placed.
    plain = Stream.between(tiny_model, a, b, config(bridges=0))
    assert plain.id != stream.id and not plain.measured.bridges
    steps = grey_steps(plain, plain.results(range(7)))
    assert float(steps.max() / steps.mean()) > 3


def test_a_fast_smooth_stretch_is_refined_not_bridged(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    # The same change of 4, spread evenly over t in [0.3, 0.5]: probing sees it spread out.
    fake_path(monkeypatch, lambda t: torch.as_tensor(t, dtype=torch.float64) + 4 * ((t - 0.3) / 0.2).clamp(0, 1))
    stream = Stream.between(tiny_model, a, b, config())
    results = stream.results(range(7))
    assert stream.measured.bridges == [] and all(r.start_at == 0 for r in results)
    steps = grey_steps(stream, results)
    assert float(steps.max() / steps.mean()) < 1.3


def test_bridged_results_render_from_the_mixed_latents(tiny_model, monkeypatch):
    a = Anchor(tiny_model.encode(["a red ball"]), 1)
    b = Anchor(tiny_model.encode(["a blue cube"]), 2)
    real = Stream._render_points
    fake_path(monkeypatch, jump_at(0.6, size=2.0))
    stream = Stream.between(tiny_model, a, b, StreamConfig(sampling=SamplingOverrides(steps=4, scheduler="ddim")))
    results = stream.results(range(7))
    monkeypatch.setattr(Stream, "_render_points", real)  # from here on, the model draws
    bridge = stream.measured.bridges[0]
    assert bridge.start_at == 3
    # The bridge's ends are the path's own images: resumed from its latents at lo, the
    # last step draws the image the path has at lo (DDIM resumes exactly).
    emb, _ = stream.path_point(torch.tensor([bridge.lo], dtype=torch.float64))
    with torch.no_grad():
        z = tiny_model.sample(emb, [1], latents=bridge.latents[:1], settings=stream.settings, start_at=3)
        resumed = tiny_model.decode(z).float().cpu()
    # (up to float noise: the bridge's latents were drawn in a batch of two)
    torch.testing.assert_close(resumed, stream.render_at(torch.tensor([bridge.lo], dtype=torch.float64)),
                               atol=1e-4, rtol=0)
    # A page mixing bridged and plain results: each drawn as render_at draws its t, in order.
    mixed = [r for r in results if r.start_at] + [r for r in results if not r.start_at]
    assert {r.start_at for r in mixed} == {0, 3}
    batches = []
    images = stream.render(mixed, on_batch=lambda part, ims: batches.append([r.start_at for r in part]))
    assert all(len(set(b)) == 1 for b in batches)  # one batch resumes from one step
    expected = stream.render_at(torch.tensor([r.record["t"] for r in mixed], dtype=torch.float64))
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
