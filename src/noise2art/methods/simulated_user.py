"""Simulated users for iterative feedback (docs/feedback.md), and the prompt-rewriting baseline.

A simulated user has a hidden target image (rendered from a hidden target prompt on the
session's own noise) and, each round, picks the candidate whose image is nearest the
target (`noise2art.metrics.features.image_distance`: world-CLIP on the embedded model,
colour thumbnails on a plain SD checkpoint) with a fixed strength (0.5). We record the
distance of the current image to the target after every round.

The baseline is what users do without the method: rewrite the prompt. Each round it
proposes rewrites of the current prompt (add, drop or replace one word, words from the
world's caption vocabulary), renders them with the same hidden noise and keeps the best
one if it is nearer the target than the current prompt's image. It renders as many
images per round as a feedback round does (``n`` candidates + the current image), so
both get the same budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from noise2art.errors import InvalidArgument
from noise2art.metrics.features import image_distance

__all__ = [
    "FeedbackTask",
    "RewriteResult",
    "SimulatedUserResult",
    "make_task",
    "render_target",
    "rewrite_prompt",
    "simulate_feedback",
    "simulate_prompt_rewriting",
]

RoundCallback = Callable[[int, int, float], object]
"""``callback(round, total, distance)`` after each round (1-based)."""


def _check_rounds(rounds: int) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 10000:
        raise InvalidArgument("rounds", f"must be an integer in [1, 10000], got {rounds!r}")
    return rounds


def render_target(model, prompt: str, noise: Tensor, **sample_kwargs) -> Tensor:
    """``[1, 3, H, W]``: the hidden target image, ``prompt`` rendered on the initial ``noise [1, C, h, w]``."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgument("target", "the target prompt must be a non-empty text")
    with torch.no_grad():
        return model.decode(model.sample(model.encode([prompt]), latents=noise, **sample_kwargs))


# --------------------------------------------------------------------------- feedback


@dataclass
class SimulatedUserResult:
    """A simulated user's feedback session.

    Attributes:
        distances: ``rounds + 1`` image distances to the target: the start, then after each choice.
        choices: the candidate picked each round (0-based).
        seconds_per_round: wall time of each round's `FeedbackSession.variants` call.
        similarity_errors: ``|achieved - target|`` of every candidate shown (empty for BO).
        final_image: ``[1, 3, H, W]`` the current image after the last round.
    """

    distances: list[float] = field(default_factory=list)
    choices: list[int] = field(default_factory=list)
    seconds_per_round: list[float] = field(default_factory=list)
    similarity_errors: list[float] = field(default_factory=list)
    final_image: Tensor | None = None


def simulate_feedback(session, target_image: Tensor, rounds: int = 10, strength: float = 0.5,
                      callback: RoundCallback | None = None) -> SimulatedUserResult:
    """Run ``rounds`` rounds of a `FeedbackSession` with a user who picks the candidate nearest the target.

    Args:
        session: a `FeedbackSession` (persisted or not; its choices are written as usual).
        target_image: ``[1, 3, H, W]`` the hidden target.
        strength: the strength of every choice.
        callback: ``callback(round, rounds, distance)`` after each round.
    """
    rounds = _check_rounds(rounds)
    model = session.model
    target = target_image.float()
    result = SimulatedUserResult()

    def distances_of(images: Tensor) -> Tensor:
        with torch.no_grad():
            return image_distance(model, images.float(), target).cpu()

    # Round r's batch holds the current image (the result of choice r - 1) and the
    # candidates, so each round costs one render; only the last result is rendered alone.
    variants = session.variants()
    dist = distances_of(variants.images)
    result.distances.append(float(dist[0]))
    for r in range(1, rounds + 1):
        result.seconds_per_round.append(variants.seconds)
        errors = variants.candidates.similarity_error
        result.similarity_errors.extend(float(e) for e in errors if torch.isfinite(e))
        pick = int(torch.argmin(dist[1:]))
        session.choose(pick, strength)
        result.choices.append(pick)
        if r < rounds:
            variants = session.variants()
            dist = distances_of(variants.images)
            now = float(dist[0])
        else:
            result.final_image = session.render_current()
            now = float(distances_of(result.final_image)[0])
        result.distances.append(now)
        if callback is not None:
            callback(r, rounds, now)
    return result


# --------------------------------------------------------------------------- baseline


def rewrite_prompt(prompt: str, rng: np.random.Generator, vocabulary: Sequence[str]) -> str:
    """One random edit of ``prompt``: add, drop or replace one word (words from ``vocabulary``).

    A one-word prompt is never emptied: it can only gain or change a word.
    """
    if not vocabulary:
        raise InvalidArgument("vocabulary", "need at least one word")
    words = prompt.split()
    ops = ["add", "replace", "drop"] if len(words) > 1 else ["add", "replace"]
    if not words:
        ops = ["add"]
    op = ops[int(rng.integers(len(ops)))]
    word = str(vocabulary[int(rng.integers(len(vocabulary)))])
    if op == "add":
        words.insert(int(rng.integers(len(words) + 1)), word)
    elif op == "replace":
        words[int(rng.integers(len(words)))] = word
    else:
        del words[int(rng.integers(len(words)))]
    return " ".join(words)


@dataclass
class RewriteResult:
    """The prompt-rewriting baseline's run.

    Attributes:
        distances: ``rounds + 1`` distances of the kept prompt's image to the target.
        prompts: ``rounds + 1`` kept prompts (the start prompt first).
        seconds_per_round: wall time of each round's render.
    """

    distances: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    seconds_per_round: list[float] = field(default_factory=list)


def simulate_prompt_rewriting(model, prompt: str, target_image: Tensor, noise: Tensor, *, rounds: int = 10,
                              images_per_round: int = 6, seed: int = 0, vocabulary: Sequence[str] | None = None,
                              batch_size: int | None = None, callback: RoundCallback | None = None,
                              **sample_kwargs) -> RewriteResult:
    """The baseline: each round, render ``images_per_round`` rewrites of the prompt, keep the best if nearer.

    Args:
        noise: ``[1, C, h, w]`` the hidden noise (the same as the feedback session's).
        images_per_round: rewrites rendered per round (a feedback round renders ``n + 1``).
        seed: seed of the rewrites' randomness.
        vocabulary: words to add or substitute; default the world's caption vocabulary.
        sample_kwargs: steps / guidance / scheduler, as the feedback session uses.
    """
    rounds = _check_rounds(rounds)
    if isinstance(images_per_round, bool) or not isinstance(images_per_round, int) or images_per_round < 1:
        raise InvalidArgument("images_per_round", f"must be an integer >= 1, got {images_per_round!r}")
    if vocabulary is None:
        from noise2art.methods.vocabulary import default_vocabulary

        vocabulary = default_vocabulary(model) or prompt.split()
    rng = np.random.default_rng([int(seed), 0x72657772])  # "rewr"
    result = RewriteResult()
    with torch.no_grad():
        start_image = model.decode(model.sample(model.encode([prompt]), latents=noise, **sample_kwargs))
        current_distance = float(image_distance(model, start_image.float(), target_image.float())[0])
    result.distances.append(current_distance)
    result.prompts.append(prompt)
    for r in range(1, rounds + 1):
        began = time.perf_counter()
        rewrites = [rewrite_prompt(prompt, rng, vocabulary) for _ in range(images_per_round)]
        with torch.no_grad():
            lat = model.sample(model.encode(rewrites), latents=noise.expand(len(rewrites), *noise.shape[1:]),
                               pairing="zip", batch_size=batch_size or len(rewrites), **sample_kwargs)
            dist = image_distance(model, model.decode(lat).float(), target_image.float()).cpu()
        result.seconds_per_round.append(time.perf_counter() - began)
        best = int(torch.argmin(dist))
        if float(dist[best]) < current_distance:
            prompt, current_distance = rewrites[best], float(dist[best])
        result.distances.append(current_distance)
        result.prompts.append(prompt)
        if callback is not None:
            callback(r, rounds, current_distance)
    return result


# --------------------------------------------------------------------------- tasks


@dataclass
class FeedbackTask:
    """A start prompt the user types and the hidden target prompt they have in mind."""

    start: str
    target: str
    attributes: dict


def make_task(rng: np.random.Generator) -> FeedbackTask:
    """A task from the embedded world: a fully specified target caption and a vague start caption.

    The target names every attribute of a random world image; the start prompt names
    each attribute of the same image with probability 0.25 (at least one): the user's
    first, underspecified attempt at describing what they want.
    """
    from noise2art.world.attributes import FAMILIES, sample_attributes
    from noise2art.world.captions import make_caption

    attrs = sample_attributes(rng)
    target = make_caption(attrs, rng, {f: 1.0 for f in FAMILIES}).text
    start = target
    for _ in range(20):  # a vague caption that differs from the target
        start = make_caption(attrs, rng, {f: 0.25 for f in FAMILIES}).text
        if start != target:
            break
    return FeedbackTask(start, target, dict(attrs))
