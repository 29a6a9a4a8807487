"""Interpolation (M4): frames along a path through prompt embeddings and initial noise.

A path visits keyframe embeddings ``E_0 -> E_1 -> ... -> E_{K-1}`` (each segment
interpolated per token with ``space.slerp``, ``space.lerp`` or ``space.std_blend``) and,
optionally, moves the initial noise from one seed to another (``space.slerp_noise``).
Following Deckers et al., "Manipulating Embeddings of Stable Diffusion Prompts" (IJCAI
2024, public code): per-token slerp with row 0 held fixed, one fixed seed, and frames
that may reach past the keyframes (their figure ends at alpha 1.02). Beyond it: several
keyframes without a duplicate frame at the joins, extrapolation as an option, joint
prompt + seed paths, and every frame of a path rendered in UNet batches.

Positions. A frame's *global alpha* ``a`` is its place on the whole path: keyframe ``k``
sits at ``a = k / (K - 1)``, so ``[0, 1]`` runs from the first keyframe to the last and
values outside extrapolate (below 0 along the first segment, above 1 along the last).
Its path coordinate ``p = a (K - 1)`` gives the segment ``s = clamp(floor(p), 0, K - 2)``
and the local ``t = p - s``. With one keyframe (a seed path only) the prompt is fixed and
``a`` is the noise alpha alone. The noise alpha equals the global alpha, so prompt and
seed move together.

The maths and the choices are explained in ``docs/interpolation.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from noise2art import space
from noise2art.engine import validation as V
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, StepCallback
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument

__all__ = [
    "METHODS",
    "MAX_FRAMES",
    "InterpolationConfig",
    "InterpolationPath",
    "InterpolationResult",
    "interpolate",
    "locate",
    "plan_alphas",
    "render_frames",
]

METHODS = ("slerp", "lerp", "blend")
MIN_FRAMES, MAX_FRAMES = 2, 10000
# Frames whose embeddings and noise are built at once: bounds memory on long SD paths
# (512 x 2 x 77 x 768 floats = 240 MB) while a typical path is built in one call per segment.
FRAMES_PER_BUILD = 512


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(name, f"must be a finite number, got {value!r}")
    return float(value)


@dataclass
class InterpolationConfig:
    """Settings of an interpolation path and of how its frames are rendered.

    Attributes:
        frames: number of frames, ``[2, 10000]`` (all segments together, joins counted once).
        method: ``"slerp"`` (per-token spherical, the default), ``"lerp"`` or ``"blend"``
            (``space.std_blend``: lerp rescaled to the geometrically interpolated standard
            deviation, exact at both ends of each segment).
        range: ``(lo, hi)`` global alphas of the first and last frame, ``lo < hi``; values
            outside ``[0, 1]`` extrapolate, e.g. ``(-0.2, 1.2)``.
        seed: the seed of the initial noise (and of an ancestral scheduler's step noise).
        seed_to: a second seed: the initial noise then moves along ``slerp_noise`` from
            ``seed``'s noise (alpha 0) to ``seed_to``'s (alpha 1) together with the prompt.
        sampling: steps, guidance, scheduler, size, frames per UNet batch, ...
            (`SamplingOverrides`; None fields take the model's, the batch size one that
            fits a memory budget).
        keep_first: hold row 0 (BOS / CLS) at the first keyframe's row 0 along the whole
            path, as the reference does; False interpolates it like the other rows.
    """

    frames: int = 16
    method: str = "slerp"
    range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    seed_to: int | None = None
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    keep_first: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise `InvalidArgument` naming the first setting outside its allowed range."""
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not MIN_FRAMES <= self.frames <= MAX_FRAMES:
            raise InvalidArgument("frames", f"must be an integer in [{MIN_FRAMES}, {MAX_FRAMES}], got {self.frames!r}")
        if self.method not in METHODS:
            raise InvalidArgument("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.range, (tuple, list)) or len(self.range) != 2:
            raise InvalidArgument("range", f"expected (lo, hi), got {self.range!r}")
        lo = _check_number(self.range[0], "range")
        hi = _check_number(self.range[1], "range")
        if not lo < hi:
            raise InvalidArgument("range", f"needs lo < hi, got {lo:g}..{hi:g}")
        self.range = (lo, hi)
        V.check_seed(self.seed, "seed")
        if self.seed_to is not None:
            V.check_seed(self.seed_to, "seed_to")
        if not isinstance(self.sampling, SamplingOverrides):
            raise InvalidArgument("sampling", f"expected SamplingOverrides, got {type(self.sampling).__name__}")
        self.sampling.check()


@dataclass
class InterpolationResult:
    """Frames of a path and where each one sits on it.

    Attributes:
        images: ``[N, 3, H, W]`` in [0, 1], float32 on the CPU.
        alphas: ``[N]`` float64 global alphas (position along the whole path).
        segments: ``[N]`` int64 segment index of each frame (keyframe ``s`` -> ``s + 1``).
        local_t: ``[N]`` float64 position within the segment (0 at its first keyframe).
        noise_alphas: ``[N]`` float64 slerp weight toward ``seed_to``'s noise, or None
            without a seed path.
        seed, seed_to: the seeds of the noise path (``seed_to`` None: one fixed seed).
        keyframe_prompts: the keyframes' prompt texts (or descriptions).
        frame_prompts: per frame, the two prompts of its segment (one for a one-keyframe path).
        config: the settings used.
    """

    images: Tensor
    alphas: Tensor
    segments: Tensor
    local_t: Tensor
    noise_alphas: Tensor | None
    seed: int
    seed_to: int | None
    keyframe_prompts: list[str]
    frame_prompts: list[list[str]]
    config: InterpolationConfig

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def frame_records(self) -> list[dict]:
        """One plain dict per frame (index, alpha, segment, t, seeds, noise alpha, prompts) for manifests."""
        records = []
        for i in range(len(self)):
            records.append({
                "index": i,
                "alpha": float(self.alphas[i]),
                "segment": int(self.segments[i]),
                "t": float(self.local_t[i]),
                "seed": self.seed,
                "seed_to": self.seed_to,
                "noise_alpha": None if self.noise_alphas is None else float(self.noise_alphas[i]),
                "prompts": list(self.frame_prompts[i]),
            })
        return records


# --------------------------------------------------------------------------- positions


def plan_alphas(frames: int, range_: tuple[float, float] = (0.0, 1.0), keyframes: int = 2) -> Tensor:
    """Global alphas ``[frames]`` (float64, increasing) of a path through ``keyframes`` keyframes.

    Every join (inner keyframe) inside the range gets a frame of its own, exactly once:
    the range is cut at the joins and the ``frames - 1`` steps are shared among the pieces
    in proportion to their length (largest remainders; at least one step each), each piece
    evenly spaced. So a join is never rendered twice and the spacing is as even as the
    joins allow. The first and last keyframe are frames whenever the range starts or ends
    on them (range ``0..1``); an extrapolating range keeps its even spacing through them.
    With fewer steps than pieces the frames are simply evenly spaced.
    """
    lo, hi = float(range_[0]), float(range_[1])
    if keyframes <= 2:
        return space.alphas(frames, lo, hi, dtype=torch.float64)
    segments = keyframes - 1
    p0, p1 = lo * segments, hi * segments
    cuts = [p0] + [float(k) for k in range(1, segments) if p0 < k < p1] + [p1]
    pieces = len(cuts) - 1
    steps = frames - 1
    if steps < pieces:
        return space.alphas(frames, lo, hi, dtype=torch.float64)
    lengths = [b - a for a, b in zip(cuts[:-1], cuts[1:])]
    total = sum(lengths)
    # One step per piece first, the rest by largest remainder of the proportional share.
    share = [(steps - pieces) * length / total for length in lengths]
    counts = [1 + int(math.floor(s)) for s in share]
    order = sorted(range(pieces), key=lambda j: share[j] - math.floor(share[j]), reverse=True)
    for j in order[: steps - sum(counts)]:
        counts[j] += 1
    positions = [cuts[0]]
    for (a, b), n in zip(zip(cuts[:-1], cuts[1:]), counts):
        piece = space.alphas(n + 1, a, b, dtype=torch.float64)
        positions.extend(piece[1:].tolist())
    out = torch.tensor(positions, dtype=torch.float64) / segments
    out[0], out[-1] = lo, hi  # exact ends, whatever the division rounds to
    return out


def locate(alphas: Tensor, keyframes: int) -> tuple[Tensor, Tensor]:
    """Global alphas ``[N]`` -> ``(segments [N] int64, local t [N] float64)``.

    A frame exactly on an inner keyframe belongs to the segment that starts there
    (``t = 0``); the last keyframe ends the last segment (``t = 1``); alphas outside
    ``[0, 1]`` extend the first or last segment (``t < 0`` or ``t > 1``).
    """
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    if keyframes < 2:
        return torch.zeros_like(a, dtype=torch.int64), torch.zeros_like(a)
    p = a * (keyframes - 1)
    seg = torch.floor(p).clamp(0, keyframes - 2).to(torch.int64)
    return seg, p - seg.to(torch.float64)


# --------------------------------------------------------------------------- the path


def _check_keyframes(model, keyframes: Sequence[PromptEmbedding]) -> list[PromptEmbedding]:
    if isinstance(keyframes, PromptEmbedding):
        keyframes = [keyframes[i] for i in range(len(keyframes))]
    keyframes = list(keyframes)
    if not keyframes:
        raise InvalidArgument("keyframes", "need at least one keyframe embedding")
    out = []
    for k, emb in enumerate(keyframes):
        if not isinstance(emb, PromptEmbedding):
            raise InvalidArgument("keyframes", f"keyframe {k} is a {type(emb).__name__}, expected a PromptEmbedding")
        if len(emb) != 1:
            raise InvalidArgument("keyframes", f"keyframe {k} holds {len(emb)} prompts, expected one each")
        keyframes[0].check_compatible(emb)
        out.append(model.as_embedding(emb))  # names model and embedding when they differ
    return out


class InterpolationPath:
    """Maps global alphas to frame embeddings and initial noise; renders them in batches.

    Built once per path (it encodes nothing: keyframes come as embeddings), then asked for
    any alphas: the planned frames, refinement samples for re-timing, fine samples for
    retrievability.
    """

    def __init__(self, model, keyframes: Sequence[PromptEmbedding], config: InterpolationConfig):
        config.validate()
        self.model = model
        self.config = config
        self.keyframes = _check_keyframes(model, keyframes)
        if len(self.keyframes) == 1 and config.seed_to is None:
            raise InvalidArgument("keyframes", "one keyframe makes a path only with a second seed (seed_to)")
        self.height, self.width = model.resolve_size(config.sampling.height, config.sampling.width)
        seeds = [config.seed] if config.seed_to is None else [config.seed, config.seed_to]
        # [S, C, h, w] float32 on the CPU: slerp in full precision, moved to the device per batch.
        self.noise = model.initial_noise(seeds, self.height, self.width).float().cpu()

    @property
    def n_keyframes(self) -> int:
        return len(self.keyframes)

    def plan(self, frames: int | None = None) -> Tensor:
        """The default frame alphas ``[frames]`` (see `plan_alphas`)."""
        return plan_alphas(frames or self.config.frames, self.config.range, self.n_keyframes)

    # -- embeddings and noise ------------------------------------------------------------

    def _mix(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """``a, b [R, L, D]``, ``t [T]`` -> ``[T, R, L, D]`` with exact endpoints at t = 0 and 1."""
        keep_first = self.config.keep_first
        if self.config.method == "slerp":
            out = space.slerp(a, b, t, keep_first=keep_first)
        elif self.config.method == "lerp":
            out = space.lerp(a, b, t, keep_first=keep_first)
        else:
            # "interpolate" rather than the reference's geometric mean: that one rescales even
            # t = 0, so consecutive segments would not meet at their shared keyframe.
            out = space.std_blend(a, b, t, std="interpolate", keep_first=keep_first)
        # Slerp goes through norms and unit vectors: make keyframe frames bit-equal to the keyframe.
        tt = t.reshape(-1, *([1] * a.dim())).to(out.device)
        out = torch.where(tt == 0, a.to(out.dtype), out)
        if not keep_first:
            out = torch.where(tt == 1, b.to(out.dtype), out)
        else:
            rows = torch.where(tt == 1, b[..., 1:, :].to(out.dtype), out[..., 1:, :])
            out = torch.cat([out[..., :1, :], rows], dim=-2)
        return out

    def embeddings(self, alphas: Tensor) -> PromptEmbedding:
        """Frame embeddings ``[N]`` for global alphas ``[N]``: one batched ``space`` call per segment."""
        alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
        first = self.keyframes[0]
        n = alphas.shape[0]
        if self.n_keyframes == 1:
            return first.with_tensors(first.cond.expand(n, -1, -1), first.uncond.expand(n, -1, -1),
                                      prompts=[first.prompts[0]] * n)
        seg, t = locate(alphas, self.n_keyframes)
        L, D = first.shape
        states = torch.empty(n, 2, L, D, dtype=first.cond.dtype, device=first.cond.device)
        for s in torch.unique(seg).tolist():
            idx = (seg == s).nonzero().reshape(-1)
            a, b = self.keyframes[s], self.keyframes[s + 1]
            # cond and uncond together: [2, L, D] -> [T, 2, L, D]
            pa = torch.cat([a.cond, a.uncond])
            pb = torch.cat([b.cond, b.uncond])
            states[idx.to(states.device)] = self._mix(pa, pb, t[idx]).to(states.dtype)
        if self.config.keep_first:
            # One row 0 for the whole path: segments then meet continuously at their joins.
            states[:, :, 0, :] = torch.stack([first.cond[0, 0], first.uncond[0, 0]])
        prompts = [self._label(int(s), float(x)) for s, x in zip(seg, t)]
        mask = first.mask.expand(n, -1)
        return PromptEmbedding(states[:, 0], states[:, 1], mask, first.model_id, prompts,
                               [first.negative[0]] * n)

    def _label(self, s: int, t: float) -> str:
        a, b = self.keyframes[s].prompts[0], self.keyframes[s + 1].prompts[0]
        return f"{self.config.method}({a!r}, {b!r}, {t:.4f})"

    def noise_alphas(self, alphas: Tensor) -> Tensor | None:
        """The noise path's weights ``[N]`` (equal to the global alphas), None without ``seed_to``."""
        if self.config.seed_to is None:
            return None
        return torch.as_tensor(alphas, dtype=torch.float64).reshape(-1).clone()

    def noises(self, alphas: Tensor) -> Tensor:
        """Initial latents ``[N, C, h, w]`` (float32, CPU) for global alphas ``[N]``."""
        alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
        n = alphas.shape[0]
        if self.config.seed_to is None:
            return self.noise[:1].expand(n, -1, -1, -1)
        a, b = self.noise[0], self.noise[1]
        t = alphas.to(torch.float32)
        out = space.slerp_noise(a, b, t)  # [N, C, h, w]
        tt = t.reshape(-1, 1, 1, 1)
        return torch.where(tt == 0, a, torch.where(tt == 1, b, out))

    def frame_prompts(self, alphas: Tensor) -> list[list[str]]:
        if self.n_keyframes == 1:
            return [[self.keyframes[0].prompts[0]] for _ in range(len(alphas))]
        seg, _ = locate(alphas, self.n_keyframes)
        return [[self.keyframes[s].prompts[0], self.keyframes[s + 1].prompts[0]] for s in seg.tolist()]

    # -- rendering -----------------------------------------------------------------------

    def render(self, alphas: Tensor, callback: StepCallback | None = None, cancel: CancelCheck | None = None) -> Tensor:
        """Images ``[N, 3, H, W]`` (float32, CPU) of the frames at global alphas ``[N]``."""
        alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
        parts = []
        for start in range(0, alphas.shape[0], FRAMES_PER_BUILD):
            block = alphas[start:start + FRAMES_PER_BUILD]
            parts.append(render_frames(self.model, self.embeddings(block), self.noises(block), self.config,
                                       callback=callback, cancel=cancel))
        return torch.cat(parts)

    def result(self, alphas: Tensor, images: Tensor) -> InterpolationResult:
        """Wrap rendered frames and their alphas in an `InterpolationResult`."""
        alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
        seg, t = locate(alphas, self.n_keyframes)
        if self.n_keyframes == 1:
            t = torch.zeros_like(alphas)
        return InterpolationResult(
            images=images, alphas=alphas, segments=seg, local_t=t, noise_alphas=self.noise_alphas(alphas),
            seed=self.config.seed, seed_to=self.config.seed_to,
            keyframe_prompts=[k.prompts[0] for k in self.keyframes],
            frame_prompts=self.frame_prompts(alphas), config=self.config,
        )


def render_frames(
    model,
    embeddings: PromptEmbedding,
    noises: Tensor,
    config: InterpolationConfig,
    *,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
    start_at: int = 0,
) -> Tensor:
    """Render frame ``i`` from ``embeddings[i]`` and ``noises[i]``, ``batch_size`` frames per UNet call.

    Args:
        embeddings: ``N`` frame embeddings (or one, shared by all frames).
        noises: ``[N, C, h, w]`` unit-variance initial latents (or ``[1, ...]``, shared).
        config: steps / guidance / scheduler / size / batch size (and the seed, which
            drives an ancestral scheduler's step noise for every frame).
        start_at: the noises are the latents after this many steps, not initial noise
            (`Model.sample`'s ``start_at``).

    Returns:
        ``[N, 3, H, W]`` float32 images in [0, 1] on the CPU; each batch is decoded as soon
        as it is sampled, so only one batch of latents is alive at a time.
    """
    model_emb = model.as_embedding(embeddings)
    noises = noises if noises.dim() == 4 else noises[None]
    n = max(len(model_emb), noises.shape[0])
    if len(model_emb) not in (1, n) or noises.shape[0] not in (1, n):
        raise InvalidArgument("noises", f"expected {len(model_emb)} noise tensors (one per embedding), got {noises.shape[0]}")
    run = model.resolve(config.sampling)
    batch = run.batch_size
    n_calls = -(-n // batch)
    out = []
    with torch.no_grad():
        for k, start in enumerate(range(0, n, batch)):
            stop = min(n, start + batch)
            emb = model_emb if len(model_emb) == 1 else model_emb[start:stop]
            lat = noises if noises.shape[0] == 1 else noises[start:stop]
            latents = model.sample(
                emb, seeds=[config.seed] * lat.shape[0], latents=lat, settings=run, pairing="zip",
                callback=_renumbered(callback, k, n_calls), cancel=cancel, start_at=start_at,
            )
            out.append(model.decode(latents, batch_size=batch).float().cpu())
    return torch.cat(out)


def _renumbered(callback: StepCallback | None, call: int, n_calls: int) -> StepCallback | None:
    """Call `call`'s step callback renumbered over `n_calls` equal `Model.sample` calls."""
    if callback is None:
        return None
    return lambda step, total, latents: callback(call * total + step, n_calls * total, latents)


def interpolate(
    model,
    keyframes: Sequence[PromptEmbedding],
    config: InterpolationConfig | None = None,
    callback: StepCallback | None = None,
    cancel: CancelCheck | None = None,
) -> InterpolationResult:
    """Render ``config.frames`` frames along the path through ``keyframes`` (and the seed path).

    Args:
        model: a loaded `Model`.
        keyframes: ``K >= 1`` embeddings of one prompt each, from ``model`` (a one-keyframe
            path needs ``config.seed_to``: only the noise moves).
        config: `InterpolationConfig`.
        callback: ``callback(step, total, latents)`` after each denoising step of each batch.
        cancel: checked between steps; True raises `noise2art.Cancelled`.

    Returns:
        `InterpolationResult` with ``images [N, 3, H, W]`` and each frame's alphas.

    Example::

        a, b = model.encode(["a red ball"]), model.encode(["a blue cube"])
        res = interpolate(model, [a, b], InterpolationConfig(frames=24, range=(-0.2, 1.2)))
    """
    config = config or InterpolationConfig()
    path = InterpolationPath(model, keyframes, config)
    alphas = path.plan()
    return path.result(alphas, path.render(alphas, callback=callback, cancel=cancel))

