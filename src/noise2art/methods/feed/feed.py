"""The generated feed: endless items chosen by a learner from likes, skips and dwell time.

A feed starts from topics (prompts or embeddings). Every item is a point of a small space
around one topic: `prompt_axes` embedding coordinates (principal axes of random prompts
of the model's vocabulary, scaled so that a random item keeps `similarity` to its topic)
and `noise_axes` noise coordinates (`NoiseSubspace` around the feed's base noise), each in
[-1, 1]. A `FeedLearner` (GP) scores items from the reactions, on their coordinates and on
the image features of their renders: the feed **renders ahead** (it keeps `lookahead`
rendered candidates beyond the page it shows), so it chooses among pictures it has seen,
not among coordinates that predict the picture only loosely. Each batch fills

- **serendipity** slots (a share `serendipity` of all slots, exactly in the long run):
  alternately the candidate farthest from everything liked and the one the learner is
  least sure of;
- the other slots by UCB: `exploit` when the expected score dominates, `explore` when the
  uncertainty does; before any reaction, `topic` items near each topic in turn. A
  candidate's score drops by `diversity` times its largest image cosine to the batch's
  earlier picks, so a batch is not six copies of one picture.

Every item carries that reason as `why`. The state (items, reactions, learner, random
generator) is plain JSON: `state()` / `Feed.restore` resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import CancelCheck, StepCallback
from noise2art.engine.settings import SampleSettings, SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.feed.learner import FeedLearner

REACTIONS = ("like", "skip", "dwell")
WHY = ("topic", "exploit", "explore", "serendipity")


@dataclass
class FeedConfig:
    """Settings of a feed.

    Attributes:
        serendipity: share of slots, 0..1, kept for items far from what was liked or where
            the learner is least sure.
        prompt_axes, noise_axes: embedding and noise coordinates of the item space.
        similarity: mean similarity of a random item's embedding to its topic (sets how far
            the embedding coordinates reach).
        noise_scale: how far the noise coordinates move from the base noise.
        beta: UCB weight of the learner's uncertainty.
        window: reactions the learner keeps (older ones are forgotten: tastes drift).
        dwell_full_ms: a dwell this long counts as much as a like.
        search: random candidate points per batch (plus points near recent likes).
        seed: seeds the base noise, the axes and the choices.
        pool_prompts: random prompts whose principal axes span the embedding coordinates.
        feature_weight: scale of the image features (of the model's feature kind) in the
            learner's input; 0 learns over coordinates only and renders nothing ahead.
        coordinate_weight: scale of the coordinates (topic one-hot and z) in that input.
        diversity: how much a candidate's image likeness to the batch's earlier picks
            lowers its score.
        lookahead: rendered candidates kept beyond the batch shown (the live feed renders
            this many ahead, at most half a batch extra per call, so steady state renders
            one batch per batch shown).
        sampling: sampling settings of every item.
    """

    serendipity: float = 0.1
    prompt_axes: int = 6
    noise_axes: int = 4
    similarity: float = 0.8
    noise_scale: float = 0.6
    beta: float = 1.0
    window: int = 60
    dwell_full_ms: float = 6000.0
    search: int = 512
    seed: int = 0
    pool_prompts: int = 48
    feature_weight: float = 2.0
    coordinate_weight: float = 0.3
    diversity: float = 0.08
    lookahead: int = 18
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)

    def check(self) -> FeedConfig:
        if isinstance(self.serendipity, bool) or not isinstance(self.serendipity, (int, float)) \
                or not 0.0 <= self.serendipity <= 1.0:
            raise InvalidArgument("serendipity", f"must be a number in [0, 1], got {self.serendipity!r}")
        for name, lo in (("prompt_axes", 1), ("noise_axes", 0), ("window", 1), ("search", 8), ("pool_prompts", 4),
                         ("lookahead", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InvalidArgument(name, f"must be an integer >= {lo}, got {v!r}")
        if not self.coordinate_weight > 0:
            raise InvalidArgument("coordinate_weight", f"must be > 0, got {self.coordinate_weight!r}")
        if not 0.0 < self.similarity < 1.0:
            raise InvalidArgument("similarity", f"must be in (0, 1), got {self.similarity!r}")
        for name in ("noise_scale", "beta", "dwell_full_ms", "feature_weight", "coordinate_weight", "diversity"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InvalidArgument(name, f"must be a finite number >= 0, got {v!r}")
        self.sampling.check()
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sampling"] = self.sampling.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FeedConfig:
        data = dict(data)
        data["sampling"] = SamplingOverrides.from_dict(data.get("sampling"))
        if "feature_weight" not in data:
            # Stored before feeds saw their renders: resume it as it was (coordinates only).
            data.update(feature_weight=0.0, coordinate_weight=1.0, diversity=0.0, lookahead=0)
        return cls(**data)


@dataclass
class FeedItem:
    """One item: where it sits (`topic`, `z`), why it was chosen, the image features of its
    render (`looks`, when the feed sees its renders), and its reactions. A candidate rendered
    ahead has `k = -1` and `why = "ahead"` until it is shown; `born` is how many items the
    feed had shown when it was proposed."""

    k: int
    topic: int
    z: list[float]
    why: str
    seed: int
    reaction: str | None = None
    value: float | None = None
    looks: list[float] | None = None
    born: int = 0

    @property
    def id(self) -> str:
        return f"i{self.k}"


class Feed:
    """An endless feed over `topics`. Build with `Feed.start`; resume with `Feed.restore`."""

    def __init__(self, model, topics: Sequence[PromptEmbedding], config: FeedConfig):
        from noise2art.methods.feedback.preference_gp import (EmbeddingSubspace, NoiseSubspace, calibrate_radius,
                                                               noise_axes, pca_axes)

        self.model, self.config = model, config.check()
        self.topics = [model.as_embedding(t) for t in topics]
        if not self.topics:
            raise InvalidArgument("topics", "give at least one topic")
        if any(len(t) != 1 for t in self.topics):
            raise InvalidArgument("topics", "each topic is one prompt or embedding")
        self.settings: SampleSettings = model.resolve(config.sampling)
        rng = np.random.default_rng([config.seed, 7])
        pool = model.encode(_random_prompts(model, rng, config.pool_prompts)).cond
        axes, std = pca_axes(pool.float(), config.prompt_axes)
        probe = rng.uniform(-1, 1, size=(64, config.prompt_axes))
        self.subspaces = []
        for t in self.topics:
            sub = EmbeddingSubspace(t.cond[0].float(), axes.to(t.cond.device), std.to(t.cond.device))
            sub.radius = calibrate_radius(sub, config.similarity, probe)
            self.subspaces.append(sub)
        h, w = self.settings.height, self.settings.width
        base = model.initial_noise([config.seed], h, w)[0].float().cpu()
        self.noise_space = NoiseSubspace(base, noise_axes(tuple(base.shape), config.noise_axes, config.seed + 1),
                                         config.noise_scale)
        self.coord_dim = len(self.topics) + config.prompt_axes + config.noise_axes
        self.feature_dim = 0
        if config.feature_weight > 0:
            from noise2art.metrics.features import image_features

            with torch.no_grad():  # the width of the model's image features
                probe_image = torch.zeros(1, 3, h, w, device=model.device)
                self.feature_dim = int(image_features(model, probe_image).shape[-1])
        self.dim = self.coord_dim + self.feature_dim
        self.learner = FeedLearner(self.dim, window=config.window)
        self.items: list[FeedItem] = []
        self.ahead: list[FeedItem] = []  # rendered candidates not shown yet
        self._renders: dict[int, Tensor] = {}  # their images, by seed (not in the state: rendered again)
        self.rng = np.random.default_rng([config.seed, 11])
        self._credit = 0.0  # serendipity slots owed (fractional), so the long-run share is exact

    # -- building ------------------------------------------------------------------------

    @classmethod
    def start(cls, model, topics: Sequence[str | PromptEmbedding], config: FeedConfig | None = None) -> Feed:
        embs = [model.encode([t]) if isinstance(t, str) else t for t in topics]
        return cls(model, embs, config or FeedConfig())

    def state(self) -> dict:
        """Everything needed to resume exactly (JSON-ready)."""
        return {"config": self.config.to_dict(), "items": [asdict(i) for i in self.items],
                "ahead": [asdict(i) for i in self.ahead], "learner": self.learner.state(),
                "rng": self.rng.bit_generator.state, "credit": self._credit}

    @classmethod
    def restore(cls, model, topics: Sequence[PromptEmbedding], state: dict) -> Feed:
        feed = cls(model, topics, FeedConfig.from_dict(state["config"]))
        feed.items = [FeedItem(**i) for i in state["items"]]
        feed.ahead = [FeedItem(**i) for i in state.get("ahead", [])]
        feed.learner.restore(state["learner"])
        feed.rng.bit_generator.state = state["rng"]
        feed._credit = float(state["credit"])
        return feed

    # -- coordinates ---------------------------------------------------------------------

    def features(self, topic: np.ndarray, z: np.ndarray, looks: np.ndarray | None = None) -> np.ndarray:
        """Learner inputs of items `(topic [N], z [N, k])` and their image features `looks
        [N, F]`: `[N, dim]`, or `[N, coord_dim]` (coordinates only) when `looks` is None."""
        onehot = np.eye(len(self.topics))[np.asarray(topic, dtype=int)]
        coords = np.concatenate([onehot, np.asarray(z, dtype=np.float64).reshape(len(onehot), -1)], axis=1)
        coords *= self.config.coordinate_weight
        if looks is None or not self.feature_dim:
            return coords
        looks = np.asarray(looks, dtype=np.float64).reshape(len(onehot), -1)
        return np.concatenate([coords, looks * self.config.feature_weight], axis=1)

    def item_features(self, items: Sequence[FeedItem]) -> np.ndarray:
        """`[N, dim]` learner inputs of items (their own looks when the feed sees renders)."""
        looks = np.array([i.looks for i in items]) if self.feature_dim else None
        return self.features([i.topic for i in items], [i.z for i in items], looks)

    def _random_candidates(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.config.prompt_axes + self.config.noise_axes
        topic = self.rng.integers(len(self.topics), size=n)
        z = self.rng.uniform(-1, 1, size=(n, k))
        liked = [i for i in self.items[-self.config.window:] if (i.value or 0) >= 0.5]
        if liked:  # points near recent likes, so the learner can exploit in many dimensions
            centres = [liked[j] for j in self.rng.integers(len(liked), size=n // 2)]
            near = np.clip(np.array([c.z for c in centres]) + self.rng.normal(0, 0.3, size=(len(centres), k)), -1, 1)
            topic = np.concatenate([topic, [c.topic for c in centres]])
            z = np.concatenate([z, near])
        return topic, z

    # -- choosing ------------------------------------------------------------------------

    def next(self, n: int = 6, candidates: tuple | None = None, callback: StepCallback | None = None,
             cancel: CancelCheck | None = None) -> list[FeedItem]:
        """The next `n` items (recorded in the feed).

        `candidates` `(topic [M], z [M, k])`, or `(topic, z, looks [M, F])` when the feed
        sees renders, restricts the choice to given points (a study over a rendered pool).
        Without them a feed that sees renders first renders candidates ahead (`callback` and
        `cancel` reach that render; `render` then reuses its images), one that does not
        chooses among random points.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise InvalidArgument("n", f"must be an integer in [1, 64], got {n!r}")
        if candidates is not None:
            topic, z, *rest = candidates
            looks = rest[0] if rest else None
            if self.feature_dim and (looks is None or np.shape(looks)[-1] != self.feature_dim):
                raise InvalidArgument("candidates", f"this feed learns from image features: give (topic, z, looks) "
                                                    f"with looks of width {self.feature_dim}")
            picks = self._choose(n, topic, z, looks)
            return self._record([self._new_item(topic[i], z[i], why, None if looks is None else looks[i])
                                 for i, why in picks])
        if not self.feature_dim or not self.config.lookahead:
            topic, z = self._random_candidates(self.config.search)
            return self._record([self._new_item(topic[i], z[i], why) for i, why in self._choose(n, topic, z, None)])
        self._render_ahead(n, callback, cancel)
        ahead = self.ahead
        picks = self._choose(n, np.array([c.topic for c in ahead]), np.array([c.z for c in ahead]),
                             np.array([c.looks for c in ahead]))
        chosen = {i for i, _ in picks}
        self.ahead = [c for j, c in enumerate(ahead) if j not in chosen]
        out = []
        for i, why in picks:
            ahead[i].why = why
            out.append(ahead[i])
        return self._record(out)

    def _new_item(self, topic, z, why: str, looks=None) -> FeedItem:
        """An item not shown yet (`k = -1`) at `(topic, z)`, with its own seed."""
        return FeedItem(k=-1, topic=int(topic), z=[float(v) for v in z], why=why,
                        seed=int(self.rng.integers(0, 2**63 - 1)), born=len(self.items),
                        looks=None if looks is None else [float(v) for v in looks])

    def _record(self, items: list[FeedItem]) -> list[FeedItem]:
        """Show `items` in a shuffled order (so a batch's reasons are not in slot order)."""
        out = []
        for j in self.rng.permutation(len(items)):
            item = items[int(j)]
            item.k = len(self.items)
            self.items.append(item)
            out.append(item)
        return out

    def _choose(self, n: int, topic, z, looks) -> list[tuple[int, str]]:
        """`n` (candidate index, why) pairs among candidates `(topic [M], z [M, k], looks [M, F] or None)`."""
        topic, z = np.asarray(topic), np.asarray(z)
        if len(topic) < n:
            raise InvalidArgument("candidates", f"need at least {n} candidates, got {len(topic)}")
        feats = self.features(topic, z, looks)
        self._credit += n * self.config.serendipity
        n_ser = min(n, int(self._credit))
        self._credit -= n_ser
        chosen: list[tuple[int, str]] = []
        taken = np.zeros(len(topic), dtype=bool)
        if not len(self.learner.y):
            # Nothing learnt yet: items near each topic in turn (small coordinates).
            near = np.argsort(np.abs(z).max(axis=1))
            for t in range(n - n_ser):
                want = (len(self.items) + t) % len(self.topics)
                idx = next((int(i) for i in near if topic[i] == want and not taken[i]),
                           next(int(i) for i in near if not taken[i]))
                taken[idx] = True
                chosen.append((idx, "topic"))
        else:
            learner = self.learner if feats.shape[1] == self.dim else self.learner.project(feats.shape[1])
            unit = None if looks is None else _unit(np.asarray(looks, dtype=np.float64))
            for idx, mean, std in learner.pick(feats, n - n_ser, self.config.beta, diversity=self.config.diversity,
                                               looks=unit):
                taken[idx] = True
                chosen.append((idx, "exploit" if mean >= self.config.beta * std else "explore"))
        for s in range(n_ser):
            chosen.append((self._serendipitous(feats, taken, s), "serendipity"))
        return chosen

    def _render_ahead(self, n: int, callback: StepCallback | None, cancel: CancelCheck | None) -> None:
        """Propose and render candidates until `n + lookahead` are ready, at most half a
        batch more than the batch per call (no call costs much more than one batch): half
        by UCB on the coordinates (where likes were), half at random (fresh looks for the
        learner). Candidates proposed more than `window` items ago are dropped first: they
        were proposed for an older taste."""
        shown = len(self.items)
        self.ahead = [c for c in self.ahead if shown - c.born <= self.config.window]
        want = min(n + self.config.lookahead - len(self.ahead), n + (n + 1) // 2)
        if want <= 0:
            return
        topic, z = self._random_candidates(self.config.search)
        new: list[tuple[int, int, np.ndarray]] = []
        if not len(self.learner.y):
            near = [int(i) for i in np.argsort(np.abs(z).max(axis=1))]  # near each topic in turn
            for t in range(want):
                wanted = (shown + t) % len(self.topics)
                pick = next((i for i in near if topic[i] == wanted), near[0])
                near.remove(pick)
                new.append((pick, int(topic[pick]), z[pick]))
        else:
            coords = self.learner.project(self.coord_dim)
            guided = (want + 1) // 2
            for idx, _, _ in coords.pick(self.features(topic, z), guided, self.config.beta):
                new.append((idx, int(topic[idx]), z[idx]))
            k = self.config.prompt_axes + self.config.noise_axes
            for _ in range(want - guided):
                new.append((-1, int(self.rng.integers(len(self.topics))), self.rng.uniform(-1, 1, size=k)))
        cands = [self._new_item(t, zz, "ahead") for _, t, zz in new]
        from noise2art.metrics.features import image_features

        images = self._render_batch(cands, callback, cancel)
        with torch.no_grad():
            looks = image_features(self.model, images.to(self.model.device)).float().cpu().numpy()
        for c, image, look in zip(cands, images, looks):
            c.looks = [round(float(v), 6) for v in look]
            self._renders[c.seed] = image
        self.ahead += cands

    def _serendipitous(self, feats: np.ndarray, taken: np.ndarray, s: int) -> int:
        """Alternately the free candidate farthest from every like and the most uncertain one."""
        free = np.flatnonzero(~taken)
        liked_items = [i for i in self.items if (i.value or 0) >= 0.5]
        liked = self.item_features(liked_items)[:, :feats.shape[1]] if liked_items else np.zeros((0, feats.shape[1]))
        if s % 2 == 0 and len(liked):
            d = ((feats[free][:, None, :] - liked[None]) ** 2).sum(-1).min(axis=1)
            idx = int(free[int(np.argmax(d))])
        else:
            _, std = self.learner.posterior(feats[free])
            idx = int(free[int(np.argmax(std + 1e-9 * self.rng.random(len(free))))])
        taken[idx] = True
        return idx

    # -- reactions -----------------------------------------------------------------------

    def react(self, item_id: str, kind: str, dwell_ms: float | None = None) -> FeedItem:
        """Record a reaction to an item: `like` (1), `skip` (0) or `dwell` (its share of
        `dwell_full_ms`, up to 1; a later like or skip replaces it)."""
        if kind not in REACTIONS:
            raise InvalidArgument("kind", f"must be one of {', '.join(REACTIONS)}, got {kind!r}")
        item = next((i for i in self.items if i.id == item_id), None)
        if item is None:
            raise InvalidArgument("image_id", f"no item {item_id} in this feed")
        if self.feature_dim and item.looks is None:  # checked before the item changes
            raise InvalidArgument("image_id", f"item {item_id} has no render features to learn from")
        if kind == "dwell":
            if dwell_ms is None or not (isinstance(dwell_ms, (int, float)) and math.isfinite(dwell_ms)
                                        and dwell_ms >= 0):
                raise InvalidArgument("dwell_ms", f"a dwell needs a duration >= 0 in ms, got {dwell_ms!r}")
            value = min(1.0, float(dwell_ms) / max(self.config.dwell_full_ms, 1e-9))
            if item.reaction in ("like", "skip"):
                return item  # an explicit reaction says more than the time spent
        else:
            value = 1.0 if kind == "like" else 0.0
        item.reaction, item.value = kind, value
        self.learner.observe(self.item_features([item])[0], value)
        return item

    # -- rendering -----------------------------------------------------------------------

    def embedding(self, item: FeedItem) -> PromptEmbedding:
        k = self.config.prompt_axes
        topic = self.topics[item.topic]
        cond = self.subspaces[item.topic].embed(np.asarray([item.z[:k]]))
        label = f"feed({topic.prompts[0]}, item {item.k})"
        return topic.with_tensors(cond.to(topic.cond.device, topic.cond.dtype), topic.uncond, prompts=[label])

    def noise(self, item: FeedItem) -> Tensor:
        return self.noise_space.noise(np.asarray([item.z[self.config.prompt_axes:]]))

    def render(self, items: Sequence[FeedItem], callback: StepCallback | None = None,
               cancel: CancelCheck | None = None) -> Tensor:
        """Images `[N, 3, H, W]` (CPU, float32) of `items`: the renders made ahead (handed out
        once), the others in one batch."""
        ready = {i.seed: self._renders.pop(i.seed) for i in items if i.seed in self._renders}
        missing = [i for i in items if i.seed not in ready]
        if missing:
            ready.update(zip([i.seed for i in missing], self._render_batch(missing, callback, cancel)))
        return torch.stack([ready[i.seed] for i in items])

    def _render_batch(self, items: Sequence[FeedItem], callback: StepCallback | None = None,
                      cancel: CancelCheck | None = None) -> Tensor:
        model = self.model
        emb = PromptEmbedding.cat([self.embedding(i) for i in items]).to(model.device, model.dtype)
        latents = torch.cat([self.noise(i) for i in items]).to(model.device, model.dtype)
        with torch.no_grad():
            z = model.sample(emb, [i.seed for i in items], latents=latents, settings=self.settings, pairing="zip",
                             batch_size=len(items), callback=callback, cancel=cancel)
            return model.decode(z, batch_size=len(items)).float().cpu()


def _random_prompts(model, rng: np.random.Generator, n: int) -> list[str]:
    from noise2art.methods.feedback.pool import random_prompt
    from noise2art.methods.vocabulary import default_style_terms, default_vocabulary

    vocab, styles = default_vocabulary(model), default_style_terms(model)
    return [random_prompt(rng, vocab, 4, styles, 1) for _ in range(n)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
