"""Embedding-space maths: interpolation, blends, steering and similarity of prompt embeddings.

A prompt embedding is the text encoder's last hidden state, ``[L, D]`` per prompt
(Stable Diffusion 1.x: 77 x 768, the embedded model: 32 x 384), batched as ``[B, L, D]``.
Row 0 is the start token (BOS / CLS).

Every function here is pure torch: batched, differentiable, device- and dtype-preserving,
with no model inside. They share one signature family so that interpolation, feedback and
optimisation code can compose them:

* ``a`` and ``b`` are ``[L, D]`` or ``[..., L, D]``; their leading dimensions broadcast,
  their ``[L, D]`` must be equal.
* ``t`` (``weight`` for :func:`steer`) is a Python number, a 0-d tensor, or a 1-d tensor /
  sequence ``[T]``. A scalar gives a result of shape ``broadcast(a, b)``; ``[T]`` gives
  ``[T, *broadcast(a, b)]`` (e.g. all frames of an interpolation at once). Values outside
  ``[0, 1]`` extrapolate; non-finite values raise :class:`~noise2art.errors.InvalidArgument`.
* ``keep_first=True`` takes row 0 from ``a`` unchanged and interpolates rows ``1..L-1``,
  as the reference (Deckers et al., IJCAI 2024, public code) does.

Half-precision inputs are computed in float32 and the result is cast back, because the
slerp factors divide by ``sin(theta)`` and lose every digit in float16 near the endpoints
of their range.

The formulae and the choices made (slerp fallback, norm handling, extrapolation) are
explained in ``docs/space.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from noise2art.errors import InvalidArgument

__all__ = [
    "SimilarityStep",
    "alphas",
    "blend",
    "lerp",
    "reference_step_t",
    "row_cosine",
    "similarity",
    "slerp",
    "slerp_noise",
    "slerp_to_similarity",
    "solve_slerp_t",
    "std_blend",
    "steer",
]

Fallback = Literal["lerp", "mean"]
NormMode = Literal["lerp", "raw"]
StdMode = Literal["geometric_mean", "interpolate"]
Rows = slice | int | Sequence[int] | Tensor
Scalar = float | int | Tensor | Sequence[float]



# --------------------------------------------------------------------------- validation


def _check_tensor(x: object, name: str, min_dim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise InvalidArgument(name, f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidArgument(name, f"expected a real floating-point tensor, got {x.dtype}")
    if x.dim() < min_dim:
        raise InvalidArgument(
            name, f"expected at least {min_dim} dimensions, got shape {list(x.shape)}"
        )
    return x


def _pair(a: object, b: object, *, names: tuple[str, str] = ("a", "b"), core_dims: int = 2):
    """Validate two tensors whose last ``core_dims`` dims must match and whose rest broadcast.

    Returns ``(a, b, lead_shape, out_dtype, compute_dtype)``.
    """
    na, nb = names
    a = _check_tensor(a, na, 0)
    b = _check_tensor(b, nb, 0)
    if a.dim() < core_dims:
        raise InvalidArgument(
            na, f"expected at least {core_dims} dimensions, got shape {list(a.shape)} ({nb}: {list(b.shape)})"
        )
    if b.dim() < core_dims or a.shape[a.dim() - core_dims :] != b.shape[b.dim() - core_dims :]:
        raise InvalidArgument(
            nb,
            f"shape {list(b.shape)} does not match {na}'s shape {list(a.shape)}: "
            f"the last {core_dims} dimensions must be equal",
        )
    try:
        lead = torch.broadcast_shapes(a.shape[: a.dim() - core_dims], b.shape[: b.dim() - core_dims])
    except RuntimeError:
        raise InvalidArgument(
            nb,
            f"shape {list(b.shape)} does not broadcast with {na}'s shape {list(a.shape)} "
            "in the leading (batch) dimensions",
        ) from None
    if a.device != b.device:
        raise InvalidArgument(nb, f"is on {b.device} but {na} is on {a.device}")
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    compute = _compute_dtype(out_dtype)
    return a.to(compute), b.to(compute), tuple(lead), out_dtype, compute


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16/bfloat16 have too few digits for sin(x)/sin(theta) and variance ratios.
    return torch.float32 if torch.finfo(dtype).bits < 32 else dtype


def _scalar_or_batch(
    t: object, name: str, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, bool]:
    """Turn ``t`` into a 0-d or 1-d tensor; return it and whether it is a batch ``[T]``."""
    if isinstance(t, bool):
        raise InvalidArgument(name, "expected a number or a 1-d tensor, got a bool")
    if isinstance(t, Tensor):
        tt = t
    elif isinstance(t, (int, float)):
        tt = torch.tensor(float(t), dtype=torch.float64)
    elif isinstance(t, Sequence) and not isinstance(t, str):
        try:
            tt = torch.tensor([float(v) for v in t], dtype=torch.float64)
        except (TypeError, ValueError):
            raise InvalidArgument(name, "expected a sequence of numbers") from None
    else:
        raise InvalidArgument(
            name, f"expected a number, a 0-d or 1-d tensor or a sequence, got {type(t).__name__}"
        )
    if tt.dim() > 1:
        raise InvalidArgument(name, f"expected a scalar or a 1-d batch [T], got shape {list(tt.shape)}")
    if tt.is_complex() or tt.dtype == torch.bool:
        raise InvalidArgument(name, f"expected real numbers, got {tt.dtype}")
    finite = torch.isfinite(tt.detach())
    if not bool(finite.all()):
        bad = tt.detach().reshape(-1)[~finite.reshape(-1)][0].item()
        raise InvalidArgument(name, f"must be finite (any real value extrapolates), got {bad}")
    return tt.to(device=device, dtype=dtype), tt.dim() == 1


def _shape_t(tt: Tensor, batched: bool, ndim: int) -> Tensor:
    """Reshape a scalar or ``[T]`` so that it broadcasts against a ``ndim``-d tensor.

    A batch becomes ``[T, 1, ..., 1]`` and thereby adds the leading ``T`` dimension.
    """
    return tt.reshape(-1, *([1] * ndim)) if batched else tt


def _check_choice(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidArgument(name, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _resolve_eps(eps: float | None, dtype: torch.dtype) -> float:
    """The angle (radians) below which, or this close to pi, slerp rows count as degenerate.

    Default ``sqrt(machine epsilon)`` of the compute dtype (3.5e-4 for float32, 1.5e-8 for
    float64): below it lerp equals slerp to rounding (for t in [0, 1] they differ by at
    most the sagitta ``theta^2 / 8`` relative), and near pi the ``1 / sin(theta)`` factors
    amplify rounding by at most ``1 / eps``, keeping half the digits of a problem that is
    ill-conditioned there anyway.
    """
    if eps is None:
        return math.sqrt(torch.finfo(dtype).eps)
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0.0 <= eps < math.pi / 2):
        raise InvalidArgument("eps", f"must be an angle in [0, pi/2) radians, got {eps!r}")
    return float(eps)


def _with_first(rows: Tensor, a: Tensor) -> Tensor:
    """Prepend ``a``'s row 0, broadcast to the batch shape of ``rows`` (``[..., L-1, D]``)."""
    first = a[..., :1, :]
    first = torch.broadcast_to(first, (*rows.shape[:-2], 1, rows.shape[-1]))
    return torch.cat([first, rows], dim=-2)


# --------------------------------------------------------------------------- slerp core


def _angles(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Norms, unit vectors and angle between the last-dim vectors of ``a`` and ``b``.

    ``theta = 2 atan2(|ua - ub|, |ua + ub|)`` is accurate over the whole range [0, pi],
    where ``acos(ua . ub)`` loses half its digits near 0 and pi and returns NaN when
    rounding pushes the dot product past +-1 (the source of the reference's NaN factors).
    Returns ``(na, nb, ua, ub, theta, zero)``, each with a trailing dimension of size 1
    except the unit vectors; ``zero`` marks rows where either vector is zero.
    """
    na = torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    nb = torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    tiny = torch.finfo(a.dtype).tiny
    zero = (na <= tiny) | (nb <= tiny)
    ua = a / na.clamp_min(tiny)
    ub = b / nb.clamp_min(tiny)
    theta = 2.0 * torch.atan2(
        torch.linalg.vector_norm(ua - ub, dim=-1, keepdim=True),
        torch.linalg.vector_norm(ua + ub, dim=-1, keepdim=True),
    )
    return na, nb, ua, ub, theta, zero


def _slerp_rows(
    a: Tensor,
    b: Tensor,
    t: Tensor,
    *,
    fallback: Fallback,
    norm: NormMode,
    eps: float,
) -> Tensor:
    """Slerp each last-dim vector (row) of ``a [..., N, D]`` toward ``b [..., N, D]``.

    ``t`` broadcasts against ``[..., N, 1]``. Rows are independent except under
    ``fallback="mean"``, which averages factors over the row dimension ``-2``.
    """
    na, nb, ua, ub, theta, zero = _angles(a, b)
    coincident = (theta < eps) & ~zero
    opposite = (theta > math.pi - eps) & ~zero
    degenerate = zero | coincident | opposite

    # Evaluate the factors at a harmless angle on degenerate rows: torch.where routes
    # zero gradient to the unused branch, but 0 * inf from sin(0)/0 would still be NaN.
    safe = torch.where(degenerate, torch.ones_like(theta), theta)
    sin_safe = torch.sin(safe)
    f1 = torch.sin((1.0 - t) * safe) / sin_safe
    f2 = torch.sin(t * safe) / sin_safe

    use_lerp = degenerate
    if fallback == "mean":
        # The reference: undefined factors (0/0 on coincident rows) become the mean of the
        # other rows' factors, per embedding and per t. Opposite and zero rows have no
        # defined great circle at all and take lerp in either mode.
        valid = (~degenerate).to(f1.dtype)
        count = valid.sum(dim=-2, keepdim=True)
        has_valid = count > 0
        denom = count.clamp_min(1.0)
        mean1 = (f1 * valid).sum(dim=-2, keepdim=True) / denom
        mean2 = (f2 * valid).sum(dim=-2, keepdim=True) / denom
        replace = coincident & has_valid
        f1 = torch.where(replace, mean1, f1)
        f2 = torch.where(replace, mean2, f2)
        use_lerp = degenerate & ~replace

    if norm == "raw":
        # The reference applies the unit-sphere factors to the raw vectors: an elliptic
        # arc through a and b, norm-preserving only when |a| = |b| (see docs/space.md).
        curved = f1 * a + f2 * b
    else:
        # Direction on the great circle at angle t*theta, norm interpolated linearly;
        # a negative norm (far extrapolation between very unequal norms) has no meaning.
        length = ((1.0 - t) * na + t * nb).clamp_min(0.0)
        curved = length * (f1 * ua + f2 * ub)

    # (1 - t) a + t b, not a + t (b - a): exact at both t = 0 and t = 1.
    straight = (1.0 - t) * a + t * b
    return torch.where(use_lerp, straight, curved)


# --------------------------------------------------------------------------- interpolation


def lerp(a: Tensor, b: Tensor, t: Scalar, *, keep_first: bool = True) -> Tensor:
    """Linear interpolation ``(1 - t) a + t b`` of prompt embeddings, row by row.

    Args:
        a, b: ``[L, D]`` or ``[..., L, D]``; leading dims broadcast.
        t: number, 0-d tensor, or ``[T]`` batch of alphas; any finite value (outside
            ``[0, 1]`` extrapolates along the line).
        keep_first: take row 0 (BOS / CLS) from ``a`` unchanged and interpolate rows
            ``1..L-1`` only, as the reference's interpolation script does.

    Returns:
        ``broadcast(a, b)`` shape for scalar ``t``; ``[T, *broadcast(a, b)]`` for a batch.
        ``t = 0`` gives ``a`` and ``t = 1`` gives ``b`` (rows ``1..``) exactly.
    """
    a, b, _, out_dtype, dtype = _pair(a, b)
    tt, batched = _scalar_or_batch(t, "t", dtype, a.device)
    tt = _shape_t(tt, batched, max(a.dim(), b.dim()))
    if keep_first:
        rows = (1.0 - tt) * a[..., 1:, :] + tt * b[..., 1:, :]
        out = _with_first(rows, a)
    else:
        out = (1.0 - tt) * a + tt * b
    return out.to(out_dtype)


def slerp(
    a: Tensor,
    b: Tensor,
    t: Scalar,
    *,
    fallback: Fallback = "lerp",
    norm: NormMode = "lerp",
    keep_first: bool = True,
    eps: float | None = None,
) -> Tensor:
    """Per-token spherical interpolation of prompt embeddings (Deckers et al., IJCAI 2024).

    Each row ``i`` (rows ``1..L-1`` with ``keep_first``) is slerped as its own D-vector.
    With ``theta_i`` the angle between ``a_i/|a_i|`` and ``b_i/|b_i|`` and the factors
    ``f1 = sin((1-t) theta_i) / sin(theta_i)``, ``f2 = sin(t theta_i) / sin(theta_i)``:

    * ``norm="lerp"`` (default): ``((1-t)|a_i| + t|b_i|) * (f1 a_i/|a_i| + f2 b_i/|b_i|)``.
      The direction moves along the great circle at constant angular speed (angle
      ``t theta_i`` from ``a_i``), the norm changes linearly from ``|a_i|`` to ``|b_i|``.
    * ``norm="raw"``: ``f1 a_i + f2 b_i``, the reference's formula. Equal to the above when
      ``|a_i| = |b_i|``; otherwise it traces an ellipse arc whose norm may exceed both
      endpoints' by far at obtuse angles (norms 1 and 2 at 170 degrees: 5.9 at t = 0.5).

    Degenerate rows, where the great circle is undefined or ill-conditioned:

    * coincident directions (``theta < eps``): the factors are 0/0.
      ``fallback="lerp"`` (default) uses ``(1-t) a_i + t b_i`` there: the limit of slerp
      as theta -> 0, so the result is exact for identical rows and continuous next to
      them (for t in [0, 1] the error is at most the sagitta theta^2 / 8 relative, below
      rounding for the default eps).
      ``fallback="mean"`` reproduces the reference: those factors become the mean of the
      other (non-degenerate) rows' factors of the same embedding and t. For 0 < t < 1 the
      mean factors sum to more than 1, so an identical row comes out *scaled up* (up to
      ~1.41x when the other rows are orthogonal) -- the reason it is not the default. If
      no row is non-degenerate it uses lerp (the reference would give NaN).
    * opposite directions (``theta > pi - eps``) and zero rows: no unique great circle;
      both fallbacks use lerp, which is finite and passes through the midpoint.

    Extrapolation: ``t`` outside ``[0, 1]`` continues along the same great circle (angle
    ``t theta_i``, which may pass the antipode for large ``|t|``); with ``norm="lerp"``
    the norm continues linearly and is clamped at 0.

    Args:
        a, b: ``[L, D]`` or ``[..., L, D]``; leading dims broadcast.
        t: number, 0-d tensor, or ``[T]`` batch of alphas; any finite value.
        fallback: ``"lerp"`` or ``"mean"`` (the reference's), see above.
        norm: ``"lerp"`` or ``"raw"`` (the reference's), see above.
        keep_first: take row 0 from ``a`` unchanged (the reference does).
        eps: angle threshold in radians for the degenerate cases; default
            ``sqrt(machine epsilon)`` of the compute dtype (3.5e-4 rad for float32 and
            half inputs, 1.5e-8 for float64).

    Returns:
        ``broadcast(a, b)`` shape for scalar ``t``, ``[T, *broadcast(a, b)]`` for ``[T]``.
    """
    _check_choice(fallback, "fallback", ("lerp", "mean"))
    _check_choice(norm, "norm", ("lerp", "raw"))
    a, b, _, out_dtype, dtype = _pair(a, b)
    eps = _resolve_eps(eps, dtype)
    tt, batched = _scalar_or_batch(t, "t", dtype, a.device)
    tt = _shape_t(tt, batched, max(a.dim(), b.dim()))
    if keep_first:
        rows = _slerp_rows(a[..., 1:, :], b[..., 1:, :], tt, fallback=fallback, norm=norm, eps=eps)
        out = _with_first(rows, a)
    else:
        out = _slerp_rows(a, b, tt, fallback=fallback, norm=norm, eps=eps)
    return out.to(out_dtype)


def std_blend(
    a: Tensor,
    b: Tensor,
    t: Scalar,
    *,
    std: StdMode = "geometric_mean",
    keep_first: bool = True,
) -> Tensor:
    """Lerp rescaled to a target standard deviation (the reference's "combined" blend).

    ``z = (1-t) a + t b``, then ``z * s_target / s(z)``, a pure scaling (no re-centring),
    as the reference does. ``s(x)`` is the standard deviation of all entries of one
    embedding over rows ``1..L-1`` and all ``D`` columns (all ``L`` rows when
    ``keep_first=False``), computed per embedding (per batch element and per ``t``).
    Sample (n-1) and population std give the same result: only ratios of stds over
    equally many entries enter.

    * ``std="geometric_mean"`` (the reference): ``s_target = sqrt(s(a) s(b))`` for every
      ``t``. Note that then even ``t = 0`` returns ``a`` rescaled, not ``a``.
    * ``std="interpolate"``: ``s_target = s(a)^(1-t) s(b)^t``, the geometric interpolation;
      equal to the above at ``t = 0.5`` and exact at the endpoints (``t = 0`` gives ``a``),
      so better for interpolation paths.

    Row 0 is taken from ``a`` unchanged with ``keep_first``. If ``z`` is constant
    (``s(z) = 0``) it is returned unscaled.

    Args:
        a, b: ``[L, D]`` or ``[..., L, D]``; leading dims broadcast.
        t: number, 0-d tensor, or ``[T]`` batch; any finite value.

    Returns:
        ``broadcast(a, b)`` shape, or ``[T, *broadcast(a, b)]`` for a batch ``t``.
    """
    _check_choice(std, "std", ("geometric_mean", "interpolate"))
    a, b, _, out_dtype, dtype = _pair(a, b)
    tt, batched = _scalar_or_batch(t, "t", dtype, a.device)
    tt = _shape_t(tt, batched, max(a.dim(), b.dim()))
    ra, rb = (a[..., 1:, :], b[..., 1:, :]) if keep_first else (a, b)
    if ra.shape[-2] * ra.shape[-1] < 2:
        raise InvalidArgument("a", f"needs at least 2 entries to measure a std, shape {list(a.shape)}")
    z = (1.0 - tt) * ra + tt * rb
    sa = ra.std(dim=(-2, -1), keepdim=True)
    sb = rb.std(dim=(-2, -1), keepdim=True)
    sz = z.std(dim=(-2, -1), keepdim=True)
    if std == "geometric_mean":
        target = torch.sqrt(sa * sb)
    else:
        # exp-log form of sa^(1-t) sb^t; zero stds stay zero instead of giving NaN logs.
        tiny = torch.finfo(dtype).tiny
        target = torch.exp((1.0 - tt) * torch.log(sa.clamp_min(tiny)) + tt * torch.log(sb.clamp_min(tiny)))
        target = torch.where((sa > 0) & (sb > 0), target, torch.sqrt(sa * sb))
    flat = sz <= 0
    scale = torch.where(flat, torch.ones_like(sz), target / torch.where(flat, torch.ones_like(sz), sz))
    rows = z * scale
    out = _with_first(rows, a) if keep_first else rows
    return out.to(out_dtype)


# --------------------------------------------------------------------------- blends and steering


def blend(
    embeddings: Sequence[Tensor] | Tensor,
    weights: Sequence[float] | Tensor,
    *,
    normalize: bool = True,
    keep_first: bool = True,
) -> Tensor:
    """Weighted linear blend of K prompt embeddings: ``sum_k w_k E_k``.

    Args:
        embeddings: a sequence of K tensors ``[L, D]`` / ``[..., L, D]`` (leading dims
            broadcast), or one tensor ``[K, ..., L, D]``.
        weights: ``[K]``, or ``[N, K]`` for N blends at once. Negative weights push the
            result away from that embedding.
        normalize: divide the weights by their sum so that they sum to 1 (the blend
            then is an affine combination and stays on the embeddings' scale); raises
            :class:`InvalidArgument` when the sum is ~0 (``|sum| <= 1e-6 * sum |w|``),
            e.g. ``[1, -1]``, for which no such normalisation exists -- pass
            ``normalize=False`` to use such weights as given.
        keep_first: take row 0 from the first embedding unchanged.

    Returns:
        ``broadcast`` of the embeddings' shapes for ``[K]`` weights, ``[N, ...]`` for
        ``[N, K]``. ``blend([a, b], [1 - t, t])`` equals ``lerp(a, b, t)``.
    """
    if isinstance(embeddings, Tensor):
        _check_tensor(embeddings, "embeddings", 3)
        items = list(embeddings.unbind(0))
    else:
        if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Sequence):
            raise InvalidArgument("embeddings", "expected a sequence of tensors or a tensor [K, ..., L, D]")
        items = list(embeddings)
    if not items:
        raise InvalidArgument("embeddings", "needs at least one embedding")
    first = _check_tensor(items[0], "embeddings[0]", 2)
    for k, e in enumerate(items[1:], start=1):
        _pair(first, e, names=("embeddings[0]", f"embeddings[{k}]"))
    out_dtype = first.dtype
    for e in items[1:]:
        out_dtype = torch.promote_types(out_dtype, e.dtype)
    dtype = _compute_dtype(out_dtype)
    stacked = torch.stack(torch.broadcast_tensors(*[e.to(dtype) for e in items]))  # [K, ..., L, D]
    K = stacked.shape[0]

    if isinstance(weights, Tensor):
        w = weights
        if w.is_complex() or w.dtype == torch.bool:
            raise InvalidArgument("weights", f"expected real numbers, got {w.dtype}")
    else:
        try:
            w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
        except (TypeError, ValueError):
            raise InvalidArgument("weights", "expected a sequence of numbers or a tensor") from None
    if w.dim() not in (1, 2) or w.shape[-1] != K:
        raise InvalidArgument(
            "weights", f"expected shape [{K}] or [N, {K}] for {K} embeddings, got {list(w.shape)}"
        )
    if not bool(torch.isfinite(w.detach()).all()):
        raise InvalidArgument("weights", "must all be finite")
    w = w.to(device=stacked.device, dtype=dtype)
    if normalize:
        total = w.sum(dim=-1, keepdim=True)
        scale = w.detach().abs().sum(dim=-1, keepdim=True)
        if bool((total.detach().abs() <= 1e-6 * scale).any()):
            raise InvalidArgument(
                "weights",
                f"sum to ~0 ({total.detach().reshape(-1).tolist()}), so they cannot be normalised "
                "to sum 1; pass normalize=False to use them as given",
            )
        w = w / total
    out = torch.tensordot(w, stacked, dims=([w.dim() - 1], [0]))
    if keep_first:
        out = _with_first(out[..., 1:, :], stacked[0])
    return out.to(out_dtype)


def steer(
    e: Tensor,
    concept: Tensor,
    weight: Scalar,
    *,
    base: Tensor | None = None,
    keep_first: bool = True,
) -> Tensor:
    """Move an embedding toward (``weight > 0``) or away from (``weight < 0``) a concept.

    * ``base=None``: ``e + w (concept - e)``, i.e. ``lerp(e, concept, w)``. ``w = 1`` gives
      the concept itself; the pull depends on how far ``e`` is from the concept.
    * ``base`` given: ``e + w (concept - base)``, adding the concept *direction*, e.g.
      ``concept = encode("a red ball, oil painting")``, ``base = encode("a red ball")``:
      the step is the same for every ``e``, so one direction steers many queries
      ("directed index").

    Args:
        e: ``[L, D]`` or ``[..., L, D]``.
        concept, base: embeddings of the same ``[L, D]``; leading dims broadcast.
        weight: number, 0-d tensor, or ``[T]`` batch of weights; any finite value.
        keep_first: keep ``e``'s row 0 unchanged.

    Returns:
        ``broadcast`` shape, or ``[T, ...]`` for a batch weight. ``weight = 0`` gives ``e``.
    """
    if base is None:
        e_, c_, _, out_dtype, dtype = _pair(e, concept, names=("e", "concept"))
        ww, batched = _scalar_or_batch(weight, "weight", dtype, e_.device)
        ww = _shape_t(ww, batched, max(e_.dim(), c_.dim()))
        out = e_ + ww * (c_ - e_)
    else:
        c_, b_, _, cb_dtype, _ = _pair(concept, base, names=("concept", "base"))
        e_, direction, _, out_dtype, dtype = _pair(e, c_ - b_, names=("e", "concept"))
        out_dtype = torch.promote_types(out_dtype, cb_dtype)
        ww, batched = _scalar_or_batch(weight, "weight", dtype, e_.device)
        ww = _shape_t(ww, batched, max(e_.dim(), direction.dim()))
        out = e_ + ww * direction
    if keep_first:
        out = _with_first(out[..., 1:, :], e_)
    return out.to(out_dtype)


# --------------------------------------------------------------------------- noise


def slerp_noise(
    a: Tensor,
    b: Tensor,
    t: Scalar,
    *,
    sample_dims: int = 3,
    norm: NormMode = "lerp",
    eps: float | None = None,
) -> Tensor:
    """Slerp between initial latent noise tensors, each sample's tensor as one vector.

    Seed interpolation: with ``theta`` the angle between the flattened samples,
    the same formula as :func:`slerp` on one vector per sample. Equal-norm inputs
    (two Gaussian noises have norms within ~1% of each other) keep that norm along
    the path, so intermediate latents stay as "noisy" as the endpoints, which lerp
    would not (its midpoint of two orthogonal noises has norm ~0.71x). Near-parallel and
    near-opposite samples (``theta < eps`` or ``> pi - eps``) use lerp.

    Args:
        a, b: ``[B, C, H, W]`` or ``[C, H, W]``; more generally the last ``sample_dims``
            dimensions form one sample and must match, the leading ones broadcast.
        t: number, 0-d tensor, or ``[T]`` batch; any finite value (extrapolates along
            the great circle).
        sample_dims: how many trailing dimensions make up one sample.
        norm: ``"lerp"`` (norm interpolated linearly) or ``"raw"`` (factors on the raw
            tensors), see :func:`slerp`.

    Returns:
        ``broadcast(a, b)`` shape, or ``[T, *broadcast(a, b)]`` for a batch ``t``.
    """
    if not (isinstance(sample_dims, int) and sample_dims >= 1):
        raise InvalidArgument("sample_dims", f"must be an integer >= 1, got {sample_dims!r}")
    _check_choice(norm, "norm", ("lerp", "raw"))
    a, b, lead, out_dtype, dtype = _pair(a, b, core_dims=sample_dims)
    eps = _resolve_eps(eps, dtype)
    sample_shape = tuple(a.shape[a.dim() - sample_dims :])
    tt, batched = _scalar_or_batch(t, "t", dtype, a.device)
    # One "row" per sample: [..., 1, n]; the row dimension only matters for fallback="mean".
    fa = a.reshape(*a.shape[: a.dim() - sample_dims], 1, -1)
    fb = b.reshape(*b.shape[: b.dim() - sample_dims], 1, -1)
    tt = _shape_t(tt, batched, max(fa.dim(), fb.dim()))
    out = _slerp_rows(fa, fb, tt, fallback="lerp", norm=norm, eps=eps)
    out = out.reshape(*out.shape[:-2], *sample_shape)
    return out.to(out_dtype)


# --------------------------------------------------------------------------- similarity


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each token row: ``[..., L, D] x [..., L, D] -> [..., L]``.

    A zero row has cosine 0 with anything (``torch.nn.functional.cosine_similarity``'s
    convention).
    """
    a, b, _, out_dtype, _ = _pair(a, b)
    a, b = torch.broadcast_tensors(a, b)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8).to(out_dtype)


def _select_rows(x: Tensor, rows: Rows) -> Tensor:
    """Index the last dimension (rows) of ``x [..., L]`` and keep it as a dimension."""
    if isinstance(rows, bool):
        raise InvalidArgument("rows", "expected a slice, an int or a sequence of ints")
    L = x.shape[-1]
    if isinstance(rows, int):
        if not -L <= rows < L:
            raise InvalidArgument("rows", f"row {rows} is out of range for L = {L}")
        return x[..., rows : rows + 1] if rows != -1 else x[..., -1:]
    if isinstance(rows, slice):
        out = x[..., rows]
    else:
        idx = torch.as_tensor(rows, dtype=torch.long, device=x.device).reshape(-1)
        if idx.numel() and bool(((idx < -L) | (idx >= L)).any()):
            raise InvalidArgument("rows", f"indices {idx.tolist()} out of range for L = {L}")
        out = x.index_select(-1, idx % L)
    if out.shape[-1] == 0:
        raise InvalidArgument("rows", f"selects no row of L = {L}")
    return out


def similarity(a: Tensor, b: Tensor, rows: Rows = slice(1, None)) -> Tensor:
    """Mean row cosine of two embeddings: ``[..., L, D] x [..., L, D] -> [...]``.

    By default over rows ``1..L-1``: row 0 is the start token, the same (CLIP) or held
    fixed by :func:`slerp` and :func:`lerp`, and would only dilute the measure.
    ``rows`` is a slice, a single index or a sequence of indices.
    """
    return _select_rows(row_cosine(a, b), rows).mean(dim=-1)


def reference_step_t(c: Tensor, b: Tensor, target: float = 0.72, *, row: int = -1) -> Tensor:
    """The reference's approximate step toward ``b``: ``t = (1 - target) / (1 - cos(c_r, b_r))``.

    Iterative human feedback (Deckers et al., IJCAI 2024) moves the current embedding ``c``
    toward each candidate ``b`` by this ``t`` with slerp, aiming at a similarity of about
    ``target`` between ``c`` and the result. It is exact for the dot product of unit
    vectors under lerp (``c.((1-t)c + t b) = 1 - t (1 - cos)``), only approximate for the
    mean row cosine after slerp; :func:`solve_slerp_t` solves that exactly.

    ``row`` defaults to the last row, as in the reference (its ``compute_dot`` uses
    ``[:, -1]``, for SD a padding row after EOS that CLIP's causal encoder makes a
    summary of the whole prompt). ``t`` is not clamped, as in the reference: it exceeds
    1 (extrapolation) when ``cos > target`` and is ``inf`` when that row of ``c`` and
    ``b`` coincide.

    Args:
        c, b: ``[L, D]`` or ``[..., L, D]``; leading dims broadcast.

    Returns:
        ``t`` of the broadcast leading shape ``[...]``.
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise InvalidArgument("target", f"must be a finite number, got {target!r}")
    cos = _select_rows(row_cosine(c, b), row).squeeze(-1)
    return (1.0 - target) / (1.0 - cos)


# --------------------------------------------------------------------------- exact similarity steps


def _slerp_t_hi(c: Tensor, b: Tensor, keep_first: bool, rows: Rows, eps: float) -> Tensor:
    """End of the monotone segment of ``t -> similarity(c, slerp(c, b, t))``: pi / max theta.

    Row ``i``'s direction sits at angle ``t theta_i`` from ``c_i`` (for both norm modes;
    the "raw" ellipse is a linear image of the circle and keeps the angular order), so its
    cosine falls monotonically until ``t theta_i = pi``. Returns ``[...]``; 0 where no
    selected row differs (nothing moves).
    """
    _, _, _, _, theta, zero = _angles(*torch.broadcast_tensors(c, b))
    theta = torch.where(zero | (theta < eps), torch.zeros_like(theta), theta).squeeze(-1)
    if keep_first:
        theta = torch.cat([torch.zeros_like(theta[..., :1]), theta[..., 1:]], dim=-1)
    theta_max = _select_rows(theta, rows).amax(dim=-1)
    return torch.where(theta_max > 0, math.pi / theta_max.clamp_min(eps), torch.zeros_like(theta_max))


def solve_slerp_t(
    c: Tensor,
    b: Tensor,
    target_similarity: float | Tensor,
    *,
    rows: Rows = slice(1, None),
    max_t: float | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    fallback: Fallback = "lerp",
    norm: NormMode = "lerp",
    keep_first: bool = True,
    eps: float | None = None,
) -> Tensor:
    """The step ``t`` with ``similarity(c, slerp(c, b, t), rows) == target_similarity``.

    Places feedback candidates at an exact similarity to the current embedding ``c``
    (the reference approximates this with :func:`reference_step_t`). The similarity is 1
    at ``t = 0`` and falls monotonically on ``[0, pi / max_i theta_i]`` (past ``t = 1``:
    targets below ``similarity(c, b)`` are reached by extrapolation); the solver bisects
    on that segment, vectorised over the batch, until the bracket is narrower than
    ``tol`` (so the similarity is within ``pi * tol`` of the target).

    Unreachable targets: ``target >= 1`` gives 0; a target below the least similarity on
    the segment gives the segment's end (the least similar point reachable); where ``b``
    equals ``c`` (nothing moves) 0. Check ``similarity`` afterwards where that matters.
    The solve runs without autograd; the returned ``t`` is detached.

    Args:
        c: ``[L, D]`` or ``[..., L, D]``, the current embedding.
        b: ``[..., L, D]``, a batch of targets; leading dims broadcast with ``c``.
        target_similarity: number, or a tensor broadcastable to the batch shape.
        rows: rows over which :func:`similarity` averages.
        max_t: optional upper bound on ``t`` (applied on top of the monotone segment).
        fallback, norm, keep_first, eps: passed to :func:`slerp`.

    Returns:
        ``t`` of the broadcast leading shape ``[...]`` (float32, float64 for float64 input).
    """
    _check_choice(fallback, "fallback", ("lerp", "mean"))
    _check_choice(norm, "norm", ("lerp", "raw"))
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise InvalidArgument("tol", f"must be > 0, got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise InvalidArgument("max_iter", f"must be an integer >= 1, got {max_iter!r}")
    if max_t is not None and not (isinstance(max_t, (int, float)) and math.isfinite(max_t) and max_t >= 0):
        raise InvalidArgument("max_t", f"must be a finite number >= 0, got {max_t!r}")
    c, b, lead, _, dtype = _pair(c, b, names=("c", "b"))
    eps = _resolve_eps(eps, dtype)
    with torch.no_grad():
        c, b = c.detach(), b.detach()
        target = torch.as_tensor(target_similarity, dtype=torch.float64, device=c.device)
        if not bool(torch.isfinite(target).all()):
            raise InvalidArgument("target_similarity", "must be finite")
        try:
            target = torch.broadcast_to(target, lead)
        except RuntimeError:
            raise InvalidArgument(
                "target_similarity",
                f"shape {list(target.shape)} does not broadcast to the batch shape {list(lead)}",
            ) from None

        hi = _slerp_t_hi(c, b, keep_first, rows, eps).to(torch.float64)
        if max_t is not None:
            hi = hi.clamp_max(max_t)
        lo = torch.zeros_like(hi)
        cb, bb = torch.broadcast_tensors(c, b)

        def sim_at(t: Tensor) -> Tensor:
            tt = t.to(dtype)[..., None, None]  # one t per batch element
            if keep_first:
                moved = _with_first(
                    _slerp_rows(cb[..., 1:, :], bb[..., 1:, :], tt, fallback=fallback, norm=norm, eps=eps),
                    cb,
                )
            else:
                moved = _slerp_rows(cb, bb, tt, fallback=fallback, norm=norm, eps=eps)
            return similarity(cb, moved, rows).to(torch.float64)

        # Unreachable targets end at the segment's end: keep hi there.
        reachable = sim_at(hi) <= target
        hi_fixed = hi.clone()
        for _ in range(max_iter):
            if bool(((hi - lo) <= tol).all()):
                break
            mid = 0.5 * (lo + hi)
            above = sim_at(mid) > target
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        t = torch.where(reachable, 0.5 * (lo + hi), hi_fixed)
        t = torch.where(target >= 1.0, torch.zeros_like(t), t)
    return t.to(dtype)


class SimilarityStep(NamedTuple):
    """Result of :func:`slerp_to_similarity`."""

    embedding: Tensor  # [..., L, D]: c moved toward b
    t: Tensor  # [...]: the step used per batch element
    similarity: Tensor  # [...]: similarity(c, embedding) actually reached


def slerp_to_similarity(
    c: Tensor,
    b: Tensor,
    target_similarity: float | Tensor,
    *,
    rows: Rows = slice(1, None),
    max_t: float | None = None,
    fallback: Fallback = "lerp",
    norm: NormMode = "lerp",
    keep_first: bool = True,
    eps: float | None = None,
) -> SimilarityStep:
    """Move ``c`` toward each ``b`` by slerp to exactly ``target_similarity``, one ``t`` each.

    :func:`solve_slerp_t` followed by a slerp with a per-batch-element ``t`` (unlike
    :func:`slerp`, whose ``[T]`` batch adds a dimension). Differentiable in ``c`` and
    ``b`` at the solved ``t``.

    Returns:
        :class:`SimilarityStep` with ``embedding [..., L, D]``, ``t [...]`` and the
        ``similarity [...]`` reached.
    """
    t = solve_slerp_t(
        c, b, target_similarity, rows=rows, max_t=max_t,
        fallback=fallback, norm=norm, keep_first=keep_first, eps=eps,
    )
    c_, b_, _, out_dtype, dtype = _pair(c, b, names=("c", "b"))
    eps = _resolve_eps(eps, dtype)
    c_, b_ = torch.broadcast_tensors(c_, b_)
    tt = t.to(dtype)[..., None, None]
    if keep_first:
        rows_out = _slerp_rows(c_[..., 1:, :], b_[..., 1:, :], tt, fallback=fallback, norm=norm, eps=eps)
        out = _with_first(rows_out, c_)
    else:
        out = _slerp_rows(c_, b_, tt, fallback=fallback, norm=norm, eps=eps)
    out = out.to(out_dtype)
    return SimilarityStep(out, t, similarity(c, out, rows).detach())


# --------------------------------------------------------------------------- alphas


def alphas(
    n: int,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` evenly spaced interpolation weights from ``lo`` to ``hi``, both included: ``[n]``.

    Computed in float64 and then cast, so that e.g. the reference's frames
    ``alpha = (i + 1) * 0.02, i = 0..50`` are ``alphas(51, 0.02, 1.02)`` to the last bit of
    float32. ``n = 1`` gives ``[lo]``. ``lo > hi`` runs backwards; values outside
    ``[0, 1]`` extrapolate.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgument("n", f"must be an integer >= 1, got {n!r}")
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidArgument(name, f"must be a finite number, got {v!r}")
    if n == 1:
        return torch.tensor([float(lo)], dtype=dtype, device=device)
    i = torch.arange(n, dtype=torch.float64)
    out = float(lo) + (float(hi) - float(lo)) * i / (n - 1)
    out[-1] = float(hi)
    return out.to(dtype=dtype, device=device)
