"""The infinite index: result streams over images that do not exist yet (docs/index.md).

Prompting is retrieval on an infinite index: every query has results and every seed is
another one. A **stream** is a query and a rule that gives result ``idx`` its noise; a
**page** is ``page_size`` consecutive results (pages numbered from 0). Everything about a
result follows from the stream and ``idx``, so everyone gets the same pages, pages can be
shared and cached, and no two results of a stream share a seed.

Kinds of stream:

- ``query``: a prompt (or embedding); result ``idx`` renders on seed ``seed_of(idx)``.
  With ``seed_rule="shared"`` result k of every query uses the same noise (compare
  queries side by side).
- ``like``: around one image: its noise slerped a little toward fresh noise
  (``noise_strength``) and its embedding moved to a fixed cosine similarity
  (``similarity``) toward a random direction, both drawn from ``seed_of(idx)``.
- ``between``: positions between two images in embedding and noise. The path is
  re-timed to constant image-space speed (a coarse render measures it, as
  `methods.retime` does) and result ``idx`` sits at arc-length fraction ``u_idx`` of the
  van der Corput sequence (1/2, 1/4, 3/4, 1/8, ...), so each new page fills the largest
  remaining gaps. The path moves embedding and noise together, or one after the other
  (``PATH_SHAPES``): the coarse render measures each shape and the stream takes the one
  whose largest step is the smallest share of its whole change, since a picture that
  flips in one step of t stays a jump however finely the results are placed. A jump that
  is left (a step that keeps its size when bisected again and again) is **bridged**: the
  latents of its two sides after most of the denoising steps are slerped and the last
  steps finish them, a morph from one picture to the other in the spirit of Wang &
  Golland's interpolation of noised latents ("Interpolating between Images with Diffusion
  Models", 2023). Results inside a bridge record it.
- ``beyond``: the same past the second image, ``t`` in ``(1, t_end]``, where ``t_end`` is
  the last position before the path jumps (`methods.retrievability.speed_profile`).

A stream may be **directed** toward a concept: the embedding moves along the concept's
direction (the mean over prompt templates of "query + concept" minus "query") with the
largest weight that keeps its similarity to the query's own embedding at or above
``min_similarity``. Every result of a directed stream records the concept and weight.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from noise2art import space
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, StepCallback
from noise2art.engine.settings import SampleSettings, SamplingOverrides
from noise2art.engine.validation import MAX_SEED
from noise2art.errors import InvalidArgument

if TYPE_CHECKING:
    from noise2art.methods.interpolate import InterpolationPath

KINDS = ("query", "like", "between", "beyond")
SEED_RULES = ("derived", "shared")
PATH_SHAPES = ("together", "embedding first", "noise first")
PAGE_SIZE = 24
MAX_PAGE_SIZE = 100
MAX_PAGE = 10**9
SEED_BITS = 63

# Templates a concept direction is averaged over: (with the concept, without it).
CONCEPT_TEMPLATES = (
    ("{q}, {c}", "{q}"),
    ("{q} with {c}", "{q}"),
    ("{c}, {q}", "{q}"),
    ("a picture of {q}, {c}", "a picture of {q}"),
    ("{q}, {c}, detailed", "{q}, detailed"),
)


# --------------------------------------------------------------------------- seeds


def _mix(x: int, key: int) -> int:
    """A bijection of [0, 2^63) keyed by `key`: distinct inputs never share an output.

    Multiplication by an odd constant, addition and xor-shifts are each invertible modulo
    2^63, so their composition is too (a small keyed permutation, not a cipher).
    """
    mask = (1 << SEED_BITS) - 1
    a = (key | 1) & mask
    b = (key >> 17) & mask
    x = (x * 0x5851F42D4C957F2D + b) & mask
    x ^= x >> 29
    x = (x * a) & mask
    x ^= x >> 31
    x = (x * 0x2545F4914F6CDD1D) & mask
    x ^= x >> 27
    return x


def stream_key(description: dict) -> int:
    """A 64-bit key from a stream's canonical description."""
    text = json.dumps(description, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


SHARED_KEY = stream_key({"rule": "shared"})


def path_alphas(shape: str, t: Tensor) -> tuple[Tensor, Tensor]:
    """Where a path of `shape` is at positions `t [N]` in [0, 1]: `(embedding alphas [N], noise
    alphas [N])`. "together" moves both at once; "embedding first" moves the embedding over
    the first half and the noise over the second; "noise first" the other way round."""
    if shape == "together":
        return t, t
    first, second = (2 * t).clamp(0, 1), (2 * t - 1).clamp(0, 1)
    if shape == "embedding first":
        return first, second
    if shape == "noise first":
        return second, first
    raise InvalidArgument("shapes", f"must be one of {', '.join(PATH_SHAPES)}, got {shape!r}")


def van_der_corput(n: int, base: int = 2) -> float:
    """The n-th point (n >= 1) of the van der Corput sequence in (0, 1): 1/2, 1/4, 3/4, 1/8, ..."""
    q, denom = 0.0, 1.0
    while n:
        n, r = divmod(n, base)
        denom *= base
        q += r / denom
    return q


def page_indices(page: int, page_size: int = PAGE_SIZE) -> range:
    """The result indices of page `page` (from 0)."""
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page <= MAX_PAGE:
        raise InvalidArgument("page", f"must be an integer in [0, {MAX_PAGE}], got {page!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be an integer in [1, {MAX_PAGE_SIZE}], got {page_size!r}")
    return range(page * page_size, (page + 1) * page_size)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Anchor:
    """An image a stream starts from: its embedding (batch 1) and its seed."""

    embedding: PromptEmbedding
    seed: int


@dataclass(frozen=True)
class Direction:
    """Steering toward a concept: `embedding + weight * direction` (rows 1..)."""

    concept: str
    weight: float
    direction: Tensor  # [L, D] for cond; the uncond states stay

    def record(self) -> dict:
        return {"concept": self.concept, "weight": self.weight}


@dataclass
class StreamConfig:
    """How a stream's results are drawn.

    Attributes:
        seed_rule: "derived" (seeds from the stream and idx) or "shared" (result k of
            every query has the same seed).
        similarity: `like`: cosine similarity of each result's embedding to the image's.
        noise_strength: `like`: slerp weight from the image's noise toward fresh noise.
        coarse: `between` / `beyond`: positions rendered once to measure the path.
        refine: `between` / `beyond`: extra renders that bisect the path's largest steps
            (`methods.retime.refine_gaps`) before its arc length is taken.
        shapes: `between`: the path shapes measured (`PATH_SHAPES`; `path_alphas`); the
            one whose largest coarse step is the smallest share of its change is taken.
        bridges: `between`: the largest steps probed for a jump, each bridged if it is one
            (0: results stay on the path, jumps and all).
        probes: `between`: bisections that tell a jump (one half keeps the step) from a
            fast but smooth stretch, per step probed.
        beyond_max: `beyond`: the furthest t looked at.
        jump_factor: `beyond`: a step faster than this times the median speed is a jump.
        sampling: sampling settings of every result (`SamplingOverrides`).
    """

    seed_rule: str = "derived"
    similarity: float = 0.95
    noise_strength: float = 0.3
    coarse: int = 9
    refine: int = 16
    shapes: tuple[str, ...] = PATH_SHAPES
    bridges: int = 3
    probes: int = 4
    beyond_max: float = 2.0
    jump_factor: float = 3.0
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)

    def check(self) -> StreamConfig:
        if self.seed_rule not in SEED_RULES:
            raise InvalidArgument("seed_rule", f"must be one of {', '.join(SEED_RULES)}, got {self.seed_rule!r}")
        for name, lo, hi in (("similarity", 0.0, 1.0), ("noise_strength", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise InvalidArgument(name, f"must be a number in [{lo:g}, {hi:g}], got {v!r}")
        if isinstance(self.coarse, bool) or not isinstance(self.coarse, int) or not 3 <= self.coarse <= 64:
            raise InvalidArgument("coarse", f"must be an integer in [3, 64], got {self.coarse!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or not 0 <= self.refine <= 256:
            raise InvalidArgument("refine", f"must be an integer in [0, 256], got {self.refine!r}")
        if (isinstance(self.shapes, str) or not self.shapes or len(set(self.shapes)) != len(self.shapes)
                or any(shape not in PATH_SHAPES for shape in self.shapes)):
            raise InvalidArgument("shapes", f"must be distinct names among {', '.join(PATH_SHAPES)}, got {self.shapes!r}")
        self.shapes = tuple(self.shapes)
        for name, hi in (("bridges", 8), ("probes", 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise InvalidArgument(name, f"must be an integer in [0, {hi}], got {v!r}")
        if not (isinstance(self.beyond_max, (int, float)) and 1.0 < self.beyond_max <= 10.0):
            raise InvalidArgument("beyond_max", f"must be a number in (1, 10], got {self.beyond_max!r}")
        if not (isinstance(self.jump_factor, (int, float)) and self.jump_factor > 1.0):
            raise InvalidArgument("jump_factor", f"must be a number > 1, got {self.jump_factor!r}")
        self.sampling.check()
        return self


@dataclass
class Result:
    """One result of a stream, before it is rendered: what fixes it.

    Attributes:
        idx: its index in the stream.
        seed: the seed of its noise (and of an ancestral scheduler's step noise).
        embedding: batch 1.
        noise: `[1, C, h, w]` initial latents when they are not `seed`'s own noise (like,
            between, beyond), else None; with `start_at` > 0, the latents after that step.
        record: JSON-ready facts for its metadata: kind, stream id, position, steering.
        start_at: denoising steps already taken in `noise` (a bridged between result).
    """

    idx: int
    seed: int
    embedding: PromptEmbedding
    noise: Tensor | None
    record: dict
    start_at: int = 0


@dataclass(frozen=True)
class Bridge:
    """A jump of a between path, crossed by a morph.

    The picture flips between `lo` and `hi` (a narrow interval of t). A position t inside
    it renders from the slerp, at `(t - lo) / (hi - lo)`, of the latents of the path's
    images at `lo` and `hi` after `start_at` steps, finished under the embedding at t.
    Its ends are those images again (exactly, on a scheduler that resumes exactly).
    """

    lo: float
    hi: float
    start_at: int
    latents: Tensor  # [2, C, h, w] float32 CPU: after `start_at` steps at lo and at hi

    def covers(self, ts: Tensor) -> Tensor:
        return (ts > self.lo) & (ts < self.hi)

    def latents_at(self, ts: Tensor) -> Tensor:
        """`[N, C, h, w]` mixed latents at positions `ts [N]` inside the bridge."""
        s = ((ts - self.lo) / (self.hi - self.lo)).clamp(0, 1).to(torch.float32)
        return space.slerp_noise(self.latents[0], self.latents[1], s)

    def record(self) -> dict:
        return {"from": self.lo, "to": self.hi, "step": self.start_at}


@dataclass
class MeasuredPath:
    """A between / beyond path after its measurement: where results go on it.

    Attributes:
        path: the `InterpolationPath` of the two images.
        shape: the path shape taken (`PATH_SHAPES`).
        alphas: `[M]` every t rendered to measure it, sorted.
        arc: `[M]` cumulative length at `alphas` (angles of world-CLIP features; 0 first).
        end: the last t (1 for between; for beyond, the last t before the path jumps).
        bridges: the jumps crossed by a morph (`Bridge`).
    """

    path: InterpolationPath
    shape: str
    alphas: Tensor
    arc: Tensor
    end: float
    bridges: list[Bridge] = field(default_factory=list)


# --------------------------------------------------------------------------- directions


def concept_direction(model, query: PromptEmbedding | str, concept: str) -> Tensor:
    """The concept's direction `[L, D]` for this query: the mean over `CONCEPT_TEMPLATES` of
    `E(template with concept) - E(template without)`, rows 1.. (row 0 stays)."""
    if not isinstance(concept, str) or not concept.strip():
        raise InvalidArgument("toward", "give a concept, e.g. 'snow' or 'oil painting'")
    text = query if isinstance(query, str) else query.prompts[0]
    if not text.strip():
        raise InvalidArgument("toward", "steering needs the query's text (an embedding without a prompt has none)")
    with_c = [w.format(q=text, c=concept.strip()) for w, _ in CONCEPT_TEMPLATES]
    without = [wo.format(q=text) for _, wo in CONCEPT_TEMPLATES]
    a = model.encode(with_c).cond.float()
    b = model.encode(without).cond.float()
    d = (a - b).mean(dim=0)  # [L, D]
    d[0] = 0.0
    return d


def steer(embedding: PromptEmbedding, direction: Tensor, weight: float) -> PromptEmbedding:
    """`embedding` (batch 1) moved by `weight * direction` on its cond states."""
    cond = embedding.cond.float() + weight * direction.to(embedding.cond.device)[None]
    return embedding.with_tensors(cond.to(embedding.cond.dtype), embedding.uncond)


def directed_weight(embedding: PromptEmbedding, direction: Tensor, min_similarity: float,
                    max_weight: float = 4.0, iterations: int = 30) -> float:
    """The largest weight in [0, max_weight] whose steered embedding keeps similarity
    >= `min_similarity` to `embedding` (bisection: similarity falls as the weight grows)."""
    if not 0.0 < min_similarity < 1.0:
        raise InvalidArgument("min_similarity", f"must be in (0, 1), got {min_similarity!r}")
    base = embedding.cond[0].float()

    def sim(w: float) -> float:
        return float(space.similarity(base, base + w * direction.to(base.device)))

    if sim(max_weight) >= min_similarity:
        return max_weight
    lo, hi = 0.0, max_weight
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if sim(mid) >= min_similarity:
            lo = mid
        else:
            hi = mid
    return lo


def direct(model, query: PromptEmbedding, concept: str, min_similarity: float = 0.9,
           weight: float | None = None) -> Direction:
    """The `Direction` toward `concept`, its weight chosen by `directed_weight` unless given."""
    d = concept_direction(model, query, concept)
    if weight is None:
        weight = directed_weight(query, d, min_similarity)
    elif not (isinstance(weight, (int, float)) and math.isfinite(weight)):
        raise InvalidArgument("weight", f"must be a finite number, got {weight!r}")
    return Direction(concept.strip(), float(weight), d)


# --------------------------------------------------------------------------- streams


class Stream:
    """Results of one query, any index on demand.

    Build with `Stream.query`, `Stream.like`, `Stream.between` or `Stream.beyond`. `id` names
    the stream (the same inputs give the same id); `results(idxs)` says what each result
    is; `render(idxs)` makes their images.
    """

    def __init__(self, model, kind: str, anchors: Sequence[Anchor], config: StreamConfig,
                 direction: Direction | None = None):
        if kind not in KINDS:
            raise InvalidArgument("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        self.model, self.kind, self.anchors, self.config = model, kind, list(anchors), config.check()
        self.direction = direction
        self.settings: SampleSettings = model.resolve(config.sampling)
        description = {
            "model": model.model_id, "kind": kind, "rule": config.seed_rule,
            "anchors": [(a.embedding.hash(), a.embedding.negative[0], a.seed) for a in self.anchors],
            "settings": self.settings.as_overrides().to_dict() | {"batch_size": None},
            "direction": direction.record() if direction else None,
            "like": (config.similarity, config.noise_strength) if kind == "like" else None,
            "path": (config.coarse, config.refine, config.beyond_max, config.jump_factor)
            if kind in ("between", "beyond") else None,
        }
        if kind == "between":
            description["shapes"] = list(config.shapes)
            description["bridges"] = (config.bridges, config.probes)
        self.key = stream_key(description)
        self.id = f"{self.key:016x}"
        self._path: MeasuredPath | None = None  # between / beyond, once measured

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def query(cls, model, query: PromptEmbedding | str, config: StreamConfig | None = None, *, negative: str = "",
              toward: str | None = None, min_similarity: float = 0.9, weight: float | None = None) -> Stream:
        emb = model.encode([query], negative) if isinstance(query, str) else model.as_embedding(query)
        if len(emb) != 1:
            raise InvalidArgument("query", f"one query at a time, got a batch of {len(emb)}")
        direction = direct(model, emb, toward, min_similarity, weight) if toward else None
        return cls(model, "query", [Anchor(emb, 0)], config or StreamConfig(), direction)

    @classmethod
    def like(cls, model, anchor: Anchor, config: StreamConfig | None = None) -> Stream:
        return cls(model, "like", [_checked(model, anchor)], config or StreamConfig())

    @classmethod
    def between(cls, model, a: Anchor, b: Anchor, config: StreamConfig | None = None) -> Stream:
        return cls(model, "between", [_checked(model, a), _checked(model, b)], config or StreamConfig())

    @classmethod
    def beyond(cls, model, a: Anchor, b: Anchor, config: StreamConfig | None = None) -> Stream:
        return cls(model, "beyond", [_checked(model, a), _checked(model, b)], config or StreamConfig())

    # -- seeds -----------------------------------------------------------------------------

    def seed_of(self, idx: int) -> int:
        """Result `idx`'s seed: a keyed bijection of idx, so no two results share one."""
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < MAX_SEED:
            raise InvalidArgument("idx", f"must be an integer >= 0, got {idx!r}")
        return _mix(idx, SHARED_KEY if self.config.seed_rule == "shared" else self.key)

    # -- what each result is ---------------------------------------------------------------

    def results(self, idxs: Sequence[int], callback: StepCallback | None = None,
                cancel: CancelCheck | None = None) -> list[Result]:
        """What results `idxs` are (a between / beyond stream first measures its path: one
        coarse render, made once)."""
        idxs = [int(i) for i in idxs]
        if self.kind == "query":
            return [self._query_result(i) for i in idxs]
        if self.kind == "like":
            return [self._like_result(i) for i in idxs]
        self._measure(callback, cancel)
        return [self._path_result(i) for i in idxs]

    def _record(self, idx: int, **extra) -> dict:
        out = {"stream": self.id, "kind": self.kind, "idx": idx, **extra}
        if self.direction is not None:
            out["toward"] = self.direction.record()
        return out

    def _query_result(self, idx: int) -> Result:
        emb = self.anchors[0].embedding
        if self.direction is not None:
            emb = steer(emb, self.direction.direction, self.direction.weight)
        return Result(idx, self.seed_of(idx), emb, None, self._record(idx))

    def _like_result(self, idx: int) -> Result:
        anchor = self.anchors[0]
        seed = self.seed_of(idx)
        gen = torch.Generator().manual_seed(seed)
        e = anchor.embedding
        # A random direction per row with the embedding's own row norms; slerp toward it to
        # exactly the asked similarity.
        rows = torch.randn(e.cond.shape[1:], generator=gen, dtype=torch.float32)
        cond0 = e.cond[0].float().cpu()
        rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12) * cond0.norm(dim=-1, keepdim=True)
        moved = space.slerp_to_similarity(cond0, rows, self.config.similarity).embedding
        emb = e.with_tensors(moved[None].to(e.cond.device, e.cond.dtype), e.uncond)
        own = self.model.initial_noise([anchor.seed], self.settings.height, self.settings.width).float().cpu()
        fresh = self.model.initial_noise([seed], self.settings.height, self.settings.width).float().cpu()
        noise = space.slerp_noise(own, fresh, float(self.config.noise_strength))
        return Result(idx, seed, emb, noise, self._record(idx, similarity=self.config.similarity,
                                                          noise_strength=self.config.noise_strength,
                                                          anchor_seed=anchor.seed))

    # -- between / beyond ------------------------------------------------------------------

    def _span(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.kind == "between" else (1.0, float(self.config.beyond_max))

    def _measure(self, callback, cancel) -> None:
        """Render the path at `coarse` positions once (per shape, for `between`), refine it
        where it changes most, bridge the jumps left (`between`), and keep its arc length."""
        if self._path is not None:
            return
        from noise2art.methods.interpolate import InterpolationConfig, InterpolationPath
        from noise2art.methods.retime import model_distance, model_length, refine_gaps
        from noise2art.methods.retrievability import speed_profile

        a, b = self.anchors
        cfg = InterpolationConfig(frames=self.config.coarse, seed=a.seed, seed_to=b.seed,
                                  range=self._span(), sampling=self.settings.as_overrides())
        lo, hi = self._span()
        alphas = torch.linspace(lo, hi, self.config.coarse, dtype=torch.float64)
        distance, length = model_distance(self.model), model_length(self.model)

        def measure(x: Tensor, y: Tensor) -> Tensor:
            return length(distance(x, y).double().clamp_min(0))

        shapes = self.config.shapes if self.kind == "between" else ("together",)

        def progress_of(k: int) -> StepCallback | None:
            # One bar over every shape's render: shape k covers the k-th share of the steps.
            if callback is None:
                return None
            return lambda step, total, latents: callback(k * total + step, len(shapes) * total, latents)

        path = InterpolationPath(self.model, [a.embedding, b.embedding], cfg)
        measured = []
        for k, shape in enumerate(shapes):
            trial = MeasuredPath(path, shape, alphas, alphas, hi)  # arc and end are set once chosen
            images = self._render_points(trial, alphas, progress_of(k), cancel)
            # Distances (`1 - cos`, as retrievability reads jumps) and the lengths they stand for.
            distances = distance(images[:-1], images[1:]).double().clamp_min(0)
            steps = length(distances)
            share = float(steps.max() / steps.sum()) if float(steps.sum()) > 0 else 0.0
            measured.append((share, trial, images, distances, steps))
        # The shape whose largest step is the smallest share of its length (the first on ties).
        _, measured_path, images, distances, steps = min(measured, key=lambda m: m[0])
        end = hi
        if self.kind == "beyond":
            profile = speed_profile(alphas, distances, self.config.jump_factor)
            if profile.jumps:
                # The last position before the first jump: past it the path is another picture.
                first = profile.jumps[0]
                end = float(alphas[first])
                alphas, steps = alphas[:first + 1], steps[:first]
        if end <= lo or len(alphas) < 2:
            raise InvalidArgument("beyond", "the path jumps right past the second image: there is nothing beyond it")
        xs, ims, gaps = alphas.tolist(), list(images[:len(alphas)].unbind(0)), steps.tolist()

        def render(ts: Tensor) -> Tensor:  # the path as measured so far, bridges included
            return self._render_points(measured_path, ts, None, cancel)

        n_out, per_round = 2 * self.config.coarse, max(1, self.settings.batch_size)
        if self.config.refine:
            # Bisect where the picture changes most, as constant-speed re-timing does, so that
            # equal arc-length fractions are equal image-space steps inside fast stretches too.
            refine_gaps(xs, ims, gaps, render, measure, n_out, self.config.refine, per_round, 1e-4)
        if self.kind == "between" and self.config.bridges:
            self._bridge_jumps(measured_path, xs, ims, gaps, render, measure)
            if measured_path.bridges and self.config.refine:
                # Measure inside the bridges as finely as along the rest of the path.
                refine_gaps(xs, ims, gaps, render, measure, n_out, self.config.refine // 2, per_round, 1e-4)
        measured_path.alphas = torch.tensor(xs, dtype=torch.float64)
        measured_path.arc = torch.cat([torch.zeros(1, dtype=torch.float64),
                                       torch.tensor(gaps, dtype=torch.float64).cumsum(0)])
        measured_path.end = end
        self._path = measured_path

    def _bridge_jumps(self, measured: MeasuredPath, xs: list[float], ims: list[Tensor], gaps: list[float],
                      render, measure) -> None:
        """Probe the largest steps (`config.bridges` of them) and bridge those that are jumps.
        Updates the samples in place: the probes and the bridges' own renders.

        A step is looked at when it holds more than half an output step of a page of
        `2 * coarse` results. Each probe bisects it and follows the half holding more of the
        change: a smooth stretch spreads out (each half holds about half), a jump, or a
        cluster of them, does not. What still holds more than half an output step after
        the probes is bridged. The steps are probed together, one batch per bisection.
        """
        from noise2art.methods.retime import split_gap

        total = sum(gaps)
        threshold = total / (2 * (2 * self.config.coarse - 1))
        order = sorted(range(len(gaps)), key=lambda j: gaps[j], reverse=True)[:self.config.bridges]
        spans = [(xs[i], xs[i + 1]) for i in order if gaps[i] > threshold]

        def gap_at(lo: float) -> int:
            return bisect.bisect_left(xs, lo)

        for _ in range(self.config.probes):
            wide = [k for k, (lo, hi) in enumerate(spans) if hi - lo > 1e-4]  # a sliver stays as it is
            if not wide:
                break
            mids = torch.tensor([0.5 * sum(spans[k]) for k in wide], dtype=torch.float64)
            new = render(mids)
            left = measure(torch.stack([ims[gap_at(spans[k][0])] for k in wide]), new).tolist()
            right = measure(new, torch.stack([ims[gap_at(spans[k][1])] for k in wide])).tolist()
            for j, k in enumerate(wide):
                (lo, hi), mid = spans[k], float(mids[j])
                i = gap_at(lo)
                split_gap(xs, ims, gaps, i, [mid], [new[j]], [left[j], right[j]])
                spans[k] = (mid, hi) if right[j] > left[j] else (lo, mid)
        jumps = [(lo, hi) for lo, hi in spans if gaps[gap_at(lo)] > threshold]  # the others spread out
        if not jumps:
            return
        steps = self.settings.steps
        start_at = steps - max(1, round(steps / 10))  # mix late: the pictures are all but drawn
        ends = torch.tensor([t for span in jumps for t in span], dtype=torch.float64)
        emb, noise = self._unbridged_point(measured, ends)
        with torch.no_grad():
            latents = self.model.sample(emb, [self.anchors[0].seed] * len(ends),
                                        latents=noise.to(self.model.device, self.model.dtype),
                                        settings=self.settings, pairing="zip", stop_after=start_at).float().cpu()
        for k, (lo, hi) in enumerate(jumps):
            measured.bridges.append(Bridge(lo, hi, start_at, latents[2 * k:2 * k + 2]))
        measured.bridges.sort(key=lambda bridge: bridge.lo)
        # Each bridge's own course: three renders inside it; its ends are the samples at lo and hi.
        fractions = (0.25, 0.5, 0.75)
        inside = torch.tensor([lo + f * (hi - lo) for lo, hi in jumps for f in fractions], dtype=torch.float64)
        new = render(inside)
        for k, (lo, hi) in enumerate(jumps):
            i = gap_at(lo)
            part = new[3 * k:3 * k + 3]
            seq = torch.stack([ims[i], *part.unbind(0), ims[i + 1]])
            split_gap(xs, ims, gaps, i, inside[3 * k:3 * k + 3].tolist(), list(part.unbind(0)),
                      measure(seq[:-1], seq[1:]).tolist())

    def _unbridged_point(self, measured: MeasuredPath, ts: Tensor) -> tuple[PromptEmbedding, Tensor]:
        along_embedding, along_noise = path_alphas(measured.shape, ts)
        return measured.path.embeddings(along_embedding), measured.path.noises(along_noise)

    def _points(self, measured: MeasuredPath, ts: Tensor) -> tuple[PromptEmbedding, Tensor, list[int]]:
        """Embeddings `[N]`, latents `[N, C, h, w]` and the steps already taken in them
        (0: initial noise; a bridge's `start_at` inside it) at positions `ts [N]`."""
        emb, latents = self._unbridged_point(measured, ts)
        starts = [0] * len(ts)
        for bridge in measured.bridges:
            inside = bridge.covers(ts)
            if bool(inside.any()):
                latents = latents.clone()
                latents[inside] = bridge.latents_at(ts[inside])
                for j in inside.nonzero().reshape(-1).tolist():
                    starts[j] = bridge.start_at
        return emb, latents, starts

    def _render_points(self, measured: MeasuredPath, ts: Tensor, callback, cancel) -> Tensor:
        """Images `[N, 3, H, W]` at positions `ts [N]` of a path (bridges included)."""
        from noise2art.methods.interpolate import render_frames

        emb, latents, starts = self._points(measured, ts)
        out = torch.empty(len(ts), 3, self.settings.height, self.settings.width)
        cfg = measured.path.config
        for start in sorted(set(starts)):
            idx = [j for j, k in enumerate(starts) if k == start]
            part = emb if len(idx) == len(ts) else PromptEmbedding.cat([emb[j] for j in idx])
            out[idx] = render_frames(self.model, part, latents[idx], cfg, callback=callback, cancel=cancel,
                                     start_at=start)
        return out

    @property
    def measured(self) -> MeasuredPath:
        """A between / beyond stream's measured path (measured first if need be)."""
        if self.kind not in ("between", "beyond"):
            raise InvalidArgument("kind", f"a {self.kind} stream has no path")
        self._measure(None, None)
        return self._path

    def path_point(self, ts: Tensor) -> tuple[PromptEmbedding, Tensor]:
        """The embeddings `[N]` and initial noise `[N, C, h, w]` at positions `ts [N]` of a
        measured between / beyond path: its shape applied, its bridges not (`render_at`)."""
        return self._unbridged_point(self.measured, ts)

    def render_at(self, ts: Tensor, callback: StepCallback | None = None,
                  cancel: CancelCheck | None = None) -> Tensor:
        """Images `[N, 3, H, W]` at positions `ts [N]` of the measured path, as its results
        there are drawn (bridges included)."""
        return self._render_points(self.measured, torch.as_tensor(ts, dtype=torch.float64), callback, cancel)

    def position(self, idx: int) -> float:
        """Result `idx`'s t on the path: arc-length fraction `van_der_corput(idx + 1)`, re-timed."""
        alphas, arc = self._path.alphas, self._path.arc
        u = van_der_corput(idx + 1)
        total = float(arc[-1])
        if total <= 0:
            return float(alphas[0] + u * (alphas[-1] - alphas[0]))
        target = u * total
        j = int(torch.searchsorted(arc, torch.tensor([target], dtype=torch.float64), right=True).clamp(1, len(arc) - 1))
        s0, s1, a0, a1 = float(arc[j - 1]), float(arc[j]), float(alphas[j - 1]), float(alphas[j])
        return a0 + (target - s0) / (s1 - s0) * (a1 - a0) if s1 > s0 else a0

    def _path_result(self, idx: int) -> Result:
        measured = self._path
        t = self.position(idx)
        ts = torch.tensor([t], dtype=torch.float64)
        emb, latents, starts = self._points(measured, ts)
        extra = {"shape": measured.shape} if self.kind == "between" else {}
        for bridge in measured.bridges:
            if bool(bridge.covers(ts)[0]):
                extra["bridge"] = bridge.record()
        return Result(idx, self.anchors[0].seed, emb, latents,
                      self._record(idx, t=t, end=measured.end, anchor_seeds=[a.seed for a in self.anchors], **extra),
                      start_at=starts[0])

    @property
    def end(self) -> float | None:
        """`beyond`: the last t before the path jumps (known once measured)."""
        return self._path.end if self._path is not None else None

    # -- rendering -------------------------------------------------------------------------

    def render(self, results: Sequence[Result], callback: StepCallback | None = None,
               cancel: CancelCheck | None = None, on_batch: Callable[[list[Result], Tensor], object] | None = None,
               first_batch: int | None = None) -> Tensor:
        """Images `[N, 3, H, W]` (CPU, float32) of `results`, in batches of the settings'
        batch size; `on_batch(results, images)` after each batch (stream them out).
        `first_batch` makes the first batch smaller, so the first images come sooner.
        Results resumed from a later step (inside a bridge) are batched after the others."""
        model = self.model
        run = self.settings
        order = sorted(range(len(results)), key=lambda j: results[j].start_at)  # stable: idx order kept
        batch = max(1, run.batch_size)
        bounds, start = [], 0
        while start < len(order):
            size = min(first_batch, batch) if first_batch and not bounds else batch
            stop = min(len(order), start + size)
            # One batch resumes from one step.
            same = [j for j in range(start, stop) if results[order[j]].start_at == results[order[start]].start_at]
            bounds.append((start, start + len(same)))
            start += len(same)
        out = torch.empty(len(results), 3, run.height, run.width)
        for start, stop in bounds:
            part = [results[j] for j in order[start:stop]]
            emb = PromptEmbedding.cat([r.embedding for r in part]).to(model.device, model.dtype)
            seeds = [r.seed for r in part]
            latents = None
            if any(r.noise is not None for r in part):
                latents = torch.cat([r.noise if r.noise is not None else
                                     model.initial_noise([r.seed], run.height, run.width).float().cpu()
                                     for r in part]).to(model.device, model.dtype)
            with torch.no_grad():
                z = model.sample(emb, seeds, latents=latents, settings=run, pairing="zip", callback=callback,
                                 cancel=cancel, start_at=part[0].start_at)
                images = model.decode(z, batch_size=len(part)).float().cpu()
            if on_batch is not None:
                on_batch(part, images)
            out[order[start:stop]] = images
        return out


def _checked(model, anchor: Anchor) -> Anchor:
    emb = model.as_embedding(anchor.embedding)
    if len(emb) != 1:
        raise InvalidArgument("anchor", f"an anchor is one image, got an embedding batch of {len(emb)}")
    if isinstance(anchor.seed, bool) or not isinstance(anchor.seed, int) or not 0 <= anchor.seed < MAX_SEED:
        raise InvalidArgument("seed", f"must be an integer in [0, 2^63), got {anchor.seed!r}")
    return Anchor(emb, anchor.seed)
