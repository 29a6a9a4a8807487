"""Closed-form tests of the embedding-space maths in noise2art.space."""

from __future__ import annotations

import math

import pytest
import torch

from noise2art import space
from noise2art.errors import InvalidArgument

L, D = 6, 8


def _emb(*lead: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, L, D, generator=g, dtype=dtype)


def _rows_at_angle(theta: float, n_a: float = 1.0, n_b: float = 1.0, dim: int = D, dtype=torch.float32):
    """Two [2, dim] embeddings whose row 1 pair has angle theta (row 0 unrelated)."""
    a = torch.zeros(2, dim, dtype=dtype)
    b = torch.zeros(2, dim, dtype=dtype)
    a[0, 2] = 3.0
    b[0, 3] = 5.0
    a[1, 0] = n_a
    b[1, 0] = n_b * math.cos(theta)
    b[1, 1] = n_b * math.sin(theta)
    return a, b


def _angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.acos(cos.clamp(-1, 1))


SLERPS = [
    dict(fallback="lerp", norm="lerp"),
    dict(fallback="mean", norm="lerp"),
    dict(fallback="lerp", norm="raw"),
    dict(fallback="mean", norm="raw"),
]


# --------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    "fn",
    [space.lerp, *[lambda a, b, t, kw=kw: space.slerp(a, b, t, **kw) for kw in SLERPS],
     lambda a, b, t: space.std_blend(a, b, t, std="interpolate")],
)
def test_endpoints_keep_row0_of_a(fn):
    a, b = _emb(3, seed=1), _emb(3, seed=2)
    r0, r1 = fn(a, b, 0.0), fn(a, b, 1.0)
    torch.testing.assert_close(r0, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1[:, 1:], b[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1[:, 0], a[:, 0])


def test_keep_first_false_interpolates_every_row():
    a, b = _emb(seed=1), _emb(seed=2)
    torch.testing.assert_close(space.slerp(a, b, 1.0, keep_first=False), b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(space.lerp(a, b, 1.0, keep_first=False), b)


def test_lerp_closed_form_and_broadcast():
    a, b = _emb(seed=1), _emb(4, seed=2)
    out = space.lerp(a, b, 0.25)
    assert out.shape == (4, L, D)
    torch.testing.assert_close(out[:, 1:], 0.75 * a[1:] + 0.25 * b[:, 1:])
    torch.testing.assert_close(out[:, 0], a[0].expand(4, D))


# --------------------------------------------------------------------------- slerp norms and angles


@pytest.mark.parametrize("norm", ["lerp", "raw"])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9, 1.5, -0.5])
def test_slerp_equal_norm_rows_keep_norm_and_move_at_constant_angle(norm, t):
    a, b = _emb(seed=3), _emb(seed=4)
    a = 2.5 * a / a.norm(dim=-1, keepdim=True)
    b = 2.5 * b / b.norm(dim=-1, keepdim=True)
    out = space.slerp(a, b, t, norm=norm)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((L,), 2.5), rtol=1e-5, atol=1e-5)
    # Direction at angle t * theta from a along the great circle, also when extrapolating.
    theta = _angle(a[1:], b[1:])
    expected = torch.remainder(t * theta, 2 * math.pi)
    expected = torch.minimum(expected, 2 * math.pi - expected)
    torch.testing.assert_close(_angle(a[1:], out[1:]), expected, rtol=1e-4, atol=1e-4)


def test_slerp_norm_lerp_interpolates_row_norms():
    a, b = _rows_at_angle(1.2, n_a=1.0, n_b=3.0)
    ts = space.alphas(11)
    out = space.slerp(a, b, ts)
    torch.testing.assert_close(out[:, 1].norm(dim=-1), 1.0 + 2.0 * ts, rtol=1e-5, atol=1e-5)
    norms = out[:, 1].norm(dim=-1)
    assert bool((norms >= 1.0 - 1e-5).all() and (norms <= 3.0 + 1e-5).all())


def test_slerp_raw_reproduces_reference_formula_and_its_norm_growth():
    theta = math.radians(170)
    a, b = _rows_at_angle(theta, n_a=1.0, n_b=2.0)
    out = space.slerp(a, b, 0.5, norm="raw")
    f = math.sin(0.5 * theta) / math.sin(theta)
    torch.testing.assert_close(out[1], f * a[1] + f * b[1])
    # Documented: the reference's formula overshoots both endpoint norms at obtuse angles.
    assert out[1].norm() > 5.5
    assert space.slerp(a, b, 0.5)[1].norm().item() == pytest.approx(1.5, rel=1e-5)


# --------------------------------------------------------------------------- degenerate rows


@pytest.mark.parametrize("kw", SLERPS)
def test_identical_embeddings_give_that_embedding_without_nan(kw):
    a = _emb(2, seed=5)
    for t in [0.0, 0.3, 1.0, 1.7]:
        out = space.slerp(a, a.clone(), t, **kw)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, a, rtol=1e-5, atol=1e-5)


def test_identical_row_lerp_fallback_returns_row_exactly():
    a, b = _emb(seed=6), _emb(seed=7)
    b[2] = a[2]
    for t in [0.25, 0.5, 1.5]:
        out = space.slerp(a, b, t, fallback="lerp")
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[2], a[2])


def test_identical_row_mean_fallback_uses_mean_factors_of_other_rows():
    # Rows 1..4 orthogonal pairs (theta = pi/2): factors cos(t pi/2), sin(t pi/2).
    a = torch.zeros(L, D)
    b = torch.zeros(L, D)
    for i in range(1, L - 1):
        a[i, i] = 1.0
        b[i, i + 1] = 1.0
    a[L - 1] = torch.arange(1.0, D + 1)
    b[L - 1] = a[L - 1]
    t = 0.5
    out = space.slerp(a, b, t, fallback="mean")
    scale = math.cos(t * math.pi / 2) + math.sin(t * math.pi / 2)  # sqrt(2): the inflation
    torch.testing.assert_close(out[L - 1], scale * a[L - 1])
    torch.testing.assert_close(space.slerp(a, b, t, fallback="lerp")[L - 1], a[L - 1])


def test_near_identical_rows_lerp_fallback_is_continuous():
    # Just below and just above the threshold the two branches agree to float rounding.
    for theta in [3.4e-4, 3.5e-4, 1e-3, 1e-6]:
        a, b = _rows_at_angle(theta, n_a=1.0, n_b=1.0)
        a64, b64 = _rows_at_angle(theta, dtype=torch.float64)
        out = space.slerp(a, b, 0.3)
        ref = math.cos(0.3 * theta), math.sin(0.3 * theta)
        torch.testing.assert_close(out[1, :2], torch.tensor(ref, dtype=torch.float32), rtol=0, atol=1e-6)
        out64 = space.slerp(a64, b64, 0.3)
        assert out64.dtype == torch.float64
        torch.testing.assert_close(out64[1, :2], torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kw", SLERPS)
@pytest.mark.parametrize("theta", [math.pi, math.pi - 1e-6, math.pi - 2e-4])
def test_antiparallel_rows_are_finite(kw, theta):
    a, b = _rows_at_angle(theta, n_a=1.0, n_b=2.0)
    for t in [0.0, 0.25, 0.5, 1.0, 1.5]:
        out = space.slerp(a, b, t, **kw)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[1], (1 - t) * a[1] + t * b[1], rtol=1e-5, atol=1e-5)


def test_zero_rows_are_finite():
    a, b = _emb(seed=8), _emb(seed=9)
    a[3] = 0.0
    out = space.slerp(a, b, 0.4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[3], 0.4 * b[3])


# --------------------------------------------------------------------------- batched t, extrapolation


@pytest.mark.parametrize(
    "fn",
    [
        space.lerp,
        space.slerp,
        lambda a, b, t: space.slerp(a, b, t, fallback="mean", norm="raw"),
        space.std_blend,
        lambda a, b, t: space.steer(a, b, t),
    ],
)
def test_batched_t_equals_stacked_scalar_calls(fn):
    a, b = _emb(2, seed=10), _emb(seed=11)
    b[1] = a[0, 1]  # a coincident row in one batch element exercises the fallback
    ts = [-0.5, 0.0, 0.3, 1.0, 1.5]
    batched = fn(a, b, torch.tensor(ts))
    assert batched.shape == (len(ts), 2, L, D)
    torch.testing.assert_close(batched, torch.stack([fn(a, b, t) for t in ts]))
    torch.testing.assert_close(fn(a, b, ts), batched)  # a list works too


def test_zero_dim_tensor_t_is_scalar():
    a, b = _emb(seed=1), _emb(seed=2)
    torch.testing.assert_close(space.slerp(a, b, torch.tensor(0.3)), space.slerp(a, b, 0.3))


@pytest.mark.parametrize("t", [1.5, -0.5, 3.0])
def test_extrapolation_is_finite(t):
    a, b = _emb(2, seed=12), _emb(2, seed=13)
    for fn in (space.lerp, space.slerp, space.std_blend):
        assert torch.isfinite(fn(a, b, t)).all()
    torch.testing.assert_close(space.lerp(a, b, t)[:, 1:], a[:, 1:] + t * (b[:, 1:] - a[:, 1:]))


def test_slerp_norm_lerp_extrapolation_clamps_negative_norm():
    a, b = _rows_at_angle(1.0, n_a=3.0, n_b=1.0)
    out = space.slerp(a, b, 2.0)  # (1-2)*3 + 2*1 = -1 -> 0
    torch.testing.assert_close(out[1], torch.zeros(D))


# --------------------------------------------------------------------------- std_blend


def _std_rows(x: torch.Tensor) -> torch.Tensor:
    return x[..., 1:, :].std(dim=(-2, -1))


def test_std_blend_keeps_geometric_mean_std():
    a = _emb(3, seed=14) * 2.0 + 0.3
    b = _emb(3, seed=15) * 0.5
    target = torch.sqrt(_std_rows(a) * _std_rows(b))
    for t in [0.0, 0.3, 0.5, 1.0, 1.4]:
        out = space.std_blend(a, b, t)
        torch.testing.assert_close(_std_rows(out), target, rtol=1e-5, atol=1e-6)
        # A pure rescaling of the lerp (the reference does not re-centre) ...
        z = space.lerp(a, b, t)
        ratio = out[:, 1:] / z[:, 1:]
        torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-4, atol=1e-4)
        # ... and row 0 stays a's.
        torch.testing.assert_close(out[:, 0], a[:, 0])


def test_std_blend_interpolate_mode():
    a, b = _emb(seed=16) * 3.0, _emb(seed=17) * 0.5
    sa, sb = _std_rows(a), _std_rows(b)
    torch.testing.assert_close(space.std_blend(a, b, 0.0, std="interpolate"), a)
    torch.testing.assert_close(
        _std_rows(space.std_blend(a, b, 0.5, std="interpolate")), torch.sqrt(sa * sb), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        _std_rows(space.std_blend(a, b, 0.25, std="interpolate")), sa**0.75 * sb**0.25, rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------- blend, steer


def test_blend_one_hot_returns_that_embedding():
    es = [_emb(seed=s) for s in (20, 21, 22)]
    for k in range(3):
        w = [0.0, 0.0, 0.0]
        w[k] = 1.0
        out = space.blend(es, w)
        torch.testing.assert_close(out[1:], es[k][1:])
        torch.testing.assert_close(out[0], es[0][0])
        torch.testing.assert_close(space.blend(es, w, keep_first=False), es[k])


def test_blend_normalises_weights_and_matches_lerp():
    a, b, c = (_emb(seed=s) for s in (23, 24, 25))
    torch.testing.assert_close(space.blend([a, b], [2.0, 2.0]), space.blend([a, b], [0.5, 0.5]))
    torch.testing.assert_close(space.blend([a, b], [0.7, 0.3]), space.lerp(a, b, 0.3))
    raw = space.blend([a, b], [1.0, 1.0], normalize=False, keep_first=False)
    torch.testing.assert_close(raw, a + b)
    # Negative weight pushes away: 1.5 a - 0.5 b is lerp extrapolated to t = -0.5.
    torch.testing.assert_close(space.blend([a, b], [1.5, -0.5]), space.lerp(a, b, -0.5))
    # A stacked tensor [K, L, D] and a batch of weight vectors [N, K].
    w = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    out = space.blend(torch.stack([a, b, c]), w)
    assert out.shape == (2, L, D)
    torch.testing.assert_close(out[1], space.blend([a, b, c], [0.2, 0.3, 0.5]))


def test_blend_zero_sum_weights_raise():
    a, b = _emb(seed=26), _emb(seed=27)
    with pytest.raises(InvalidArgument, match="weights") as info:
        space.blend([a, b], [1.0, -1.0])
    assert info.value.name == "weights"
    out = space.blend([a, b], [1.0, -1.0], normalize=False, keep_first=False)
    torch.testing.assert_close(out, a - b)
    with pytest.raises(InvalidArgument, match="weights"):
        space.blend([a, b], [1.0, 0.0, 0.0])
    with pytest.raises(InvalidArgument, match="weights"):
        space.blend([a, b], [1.0, float("nan")])


def test_steer():
    e, c, base = _emb(2, seed=28), _emb(seed=29), _emb(seed=30)
    torch.testing.assert_close(space.steer(e, c, 0.0), e)
    torch.testing.assert_close(space.steer(e, c, 0.0, base=base), e)
    toward = space.steer(e, c, 1.0)
    torch.testing.assert_close(toward[:, 1:], c[1:].expand(2, L - 1, D))
    torch.testing.assert_close(toward[:, 0], e[:, 0])
    direction = space.steer(e, c, 0.4, base=base)
    torch.testing.assert_close(direction[:, 1:], e[:, 1:] + 0.4 * (c[1:] - base[1:]))
    # Negative weight moves away from the concept.
    closer = space.similarity(space.steer(e, c, 0.3), c)
    farther = space.similarity(space.steer(e, c, -0.3), c)
    assert bool((closer > space.similarity(e, c)).all() and (farther < space.similarity(e, c)).all())
    assert space.steer(e, c, [0.0, 0.5], base=base).shape == (2, 2, L, D)


# --------------------------------------------------------------------------- noise


def test_slerp_noise_endpoints_and_norm():
    g = torch.Generator().manual_seed(31)
    a = torch.randn(2, 4, 8, 8, generator=g)
    b = torch.randn(2, 4, 8, 8, generator=g)
    b = b * (a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).view(2, 1, 1, 1)
    torch.testing.assert_close(space.slerp_noise(a, b, 0.0), a)
    torch.testing.assert_close(space.slerp_noise(a, b, 1.0), b, rtol=1e-5, atol=1e-5)
    ts = torch.tensor([0.25, 0.5, 1.3])
    out = space.slerp_noise(a, b, ts)
    assert out.shape == (3, 2, 4, 8, 8)
    torch.testing.assert_close(
        out.flatten(2).norm(dim=-1), a.flatten(1).norm(dim=-1).expand(3, 2), rtol=1e-5, atol=1e-4
    )
    # Each sample is one vector: a single [C, H, W] sample gives the same as its batch row.
    torch.testing.assert_close(space.slerp_noise(a[1], b[1], 0.25), out[0, 1])
    # Lerp would shrink the midpoint of two near-orthogonal noises; slerp does not.
    assert space.slerp_noise(a, b, 0.5).norm() > 1.3 * (0.5 * (a + b)).norm()


def test_slerp_noise_near_parallel_is_finite():
    a = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(32))
    for b in (a.clone(), a * (1 + 1e-7), -a):
        out = space.slerp_noise(a, b, 0.5)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, 0.5 * (a + b))


# --------------------------------------------------------------------------- similarity and steps


def test_row_cosine_and_similarity():
    a, b = _emb(3, seed=33), _emb(seed=34)
    rc = space.row_cosine(a, b)
    assert rc.shape == (3, L)
    torch.testing.assert_close(rc[1, 2], torch.nn.functional.cosine_similarity(a[1, 2], b[2], dim=0))
    torch.testing.assert_close(space.similarity(a, a), torch.ones(3))
    torch.testing.assert_close(space.similarity(a, b), rc[:, 1:].mean(-1))
    torch.testing.assert_close(space.similarity(a, b, rows=-1), rc[:, -1])
    torch.testing.assert_close(space.similarity(a, b, rows=[0, 2]), rc[:, [0, 2]].mean(-1))


def test_reference_step_t_formula():
    c, b = _emb(seed=35), _emb(4, seed=36)
    cos = space.row_cosine(c, b)[:, -1]
    torch.testing.assert_close(space.reference_step_t(c, b), (1 - 0.72) / (1 - cos))
    torch.testing.assert_close(space.reference_step_t(c, b, 0.5, row=2), 0.5 / (1 - space.row_cosine(c, b)[:, 2]))


@pytest.mark.parametrize("kw", SLERPS)
def test_solve_slerp_t_hits_target(kw):
    c = _emb(seed=37)
    b = _emb(5, seed=38)
    b[0] = 0.9 * c + 0.1 * b[0]  # very similar candidate: needs t > 1
    b[1, 2] = c[2]  # a coincident row
    target = 0.72
    t = space.solve_slerp_t(c, b, target, **kw)
    assert t.shape == (5,)
    assert t[0] > 1.0
    moved = torch.stack([space.slerp(c, b[i], float(t[i]), **kw) for i in range(5)])
    sims = space.similarity(c, moved)
    torch.testing.assert_close(sims, torch.full((5,), target), rtol=0, atol=1e-4)
    step = space.slerp_to_similarity(c, b, target, **kw)
    torch.testing.assert_close(step.embedding, moved, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step.similarity, torch.full((5,), target), rtol=0, atol=1e-4)


def test_solve_slerp_t_edge_cases():
    c = _emb(seed=39)
    b = _emb(2, seed=40)
    assert torch.equal(space.solve_slerp_t(c, b, 1.0), torch.zeros(2))
    assert torch.equal(space.solve_slerp_t(c, c.clone(), 0.5), torch.tensor(0.0))
    # Per-element targets, and an unreachable target ends at the monotone segment's end.
    t = space.solve_slerp_t(c, b, torch.tensor([0.9, -1.0]))
    sim0 = space.similarity(c, space.slerp(c, b[0], float(t[0])))
    assert sim0.item() == pytest.approx(0.9, abs=1e-4)
    assert t[1] > 1.0
    t_capped = space.solve_slerp_t(c, b, 0.0, max_t=0.1)
    torch.testing.assert_close(t_capped, torch.full((2,), 0.1))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), torch.tensor([0.5, float("nan")])])
def test_non_finite_t_raises(bad):
    a, b = _emb(seed=41), _emb(seed=42)
    for fn in (space.lerp, space.slerp, space.std_blend):
        with pytest.raises(InvalidArgument) as info:
            fn(a, b, bad)
        assert info.value.name == "t"
    with pytest.raises(InvalidArgument) as info:
        space.slerp_noise(torch.randn(4, 2, 2), torch.randn(4, 2, 2), bad)
    assert info.value.name == "t"
    with pytest.raises(InvalidArgument) as info:
        space.steer(a, b, bad)
    assert info.value.name == "weight"


def test_t_of_wrong_rank_raises():
    a, b = _emb(seed=1), _emb(seed=2)
    with pytest.raises(InvalidArgument, match="t"):
        space.slerp(a, b, torch.zeros(2, 2))


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((L, D), (L + 1, D)), ((L, D), (L, D + 1)), ((2, L, D), (3, L, D)), ((2, L, D), (D,))],
)
def test_mismatched_shapes_raise_with_both_shapes(shape_a, shape_b):
    a, b = torch.zeros(shape_a), torch.zeros(shape_b)
    for fn in (space.lerp, space.slerp, space.std_blend, space.row_cosine):
        with pytest.raises(InvalidArgument) as info:
            fn(a, b) if fn is space.row_cosine else fn(a, b, 0.5)
        msg = str(info.value)
        assert str(list(shape_a)) in msg and str(list(shape_b)) in msg
    with pytest.raises(InvalidArgument) as info:
        space.blend([a, b], [0.5, 0.5])
    assert str(list(shape_a)) in str(info.value) and str(list(shape_b)) in str(info.value)


def test_bad_options_raise():
    a, b = _emb(seed=1), _emb(seed=2)
    with pytest.raises(InvalidArgument, match="fallback"):
        space.slerp(a, b, 0.5, fallback="nan")
    with pytest.raises(InvalidArgument, match="norm"):
        space.slerp(a, b, 0.5, norm="unit")
    with pytest.raises(InvalidArgument, match="std"):
        space.std_blend(a, b, 0.5, std="arith")
    with pytest.raises(InvalidArgument, match="a"):
        space.slerp(a.long(), b, 0.5)
    with pytest.raises(InvalidArgument, match="n"):
        space.alphas(0)


# --------------------------------------------------------------------------- autograd, dtype


def test_gradients_flow_to_a_b_and_t():
    a = _emb(2, seed=43).requires_grad_()
    b = _emb(2, seed=44)
    b[0, 2] = a[0, 2].detach()  # coincident row
    b[1, 3] = -a[1, 3].detach()  # opposite row
    b.requires_grad_()
    t = torch.tensor([0.3, 1.2], requires_grad=True)
    for kw in SLERPS:
        out = space.slerp(a, b, t, **kw)
        (out * torch.linspace(-1, 1, D)).sum().backward()
        for x in (a, b, t):
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
            x.grad = None
    space.std_blend(a, b, 0.4).square().sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_slerp_gradcheck():
    a = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: space.slerp(x, y, 0.35), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: space.slerp(x, y, 1.4, norm="raw"), (a, b))


def test_dtype_kept_and_half_precision_finite():
    a, b = _emb(seed=45, dtype=torch.float16), _emb(seed=46, dtype=torch.float16)
    for fn in (space.lerp, space.slerp, space.std_blend):
        out = fn(a, b, 0.5)
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert space.slerp(a, a, 0.5).dtype == torch.float16
    torch.testing.assert_close(space.slerp(a, a.clone(), 0.5), a)
    assert space.lerp(a.double(), b.double(), 0.5).dtype == torch.float64


# --------------------------------------------------------------------------- alphas


def test_alphas():
    torch.testing.assert_close(space.alphas(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    ref = space.alphas(51, 0.02, 1.02)
    expected = torch.tensor([(i + 1) * 0.02 for i in range(51)], dtype=torch.float64).float()
    assert torch.equal(ref, expected)
    assert torch.equal(space.alphas(1, 0.3, 0.9), torch.tensor([0.3]))
    assert space.alphas(3, dtype=torch.float64).dtype == torch.float64
