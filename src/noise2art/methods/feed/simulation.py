"""Simulated users of the feed, the baselines, and the study that compares them (docs/feed.md).

A simulated user has a hidden taste over the world's attributes: two attribute families
(drawn among those the pool's images vary in) with one or two liked values each. It
looks at an item's image (the attribute classifiers read it) and likes it with
probability 0.9 when every family matches, 0.15 when one of two does, 0.02 otherwise;
a dwell follows the same score. Half-way its taste changes to a new draw. The feed sees
only reactions and item coordinates, never the taste.

So that all arms and users can be compared on the same images, the study renders one
**pool** of items from the feed's own space once (random topics and coordinates) and
every arm chooses among the pool's items it has not shown yet:

- `learned`: the feed (`Feed.next` restricted to the pool);
- `random`: uniformly among the unshown items;
- `popular`: the items other simulated users liked most on the random arm;
- `monothematic`: the unshown item nearest the last like ("more like the last like");
- `oracle`: the unshown item the user would most likely like (knows the taste).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from noise2art.errors import InvalidArgument
from noise2art.methods.feed.feed import Feed, FeedConfig

ARMS = ("learned", "random", "popular", "monothematic", "oracle")
# The feed settings a pool's images depend on (the others shape only the choosing).
POOL_GEOMETRY = ("prompt_axes", "noise_axes", "similarity", "noise_scale", "seed", "pool_prompts")
P_ALL, P_ONE, P_NONE = 0.9, 0.15, 0.02


@dataclass
class Taste:
    """Liked values per family (hidden from the feed)."""

    liked: dict[str, tuple[str, ...]]

    def score(self, attributes: dict[str, str]) -> float:
        matches = sum(attributes.get(f) in values for f, values in self.liked.items())
        if matches == len(self.liked):
            return P_ALL
        return P_ONE if matches else P_NONE


@dataclass
class SimulatedUser:
    """A taste before and after its change at item `change_at`."""

    before: Taste
    after: Taste
    change_at: int

    def taste(self, k: int) -> Taste:
        return self.before if k < self.change_at else self.after


def draw_taste(rng: np.random.Generator, attributes: Sequence[dict[str, str]], families: Sequence[str]) -> Taste:
    """Two families and one or two values each, among values 5-35% of the pool shows (a taste
    that a random item seldom meets, as a real one)."""
    usable = []
    for f in families:
        values, counts = np.unique([a[f] for a in attributes], return_counts=True)
        share = counts / counts.sum()
        common = [str(v) for v, s in zip(values, share) if 0.05 <= s <= 0.35]
        if common:
            usable.append((f, common))
    if len(usable) < 2:
        raise InvalidArgument("pool", "the pool's images vary in fewer than two attribute families")
    picked = rng.choice(len(usable), size=2, replace=False)
    liked = {}
    for j in picked:
        f, common = usable[int(j)]
        k = 1 if len(common) == 1 else int(rng.integers(1, 3))
        liked[f] = tuple(str(v) for v in rng.choice(common, size=k, replace=False))
    return Taste(liked)


@dataclass
class Pool:
    """Rendered items of the feed's space: coordinates, attributes and image features."""

    topic: np.ndarray  # [P]
    z: np.ndarray  # [P, k]
    attributes: list[dict[str, str]]
    features: np.ndarray  # [P, E] unit image features (world CLIP)

    def __len__(self) -> int:
        return len(self.topic)


def render_pool(feed: Feed, size: int, seed: int = 0, batch: int = 24,
                progress: Callable[[int, int], object] | None = None) -> Pool:
    """`size` random items of `feed`'s space, rendered and read by the model's companions."""
    from noise2art.metrics.features import image_features

    model = feed.model
    if model.companions.attributes is None:
        raise InvalidArgument("model", "the feed study needs the attribute classifiers (the embedded model)")
    rng = np.random.default_rng([seed, 3])
    k = feed.config.prompt_axes + feed.config.noise_axes
    topic = rng.integers(len(feed.topics), size=size)
    z = rng.uniform(-1, 1, size=(size, k))
    attributes, features = [], []
    from noise2art.methods.feed.feed import FeedItem

    for start in range(0, size, batch):
        items = [FeedItem(k=i, topic=int(topic[i]), z=list(z[i]), why="pool", seed=int(seed * 10**6 + i))
                 for i in range(start, min(size, start + batch))]
        images = feed.render(items)
        with torch.no_grad():
            attributes += model.companions.attributes.predict(images.to(model.device))
            features.append(image_features(model, images.to(model.device)).float().cpu().numpy())
        if progress is not None:
            progress(min(size, start + batch), size)
    return Pool(topic, z, attributes, np.concatenate(features))


def save_pool(pool: Pool, path, key: dict) -> None:
    """Write `pool` to `path` (`.npz`, no pickles) with `key`, the settings it was rendered
    under, so that `load_pool` gives it back only to a study of the same settings."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, topic=pool.topic, z=pool.z, features=pool.features,
             attributes=np.array(json.dumps(pool.attributes)), key=np.array(json.dumps(key, sort_keys=True)))
    os.replace(tmp, path)


def load_pool(path, key: dict) -> Pool | None:
    """The pool saved at `path` if it was rendered under `key`, else None."""
    import json
    from pathlib import Path

    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != json.dumps(key, sort_keys=True):
            return None
        return Pool(f["topic"], f["z"], json.loads(str(f["attributes"])), f["features"])


@dataclass
class ArmResult:
    """What one arm did for one user: the items shown (pool indices) and the likes."""

    shown: list[int] = field(default_factory=list)
    liked: list[bool] = field(default_factory=list)


def _react(rng: np.random.Generator, user: SimulatedUser, pool: Pool, idx: int, k: int) -> bool:
    return bool(rng.random() < user.taste(k).score(pool.attributes[idx]))


def run_arm(arm: str, user: SimulatedUser, pool: Pool, items: int, page: int, seed: int, *,
            feed_factory: Callable[[], Feed] | None = None, popularity: np.ndarray | None = None) -> ArmResult:
    """Show `items` pool items to `user`, `page` at a time, chosen by `arm`."""
    rng = np.random.default_rng(seed)  # the user's reactions: the same draws for every arm
    choose_rng = np.random.default_rng([seed, ARMS.index(arm)])
    out = ArmResult()
    free = np.ones(len(pool), dtype=bool)
    feed = feed_factory() if arm == "learned" else None
    coords = np.concatenate([np.eye(int(pool.topic.max()) + 1)[pool.topic], pool.z], axis=1)
    while len(out.shown) < items:
        n = min(page, items - len(out.shown))
        idxs = np.flatnonzero(free)
        if arm == "learned":
            # The pool's renders are the candidates a live feed renders ahead: it sees their looks.
            looks = pool.features[idxs] if feed.feature_dim else None
            picked = feed.next(n, candidates=(pool.topic[idxs], pool.z[idxs], looks))
            # Map the feed's items back to pool indices (their coordinates are the pool's).
            lookup = {tuple(np.round(pool.z[i], 12)): i for i in idxs}
            chosen = [int(lookup[tuple(np.round(np.asarray(it.z), 12))]) for it in picked]
        elif arm == "random":
            chosen = [int(i) for i in choose_rng.choice(idxs, size=n, replace=False)]
        elif arm == "popular":
            order = idxs[np.lexsort((choose_rng.random(len(idxs)), -popularity[idxs]))]
            chosen = [int(i) for i in order[:n]]
        elif arm == "monothematic":
            last = next((s for s, l in zip(reversed(out.shown), reversed(out.liked)) if l), None)
            if last is None:
                chosen = [int(i) for i in choose_rng.choice(idxs, size=n, replace=False)]
            else:
                d = ((coords[idxs] - coords[last]) ** 2).sum(1)
                chosen = [int(i) for i in idxs[np.argsort(d)[:n]]]
        elif arm == "oracle":
            taste = user.taste(len(out.shown))
            score = np.array([taste.score(pool.attributes[i]) for i in idxs]) + 1e-6 * choose_rng.random(len(idxs))
            chosen = [int(i) for i in idxs[np.argsort(-score)[:n]]]
        else:
            raise InvalidArgument("arm", f"must be one of {', '.join(ARMS)}, got {arm!r}")
        items_of_feed = picked if arm == "learned" else None
        for j, idx in enumerate(chosen):
            liked = _react(rng, user, pool, idx, len(out.shown))
            free[idx] = False
            out.shown.append(idx)
            out.liked.append(liked)
            if feed is not None:
                feed.react(items_of_feed[j].id, "like" if liked else "skip")
    return out


def bootstrap_interval(values: Sequence[float], rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    means = v[rng.integers(len(v), size=(n, len(v)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def page_diversity(pool: Pool, shown: Sequence[int], page: int) -> float:
    """Mean pairwise image-feature distance (1 - cos) within each page of `page` items."""
    out = []
    for start in range(0, len(shown) - page + 1, page):
        f = pool.features[list(shown[start:start + page])]
        sims = f @ f.T
        n = len(f)
        out.append(float((1 - sims)[~np.eye(n, dtype=bool)].mean()))
    return float(np.mean(out)) if out else math.nan


def recovery_items(liked: Sequence[bool], change_at: int, window: int = 30) -> int | None:
    """Items after the change until the rolling like rate (over `window`) is back to the
    pre-change rate; None if it never is."""
    liked = np.asarray(liked, dtype=float)
    before = liked[max(0, change_at - 2 * window):change_at].mean() if change_at else 0.0
    for end in range(change_at + window, len(liked) + 1):
        if liked[end - window:end].mean() >= before:
            return end - change_at
    return None


@dataclass
class StudyResult:
    """Per arm: like rate (mean over users) with its 95% interval, items to the first like,
    recovery after the change, within-page diversity, serendipitous likes."""

    like_rate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    first_like: dict[str, float]
    recovery: dict[str, float | None]
    diversity: dict[str, float]
    serendipity: dict[str, float]
    users: int
    items: int

    def to_dict(self) -> dict:
        return {"like_rate": self.like_rate, "like_rate_95": self.interval, "items_to_first_like": self.first_like,
                "recovery_items": self.recovery, "page_diversity": self.diversity,
                "serendipitous_likes": self.serendipity, "users": self.users, "items": self.items}


def study(pool: Pool, feed_factory: Callable[[], Feed], *, users: int = 30, items: int = 300, page: int = 6,
          seed: int = 0, arms: Sequence[str] = ARMS,
          progress: Callable[[str, int, int], object] | None = None) -> StudyResult:
    """Every arm on the same simulated users (same tastes, same reaction draws)."""
    families = [f for f in pool.attributes[0] if f != "scene"]
    rng = np.random.default_rng([seed, 5])
    people = [SimulatedUser(draw_taste(rng, pool.attributes, families), draw_taste(rng, pool.attributes, families),
                            items // 2) for _ in range(users)]
    results: dict[str, list[ArmResult]] = {}
    order = ["random"] + [a for a in arms if a != "random"]  # popularity comes from the random arm
    for arm in order:
        if arm not in arms and arm != "random":
            continue
        popularity = None
        runs = []
        for u, person in enumerate(people):
            if arm == "popular":
                # Likes of the *other* users on the random arm.
                popularity = np.zeros(len(pool))
                for v, other in enumerate(results["random"]):
                    if v != u:
                        np.add.at(popularity, [s for s, l in zip(other.shown, other.liked) if l], 1.0)
            runs.append(run_arm(arm, person, pool, items, page, seed * 1000 + u, feed_factory=feed_factory,
                                popularity=popularity))
            if progress is not None:
                progress(arm, u + 1, users)
        results[arm] = runs
    boot = np.random.default_rng([seed, 9])
    combos_popular = {_combo(pool, s) for r in results.get("popular", []) for s, l in zip(r.shown, r.liked) if l}
    out = StudyResult({}, {}, {}, {}, {}, {}, users, items)
    for arm in arms:
        runs = results[arm]
        rates = [float(np.mean(r.liked)) for r in runs]
        out.like_rate[arm] = float(np.mean(rates))
        out.interval[arm] = bootstrap_interval(rates, boot)
        out.first_like[arm] = float(np.median([r.liked.index(True) + 1 if True in r.liked else items for r in runs]))
        rec = [recovery_items(r.liked, items // 2) for r in runs]
        done = [x for x in rec if x is not None]
        out.recovery[arm] = float(np.median(done)) if len(done) >= len(rec) / 2 else None
        out.diversity[arm] = float(np.mean([page_diversity(pool, r.shown, page) for r in runs]))
        ser = []
        for r in runs:
            seen: set = set()
            new = 0
            for s, l in zip(r.shown, r.liked):
                c = _combo(pool, s)
                if l and c not in seen and c not in combos_popular:
                    new += 1
                seen.add(c)
            ser.append(new / max(1, sum(r.liked)))
        out.serendipity[arm] = float(np.mean(ser))
    return out


def _combo(pool: Pool, idx: int) -> tuple:
    return tuple(sorted(pool.attributes[idx].items()))


def default_feed_factory(model, topics: Sequence[str], config: FeedConfig) -> Callable[[], Feed]:
    """A factory of fresh feeds that share one built feed's geometry (axes and base noise
    are computed once)."""
    import copy

    template = Feed.start(model, topics, config)
    state = template.state()

    def make() -> Feed:
        feed = copy.copy(template)
        feed.learner = copy.deepcopy(template.learner)
        feed.items, feed.ahead, feed._renders = [], [], {}
        feed.rng = np.random.default_rng()
        feed.rng.bit_generator.state = state["rng"]
        feed._credit = 0.0
        return feed

    return make
