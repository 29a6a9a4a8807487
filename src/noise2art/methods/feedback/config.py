"""The settings of a feedback session: `FeedbackConfig`, plain data saved in ``session.json``."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from noise2art.engine import validation as V
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.feedback.term_preferences import check_term_groups
from noise2art.methods.vocabulary import default_style_terms

__all__ = ["MAX_POOL", "MAX_VARIANTS", "RECOMMENDERS", "STEP_RULES", "FeedbackConfig", "config_from_state",
           "is_int", "is_number"]

STEP_RULES = ("exact", "reference")
# Sampling fields that older session files hold at the top level of their config.
LEGACY_SAMPLING = ("steps", "guidance", "scheduler", "batch_size", "precision")

# The scheme names; `schemes.SCHEMES` maps each to its class (the config stays importable without them).
RECOMMENDERS = ("random", "bo", "terms")
MAX_VARIANTS = 64
MAX_POOL = 100_000


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


@dataclass
class FeedbackConfig:
    """Settings of a feedback session (all plain data: saved in ``session.json``).

    Attributes:
        n_variants: candidates per round (the reference: 5).
        similarity: target similarity between ``C`` and each candidate (the reference: 0.72).
        pool_size: random prompts in the candidate pool (the reference: ~500).
        style_terms: terms appended to random prompts and to the user's prompt.
        n_style_terms: how many style terms each prompt gets (the reference: 3).
        words_per_prompt: random words per pool prompt.
        step_rule: ``"exact"`` (solved t, ours) or ``"reference"`` (``t = (1-s)/(1-cos)``).
        distance_row: the token row whose ``1 - cos`` drives farthest-point selection
            (and the reference rule's ``t``); -1 is the last row, as in the reference.
        session_seed: seed of the candidate randomness; None uses the image seed.
        recommender: ``"bo"`` (GP-UCB, the default: it ends nearest the target in the measurements
            of docs/feedback.md), ``"random"`` (the reference's scheme) or ``"terms"`` (learnt term
            preferences): the name of the candidate scheme (`schemes.SCHEMES`).
        beta: the BO recommender's explore/exploit weight (UCB = mean + beta * std).
        prompt_axes, noise_axes: dimensions of the BO subspace (pool PCA axes, noise fields).
        bo_radius: pool standard deviations reached at a prompt coordinate of +-1; None
            calibrates it so that candidates drawn uniformly from the box have, on
            average, the target ``similarity`` to the start embedding.
        noise_scale: weight of a noise coordinate of 1 relative to the base noise.
        terms: the terms recommender's ``{group: [term, ...]}``; None takes
            `vocabulary.default_term_groups` (fixed into the config when a session starts).
        sampling: steps, guidance, scheduler, batch size and precision of the session's
            renders (`SamplingOverrides`; None fields take the model's). A batch size left
            unset renders current + candidates in one batch. The precision defaults to
            ``"auto"`` (a bf16 copy of the UNet for an fp32 model on a CPU with native bf16,
            where rounds are faster; benchmarks/RESULTS.md has the speed and pixel
            differences).
    """

    n_variants: int = 5
    similarity: float = 0.72
    pool_size: int = 500
    style_terms: list[str] = field(default_factory=default_style_terms)
    n_style_terms: int = 3
    words_per_prompt: int = 5
    step_rule: str = "exact"
    distance_row: int = -1
    session_seed: int | None = None
    recommender: str = "bo"
    beta: float = 2.0
    prompt_axes: int = 16
    noise_axes: int = 16
    bo_radius: float | None = None
    noise_scale: float = 0.3
    terms: dict[str, list[str]] | None = None
    sampling: SamplingOverrides = field(default_factory=lambda: SamplingOverrides(precision="auto"))

    def check(self) -> FeedbackConfig:
        """Raise `InvalidArgument` naming the first field outside its range; returns self (no model needed)."""
        if not is_int(self.n_variants) or not 1 <= self.n_variants <= MAX_VARIANTS:
            raise InvalidArgument("n_variants", f"must be an integer in [1, {MAX_VARIANTS}], got {self.n_variants!r}")
        if not is_number(self.similarity) or not math.isfinite(self.similarity) or not -1 < self.similarity < 1:
            raise InvalidArgument("similarity", f"must be a number in (-1, 1), got {self.similarity!r}")
        if not is_int(self.pool_size) or not self.n_variants <= self.pool_size <= MAX_POOL:
            raise InvalidArgument(
                "pool_size",
                f"must be an integer in [n_variants = {self.n_variants}, {MAX_POOL}], got {self.pool_size!r}",
            )
        terms = self.style_terms
        if isinstance(terms, str) or not isinstance(terms, Sequence) or not all(
            isinstance(t, str) and t.strip() for t in terms
        ):
            raise InvalidArgument("style_terms", "must be a list of non-empty strings")
        self.style_terms = list(terms)
        if not is_int(self.n_style_terms) or not 0 <= self.n_style_terms <= len(self.style_terms):
            raise InvalidArgument(
                "n_style_terms", f"must be an integer in [0, {len(self.style_terms)}] (the number of style terms), "
                                 f"got {self.n_style_terms!r}"
            )
        if not is_int(self.words_per_prompt) or not 1 <= self.words_per_prompt <= 64:
            raise InvalidArgument("words_per_prompt", f"must be an integer in [1, 64], got {self.words_per_prompt!r}")
        if self.step_rule not in STEP_RULES:
            raise InvalidArgument("step_rule", f"must be one of {', '.join(STEP_RULES)}, got {self.step_rule!r}")
        if not is_int(self.distance_row):
            raise InvalidArgument("distance_row", f"must be an integer row index, got {self.distance_row!r}")
        if not isinstance(self.sampling, SamplingOverrides):
            raise InvalidArgument("sampling", f"expected SamplingOverrides, got {type(self.sampling).__name__}")
        self.sampling.check()
        if self.session_seed is not None:
            V.check_seed(self.session_seed, "session_seed")
        if self.recommender not in RECOMMENDERS:
            raise InvalidArgument("recommender", f"must be one of {', '.join(RECOMMENDERS)}, got {self.recommender!r}")
        if not is_number(self.beta) or not math.isfinite(self.beta) or self.beta < 0:
            raise InvalidArgument("beta", f"must be a finite number >= 0, got {self.beta!r}")
        if not is_int(self.prompt_axes) or not 1 <= self.prompt_axes <= 256:
            raise InvalidArgument("prompt_axes", f"must be an integer in [1, 256], got {self.prompt_axes!r}")
        if not is_int(self.noise_axes) or not 0 <= self.noise_axes <= 256:
            raise InvalidArgument("noise_axes", f"must be an integer in [0, 256], got {self.noise_axes!r}")
        if self.bo_radius is not None and (
            not is_number(self.bo_radius) or not math.isfinite(self.bo_radius) or self.bo_radius <= 0
        ):
            raise InvalidArgument("bo_radius", f"must be None or a finite number > 0, got {self.bo_radius!r}")
        if not is_number(self.noise_scale) or not math.isfinite(self.noise_scale) or self.noise_scale < 0:
            raise InvalidArgument("noise_scale", f"must be a finite number >= 0, got {self.noise_scale!r}")
        if self.terms is not None:
            self.terms = check_term_groups(self.terms)
        if self.recommender == "terms" and self.n_variants < 2:
            raise InvalidArgument("n_variants", "the terms recommender needs at least 2 (no change + an edit)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeedbackConfig:
        """The inverse of `to_dict`, checked; unknown keys are an error (a newer or foreign file).

        Sessions written before the sampling settings moved into `sampling` hold them at the
        top level (`steps`, `guidance`, `scheduler`, `batch_size`, `precision`): they are
        read into `sampling`.
        """
        if not isinstance(data, dict):
            raise InvalidArgument("config", f"expected an object, got {type(data).__name__}")
        data = dict(data)
        legacy = {k: data.pop(k) for k in LEGACY_SAMPLING if k in data}
        # A session written before there were several schemes ran the reference's random one.
        data.setdefault("recommender", "random")
        sampling = dict(data.pop("sampling", None) or {"precision": "auto"})
        sampling.update({k: v for k, v in legacy.items()})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidArgument("config", f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data, sampling=SamplingOverrides.from_dict(sampling)).check()

    def sample_kwargs(self) -> dict:
        """Keyword arguments of `Model.sample` for a render (None: the model's defaults); the
        batch size is the caller's."""
        s = self.sampling
        return {"steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler, "precision": s.precision}


def config_from_state(state: dict, path: str | os.PathLike = "") -> FeedbackConfig:
    """The `FeedbackConfig` stored in a session's ``session.json`` (an error names the session folder)."""
    try:
        return FeedbackConfig.from_dict(state["config"])
    except (InvalidArgument, TypeError) as exc:
        raise InvalidArgument("session", f"'{path}' is not a usable feedback session: its config is invalid "
                                         f"({exc})") from None
