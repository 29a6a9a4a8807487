"""The generated feed (docs/feed.md): `Feed` learns from likes, skips and dwell time;
`simulation` measures it on simulated users against baselines."""

from noise2art.methods.feed.feed import REACTIONS, WHY, Feed, FeedConfig, FeedItem
from noise2art.methods.feed.learner import FeedLearner

__all__ = ["REACTIONS", "WHY", "Feed", "FeedConfig", "FeedItem", "FeedLearner"]
