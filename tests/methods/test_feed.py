"""The generated feed: batches, reasons, serendipity share, reactions, exact resume, and the study's arms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.feed import Feed, FeedConfig
from noise2art.methods.feed.simulation import (ARMS, Pool, SimulatedUser, Taste, bootstrap_interval, recovery_items,
                                               study)

FAST = SamplingOverrides(steps=2, scheduler="ddim")


@pytest.fixture(scope="module")
def feed_config():
    return FeedConfig(sampling=FAST, serendipity=0.25, pool_prompts=8, search=64)


def test_batches_carry_reasons_and_keep_the_serendipity_share(tiny_model, feed_config):
    feed = Feed.start(tiny_model, ["a red ball", "a blue cube"], feed_config)
    first = feed.next(4)
    assert [i.why for i in first].count("serendipity") == 1
    assert {i.why for i in first} <= {"topic", "serendipity"}
    assert {i.topic for i in first if i.why == "topic"} == {0, 1}  # topics in turn
    for item in first:
        feed.react(item.id, "like" if item.k == 0 else "skip")
    shown = first + [i for _ in range(9) for i in feed.next(4)]
    # Exactly a quarter of 40 slots, whatever the batch boundaries.
    assert [i.why for i in shown].count("serendipity") == 10
    assert {i.why for i in shown[4:]} <= {"exploit", "explore", "serendipity"}
    images = feed.render(first)
    assert images.shape == (4, 3, 32, 32) and not torch.allclose(images[0], images[1])


def test_reactions_and_their_values(tiny_model, feed_config):
    feed = Feed.start(tiny_model, ["a red ball"], feed_config)
    a, b, c = feed.next(3)
    assert feed.react(a.id, "like").value == 1.0 and feed.react(b.id, "skip").value == 0.0
    assert feed.react(c.id, "dwell", dwell_ms=3000).value == pytest.approx(0.5)
    assert feed.react(a.id, "dwell", dwell_ms=100).value == 1.0  # a like outweighs a later dwell
    assert len(feed.learner.y) == 3
    with pytest.raises(InvalidArgument, match="kind"):
        feed.react(a.id, "love")
    with pytest.raises(InvalidArgument, match="dwell_ms"):
        feed.react(a.id, "dwell")
    with pytest.raises(InvalidArgument, match="no item"):
        feed.react("i999", "like")
    with pytest.raises(InvalidArgument, match="serendipity"):
        FeedConfig(serendipity=1.5).check()


def test_state_resumes_exactly(tiny_model, feed_config):
    feed = Feed.start(tiny_model, ["a red ball", "a blue cube"], feed_config)
    for item in feed.next(4):
        feed.react(item.id, "like" if item.topic == 0 else "skip")
    state = feed.state()
    resumed = Feed.restore(tiny_model, feed.topics, state)
    a, b = feed.next(4), resumed.next(4)
    assert [(i.topic, i.z, i.why, i.seed) for i in a] == [(i.topic, i.z, i.why, i.seed) for i in b]


def synthetic_pool(n: int = 400, seed: int = 0) -> Pool:
    """A pool whose attributes follow the coordinates: colour from z0, style from z1."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, 4))
    colours = np.where(z[:, 0] > 0.3, "red", np.where(z[:, 0] < -0.3, "blue", "green"))
    styles = np.where(z[:, 1] > 0.3, "oil", np.where(z[:, 1] < -0.3, "sketch", "photo"))
    attrs = [{"scene": "still_life", "color": str(c), "style": str(s)} for c, s in zip(colours, styles)]
    feats = rng.normal(size=(n, 8))
    return Pool(np.zeros(n, dtype=int), z, attrs, feats / np.linalg.norm(feats, axis=1, keepdims=True))


def test_rendering_ahead_hands_out_its_renders_and_resumes_exactly(tiny_model, feed_config):
    feed = Feed.start(tiny_model, ["a red ball", "a blue cube"], feed_config)
    assert feed.feature_dim > 0 and feed.dim == feed.coord_dim + feed.feature_dim
    first = feed.next(4)
    # At most half a batch extra per call: 6 rendered, 4 shown, 2 kept ahead, every one with its looks.
    assert len(feed.ahead) == 2 and all(len(i.looks) == feed.feature_dim for i in first + feed.ahead)
    assert {i.why for i in feed.ahead} == {"ahead"} and [i.k for i in first] == [0, 1, 2, 3]
    kept = {i.seed: feed._renders[i.seed] for i in first}
    images = feed.render(first)
    for item, image in zip(first, images):
        assert torch.equal(image, kept[item.seed])  # the render made ahead, not a second one
    assert torch.allclose(feed.render(first), images, atol=1e-5)  # handed out once; rendered again the same
    for item in first:
        feed.react(item.id, "like" if item.topic == 0 else "skip")
    resumed = Feed.restore(tiny_model, feed.topics, feed.state())
    assert [i.seed for i in resumed.ahead] == [i.seed for i in feed.ahead]
    a, b = feed.next(4), resumed.next(4)
    assert [(i.topic, i.z, i.why, i.seed) for i in a] == [(i.topic, i.z, i.why, i.seed) for i in b]
    assert len(feed.ahead) == 4  # filling up toward 4 + lookahead, half a batch extra per call
    with pytest.raises(InvalidArgument, match="looks"):
        feed.next(2, candidates=(np.zeros(4, dtype=int), np.zeros((4, feed.coord_dim - 2))))


def test_a_feed_stored_before_it_saw_renders_resumes_as_it_was():
    old = FeedConfig().to_dict()
    for key in ("feature_weight", "coordinate_weight", "diversity", "lookahead"):
        old.pop(key)
    config = FeedConfig.from_dict(old)
    assert (config.feature_weight, config.coordinate_weight, config.diversity, config.lookahead) == (0, 1, 0, 0)


def looks_pool(width: int, n: int = 400, seed: int = 0) -> Pool:
    """A pool whose attributes show only in the images' looks: the coordinates are noise."""
    rng = np.random.default_rng(seed)
    colours = rng.choice(["red", "blue", "green"], size=n)
    styles = rng.choice(["oil", "sketch", "photo"], size=n)
    axes = {v: rng.normal(size=width) for v in ("red", "blue", "green", "oil", "sketch", "photo")}
    looks = np.stack([axes[c] + axes[s] + 0.3 * rng.normal(size=width) for c, s in zip(colours, styles)])
    attrs = [{"scene": "still_life", "color": str(c), "style": str(s)} for c, s in zip(colours, styles)]
    return Pool(np.zeros(n, dtype=int), rng.uniform(-1, 1, size=(n, 4)), attrs,
                looks / np.linalg.norm(looks, axis=1, keepdims=True))


def test_a_feed_that_sees_its_renders_learns_what_coordinates_do_not_tell(tiny_model):
    rates = {}
    for weight in (0.0, 3.0):
        config = FeedConfig(sampling=FAST, prompt_axes=2, noise_axes=2, serendipity=0.1, pool_prompts=8,
                            feature_weight=weight)
        template = Feed.start(tiny_model, ["a ball"], config)
        pool = looks_pool(template.feature_dim, n=240)

        def fresh(template=template):
            return Feed.restore(tiny_model, template.topics, template.state())

        result = study(pool, fresh, users=5, items=48, page=6, seed=1, arms=("learned", "random"))
        rates[weight] = result.like_rate
    assert rates[3.0]["learned"] > 1.5 * rates[3.0]["random"], rates
    assert rates[3.0]["learned"] > 1.3 * rates[0.0]["learned"], rates


def test_on_a_learnable_world_the_feed_beats_random_and_the_oracle_beats_all(tiny_model):
    pool = synthetic_pool()
    config = FeedConfig(sampling=FAST, prompt_axes=2, noise_axes=2, serendipity=0.1, pool_prompts=8,
                        feature_weight=0.0, coordinate_weight=1.0)  # the coordinates carry the attributes here
    template = Feed.start(tiny_model, ["a ball"], config)

    def fresh():
        return Feed.restore(tiny_model, template.topics, template.state())

    result = study(pool, fresh, users=6, items=60, page=6, seed=1)
    rates = result.like_rate
    assert set(rates) == set(ARMS)
    assert rates["learned"] > 1.5 * rates["random"], rates
    assert rates["oracle"] >= max(rates[a] for a in ARMS if a != "oracle"), rates
    lo, hi = result.interval["learned"]
    assert lo <= rates["learned"] <= hi


def test_study_helpers():
    taste = Taste({"color": ("red",), "style": ("oil", "photo")})
    assert taste.score({"color": "red", "style": "oil"}) > taste.score({"color": "red", "style": "sketch"}) \
        > taste.score({"color": "blue", "style": "sketch"})
    user = SimulatedUser(taste, Taste({"color": ("blue",), "style": ("sketch",)}), change_at=10)
    assert user.taste(9) is taste and user.taste(10) is user.after
    lo, hi = bootstrap_interval([0.0, 1.0] * 20, np.random.default_rng(0))
    assert lo < 0.5 < hi
    # Back to the old rate 5 items after the change.
    liked = [True] * 10 + [False] * 5 + [True] * 10
    assert recovery_items(liked, 10, window=5) == 10
    assert recovery_items([True] * 10 + [False] * 10, 10, window=5) is None


def test_a_saved_pool_comes_back_only_under_the_settings_it_was_rendered_with(tmp_path):
    from noise2art.methods.feed.simulation import load_pool, save_pool

    pool, key = synthetic_pool(40), {"model": "tiny", "topics": ["a ball"], "seed": 0}
    path = tmp_path / "pool.npz"
    assert load_pool(path, key) is None  # nothing saved yet
    save_pool(pool, path, key)
    back = load_pool(path, dict(reversed(list(key.items()))))  # the key's order does not matter
    np.testing.assert_array_equal(back.topic, pool.topic)
    np.testing.assert_array_equal(back.z, pool.z)
    np.testing.assert_array_equal(back.features, pool.features)
    assert back.attributes == pool.attributes
    assert load_pool(path, {**key, "seed": 1}) is None  # another pool's settings: render again
    assert [p.name for p in tmp_path.iterdir()] == ["pool.npz"]  # no temporary file left
