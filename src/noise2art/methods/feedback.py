"""Iterative human feedback on the prompt embedding (docs/feedback.md).

Follows Deckers, Peters, Potthast, "Manipulating Embeddings of Stable Diffusion Prompts"
(IJCAI 2024) and its public code. A session holds the current embedding ``C`` (from the
user's prompt) and one fixed hidden noise (from the seed). Each round shows the current
image and ``n`` candidates rendered from the *same* noise, so they differ only by
embedding; the user picks one and a strength ``s`` in ``[0, 1]`` and ``C`` moves toward it:
``C <- slerp(C, chosen, s)`` (per-token slerp, row 0 fixed, ``noise2art.space.slerp``).

Candidates of round ``r`` (``random`` scheme, the reference's), with a numpy Generator
seeded by ``(session_seed, r)``:

1. The pool: ``pool_size`` random prompts, each ``words_per_prompt`` random words (from
   the world's caption vocabulary ``noise2art.world.captions.VOCABULARY`` when it is
   there, else random letter strings) plus ``n_style_terms`` random style terms, encoded
   once per session (it is the costly part: 500 prompts through the text encoder).
2. ``n`` picks by greedy farthest-point selection on the pool, distance ``1 - cos`` of
   one token row (``distance_row``, default the last row as in the reference's
   ``compute_dot``: for SD a padding row that CLIP's causal encoder makes a summary of
   the prompt, for the embedded model a padding row that BERT's bidirectional encoder
   fills with one), starting from a random pool member drawn by the round's Generator.
3. For each pick ``B`` and a style prompt ``P = encode(prompt + n_style_terms random
   style terms)``:

   * ``step_rule="exact"`` (ours): ``E1 = C`` moved toward ``B`` until
     ``similarity(C, E1) = target`` (``space.slerp_to_similarity``, ``t`` solved by
     bisection); ``E2 = E1`` moved toward ``P`` by the same rule
     (``similarity(E1, E2) = target``); the candidate is ``C`` moved toward ``E2`` until
     ``similarity(C, candidate) = target``. The two moves fix the candidate's
     *direction* (random prompt, then back toward the prompt with new style terms, as
     in the reference); the last solve fixes its *distance*, so every candidate sits at
     exactly the target similarity to ``C`` (the second move alone cannot keep it: it
     starts at the target and usually moves back toward ``C``). When ``E2`` is more
     similar to ``C`` than the target, the last step extrapolates past ``E2`` on the
     great circles from ``C``.
   * ``step_rule="reference"``: the reference's approximate rule for both moves,
     ``t = (1 - target) / (1 - cos(row_-1))`` (``space.reference_step_t``), not clamped;
     the candidate is ``E2``. Its similarity to ``C`` is only near the target.

   ``similarity`` is ``space.similarity``: the mean row cosine over rows ``1..L-1``.

``recommender="bo"`` replaces steps 2-3 by a GP-UCB recommender over a low-dimensional
subspace of prompt embedding and initial noise (``noise2art.methods.recommender``); its
candidates then also differ in noise, and a choice moves the noise coordinates too.
``recommender="terms"`` replaces them by a recommender that learns which terms the
choices favour (``noise2art.methods.term_recommender``): the candidates are the
encodings of the prompt plus a guessed set of terms, unchanged and edited.

Beyond the reference: candidates and the current image are rendered in one batched
sampling call; exact similarity; undo; sessions persisted after every choice and
resumable (``noise2art.methods.feedback_store``); the embedding exported and rendered on
other seeds; a 2-D map of the session. See docs/feedback.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import string
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noise2art import space
from noise2art.engine import validation as V
from noise2art.engine.devices import check_precision
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import StepCallback
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.files import atomic_write
from noise2art.methods import feedback_store as store_mod
from noise2art.methods import term_recommender as terms_mod
from noise2art.methods.recommender import (
    EmbeddingSubspace,
    NoiseSubspace,
    PreferenceGP,
    calibrate_radius,
    noise_axes,
    pca_axes,
)
from noise2art.methods.vocabulary import GENERIC_STYLE_TERMS, default_style_terms, default_term_groups, default_vocabulary

__all__ = [
    "GENERIC_STYLE_TERMS",
    "RECOMMENDERS",
    "STEP_RULES",
    "CandidatePool",
    "Candidates",
    "FeedbackConfig",
    "FeedbackMap",
    "FeedbackSession",
    "HistoryEntry",
    "Variants",
    "build_pool",
    "config_from_state",
    "default_style_terms",
    "default_vocabulary",
    "farthest_point_selection",
    "random_prompt",
    "save_map_png",
]

STEP_RULES = ("exact", "reference")
RECOMMENDERS = ("random", "bo", "terms")
MAX_VARIANTS = 64
MAX_POOL = 100_000

# Independent random streams derived from the session seed (numpy SeedSequence entropy).
_POOL_STREAM = 0x706F6F6C  # "pool"
_NOISE_AXES_STREAM = 0x6E6F6973  # "nois"
_RADIUS_STREAM = 0x72616469  # "radi"

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- configuration


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
        steps, guidance, scheduler: sampling settings; None takes the model's defaults.
        session_seed: seed of the candidate randomness; None uses the image seed.
        batch_size: samples per UNet batch; None renders current + candidates in one batch.
        recommender: ``"random"`` (the reference's scheme), ``"bo"`` (GP-UCB) or ``"terms"``
            (learnt term preferences, `noise2art.methods.term_recommender`).
        beta: the BO recommender's explore/exploit weight (UCB = mean + beta * std).
        prompt_axes, noise_axes: dimensions of the BO subspace (pool PCA axes, noise fields).
        bo_radius: pool standard deviations reached at a prompt coordinate of +-1; None
            calibrates it so that candidates drawn uniformly from the box have, on
            average, the target ``similarity`` to the start embedding.
        noise_scale: weight of a noise coordinate of 1 relative to the base noise.
        terms: the terms recommender's ``{group: [term, ...]}``; None takes
            `term_recommender.default_term_groups` (fixed into the config when a session starts).
        precision: the denoiser's dtype for the session's renders: ``"auto"`` (a bf16 copy
            of the UNet for an fp32 model on a CPU with native bf16, where rounds are faster
            and images move by about 0.002 mean pixel error, benchmarks/RESULTS.md; else as
            ``"model"``), ``"model"`` (the model's dtype) or ``"bf16"`` (`Model.sample`).
    """

    n_variants: int = 5
    similarity: float = 0.72
    pool_size: int = 500
    style_terms: list[str] = field(default_factory=default_style_terms)
    n_style_terms: int = 3
    words_per_prompt: int = 5
    step_rule: str = "exact"
    distance_row: int = -1
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    session_seed: int | None = None
    batch_size: int | None = None
    recommender: str = "random"
    beta: float = 2.0
    prompt_axes: int = 16
    noise_axes: int = 16
    bo_radius: float | None = None
    noise_scale: float = 0.3
    terms: dict[str, list[str]] | None = None
    precision: str = "auto"

    def check(self) -> FeedbackConfig:
        """Raise `InvalidArgument` naming the first field outside its range; returns self (no model needed)."""
        if not _is_int(self.n_variants) or not 1 <= self.n_variants <= MAX_VARIANTS:
            raise InvalidArgument("n_variants", f"must be an integer in [1, {MAX_VARIANTS}], got {self.n_variants!r}")
        if not _is_number(self.similarity) or not math.isfinite(self.similarity) or not -1 < self.similarity < 1:
            raise InvalidArgument("similarity", f"must be a number in (-1, 1), got {self.similarity!r}")
        if not _is_int(self.pool_size) or not self.n_variants <= self.pool_size <= MAX_POOL:
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
        if not _is_int(self.n_style_terms) or not 0 <= self.n_style_terms <= len(self.style_terms):
            raise InvalidArgument(
                "n_style_terms", f"must be an integer in [0, {len(self.style_terms)}] (the number of style terms), "
                                 f"got {self.n_style_terms!r}"
            )
        if not _is_int(self.words_per_prompt) or not 1 <= self.words_per_prompt <= 64:
            raise InvalidArgument("words_per_prompt", f"must be an integer in [1, 64], got {self.words_per_prompt!r}")
        if self.step_rule not in STEP_RULES:
            raise InvalidArgument("step_rule", f"must be one of {', '.join(STEP_RULES)}, got {self.step_rule!r}")
        if not _is_int(self.distance_row):
            raise InvalidArgument("distance_row", f"must be an integer row index, got {self.distance_row!r}")
        SamplingOverrides(steps=self.steps, guidance=self.guidance, scheduler=self.scheduler,
                          batch_size=self.batch_size).check()
        if self.session_seed is not None:
            V.check_seed(self.session_seed, "session_seed")
        if self.recommender not in RECOMMENDERS:
            raise InvalidArgument("recommender", f"must be one of {', '.join(RECOMMENDERS)}, got {self.recommender!r}")
        if not _is_number(self.beta) or not math.isfinite(self.beta) or self.beta < 0:
            raise InvalidArgument("beta", f"must be a finite number >= 0, got {self.beta!r}")
        if not _is_int(self.prompt_axes) or not 1 <= self.prompt_axes <= 256:
            raise InvalidArgument("prompt_axes", f"must be an integer in [1, 256], got {self.prompt_axes!r}")
        if not _is_int(self.noise_axes) or not 0 <= self.noise_axes <= 256:
            raise InvalidArgument("noise_axes", f"must be an integer in [0, 256], got {self.noise_axes!r}")
        if self.bo_radius is not None and (
            not _is_number(self.bo_radius) or not math.isfinite(self.bo_radius) or self.bo_radius <= 0
        ):
            raise InvalidArgument("bo_radius", f"must be None or a finite number > 0, got {self.bo_radius!r}")
        if not _is_number(self.noise_scale) or not math.isfinite(self.noise_scale) or self.noise_scale < 0:
            raise InvalidArgument("noise_scale", f"must be a finite number >= 0, got {self.noise_scale!r}")
        if self.terms is not None:
            self.terms = terms_mod.check_term_groups(self.terms)
        check_precision(self.precision)
        if self.recommender == "terms" and self.n_variants < 2:
            raise InvalidArgument("n_variants", "the terms recommender needs at least 2 (no change + an edit)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeedbackConfig:
        """The inverse of `to_dict`, checked; unknown keys are an error (a newer or foreign file)."""
        if not isinstance(data, dict):
            raise InvalidArgument("config", f"expected an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidArgument("config", f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data).check()

    def sample_kwargs(self) -> dict:
        """Keyword arguments of `Model.sample` (None: the model's defaults)."""
        return {"steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler,
                "precision": self.precision}


def config_from_state(state: dict, path: str | os.PathLike = "") -> FeedbackConfig:
    """The `FeedbackConfig` stored in a session's ``session.json`` (an error names the session folder)."""
    try:
        return FeedbackConfig.from_dict(state["config"])
    except (InvalidArgument, TypeError) as exc:
        raise InvalidArgument("session", f"'{path}' is not a usable feedback session: its config is invalid "
                                         f"({exc})") from None


# --------------------------------------------------------------------------- the pool


def random_prompt(rng: np.random.Generator, vocabulary: Sequence[str] | None, words: int,
                  style_terms: Sequence[str], n_style_terms: int) -> str:
    """``words`` random words and ``n_style_terms`` distinct random style terms, comma-joined.

    Without a vocabulary a word is 3-8 random lowercase letters (the reference's random strings).
    """
    if vocabulary:
        picked = [str(vocabulary[i]) for i in rng.integers(len(vocabulary), size=words)]
    else:
        letters = np.array(list(string.ascii_lowercase))
        picked = ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(words)]
    parts = [" ".join(picked)]
    if n_style_terms:
        parts += [str(style_terms[i]) for i in rng.choice(len(style_terms), size=n_style_terms, replace=False)]
    return ", ".join(parts)


def _style_prompt(rng: np.random.Generator, prompt: str, config: FeedbackConfig) -> str:
    terms = config.style_terms
    picks = [terms[i] for i in rng.choice(len(terms), size=config.n_style_terms, replace=False)]
    return ", ".join([prompt, *picks]) if picks else prompt


def _encode_cond(model, prompts: list[str], batch: int = 64) -> Tensor:
    """Prompt states ``[N, L, D]`` only: the candidates share the session's negative-prompt states,
    so encoding the negatives as `Model.encode` does would double the cost of the pool."""
    parts = []
    with warnings.catch_warnings():
        # Random prompts past the encoder's length are cut silently: their tail is random too.
        warnings.simplefilter("ignore")
        for start in range(0, len(prompts), batch):
            parts.append(model.text_encoder(prompts[start:start + batch], model.device, model.dtype).states)
    return torch.cat(parts)


@dataclass
class CandidatePool:
    """Random prompts and their states, drawn once per session.

    Attributes:
        prompts: ``P`` prompt texts.
        cond: ``[P, L, D]`` their text-encoder states.
        seed: the session seed they were drawn from.
        model_id: the model that encoded them.
    """

    prompts: list[str]
    cond: Tensor
    seed: int
    model_id: str

    def __len__(self) -> int:
        return len(self.prompts)


def build_pool(model, config: FeedbackConfig, seed: int,
               callback: Callable[[int, int], object] | None = None) -> CandidatePool:
    """Draw and encode ``config.pool_size`` random prompts from ``seed`` (``callback(done, total)``)."""
    config.check()
    rng = np.random.default_rng([int(seed), _POOL_STREAM])
    vocabulary = default_vocabulary(model)
    prompts = [
        random_prompt(rng, vocabulary, config.words_per_prompt, config.style_terms, config.n_style_terms)
        for _ in range(config.pool_size)
    ]
    parts, batch = [], 64
    for start in range(0, len(prompts), batch):
        parts.append(_encode_cond(model, prompts[start:start + batch]))
        if callback is not None:
            callback(min(start + batch, len(prompts)), len(prompts))
    return CandidatePool(prompts, torch.cat(parts), int(seed), model.model_id)


def farthest_point_selection(rows: Tensor, n: int, first: int) -> list[int]:
    """Greedy farthest-point selection of ``n`` of ``rows [P, D]`` under ``1 - cos``.

    Starts at ``first``; each next pick maximises its least distance to those picked.
    Returns the indices in pick order.
    """
    if rows.ndim != 2:
        raise InvalidArgument("rows", f"expected [P, D], got {list(rows.shape)}")
    p = rows.shape[0]
    if not _is_int(n) or not 1 <= n <= p:
        raise InvalidArgument("n", f"must be an integer in [1, {p}], got {n!r}")
    if not _is_int(first) or not 0 <= first < p:
        raise InvalidArgument("first", f"must be an index in [0, {p - 1}], got {first!r}")
    unit = torch.nn.functional.normalize(rows.to(torch.float32), dim=-1)
    picked = [int(first)]
    least = 1.0 - unit @ unit[first]
    least[first] = -math.inf
    for _ in range(n - 1):
        j = int(torch.argmax(least))
        picked.append(j)
        least = torch.minimum(least, 1.0 - unit @ unit[j])
        least[picked] = -math.inf
    return picked


# --------------------------------------------------------------------------- results


@dataclass
class Candidates:
    """The candidates of one round (embeddings only; `Variants` adds their images).

    Attributes:
        round: the round they belong to (1 for the first).
        embedding: ``[n, L, D]`` candidate embeddings (the session's negative states).
        similarity: ``[n]`` achieved ``similarity(C, candidate)``.
        target_similarity: the target (None for the BO recommender, which has none).
        t: ``[n, 3]`` steps used (exact: toward B, toward P, final; reference: toward B,
            toward P, NaN); NaN for the BO recommender.
        sources: the pool prompt each candidate came from (BO: a coordinates label; terms:
            the edit, e.g. "+ at sunset").
        style_prompts: the prompt + style terms each candidate moved toward ("" for BO; terms:
            the full text each candidate encodes).
        z: ``[n, k_p + k_n]`` BO coordinates, None for the random scheme.
        noise: ``[n, C, h, w]`` per-candidate initial noise (BO), None when all share the session's.
        edits: the terms recommender's `term_recommender.Edit` per candidate, else None.
        guesses: the terms each candidate adds to the prompt (terms recommender), else None.
    """

    round: int
    embedding: PromptEmbedding
    similarity: Tensor
    target_similarity: float | None
    t: Tensor
    sources: list[str]
    style_prompts: list[str]
    z: np.ndarray | None = None
    noise: Tensor | None = None
    edits: list[terms_mod.Edit] | None = None
    guesses: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.embedding)

    @property
    def similarity_error(self) -> Tensor:
        """``[n]`` ``|achieved - target|`` (NaN without a target)."""
        if self.target_similarity is None:
            return torch.full_like(self.similarity, math.nan)
        return (self.similarity - self.target_similarity).abs()


@dataclass
class Variants:
    """One round as shown: the current image first, then the candidates' images.

    Attributes:
        candidates: the round's `Candidates`.
        images: ``[1 + n, 3, H, W]`` in [0, 1]; index 0 is the current embedding's image.
        seconds: wall time of this round (candidates not cached before + the one render).
    """

    candidates: Candidates
    images: Tensor
    seconds: float

    @property
    def round(self) -> int:
        return self.candidates.round

    @property
    def embeddings(self) -> PromptEmbedding:
        return self.candidates.embedding

    @property
    def similarity(self) -> Tensor:
        return self.candidates.similarity

    @property
    def target_similarity(self) -> float | None:
        return self.candidates.target_similarity

    @property
    def current_image(self) -> Tensor:
        return self.images[:1]

    @property
    def candidate_images(self) -> Tensor:
        return self.images[1:]


@dataclass
class HistoryEntry:
    """One choice: the embedding before it, the candidate picked and the embedding after it.

    ``round`` is the round the choice was made in (1 for the first); ``index`` the
    candidate (0-based); ``similarity`` the candidate's achieved similarity to ``previous``.
    The ``*_z`` fields are BO coordinates (None for the random scheme); ``candidate_edits``
    (``[kind, term, old]`` per candidate) and ``guess_previous`` / ``guess_updated`` are
    the terms recommender's (None otherwise).
    """

    round: int
    index: int
    strength: float
    previous: PromptEmbedding
    chosen: PromptEmbedding
    updated: PromptEmbedding
    similarity: float
    source: str = ""
    candidates_z: np.ndarray | None = None
    noise_z_previous: np.ndarray | None = None
    noise_z_updated: np.ndarray | None = None
    candidate_edits: list[list] | None = None
    guess_previous: list[str] | None = None
    guess_updated: list[str] | None = None
    time: str = ""

    def record(self) -> dict:
        """The JSON record of ``session.json`` (file names per `feedback_store.history_files`)."""
        def listed(a):
            return None if a is None else np.asarray(a, dtype=float).tolist()

        return {
            "round": self.round, "index": self.index, "strength": self.strength,
            "similarity": self.similarity, "source": self.source,
            **store_mod.history_files(self.round),
            "updated_hash": self.updated.hash(),
            "candidates_z": listed(self.candidates_z),
            "noise_z_previous": listed(self.noise_z_previous),
            "noise_z_updated": listed(self.noise_z_updated),
            "candidate_edits": self.candidate_edits,
            "guess_previous": self.guess_previous,
            "guess_updated": self.guess_updated,
            "time": self.time,
        }


@dataclass
class FeedbackMap:
    """A 2-D projection of a session: coordinates plus what each point is.

    Attributes:
        points: ``[N, 2]`` coordinates (PCA of the flattened rows 1..L-1).
        labels: ``N`` short labels ("start", "1", ..., "current", "c1", "v1", ...).
        kinds: ``N`` of "path" (start and the embedding after each choice; the last is
            the current one), "chosen" (the candidate picked in each round) and
            "candidate" (this round's candidates).
        arrows: ``(from, to)`` index pairs along the path of the current embedding.
        explained: fraction of the variance each of the two axes carries.
    """

    points: np.ndarray
    labels: list[str]
    kinds: list[str]
    arrows: list[tuple[int, int]]
    explained: tuple[float, float]


# --------------------------------------------------------------------------- the session


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_strength(strength) -> float:
    if not _is_number(strength) or not math.isfinite(float(strength)) or not 0.0 <= float(strength) <= 1.0:
        raise InvalidArgument("strength", f"must be a number in [0, 1], got {strength!r}")
    return float(strength)


def _check_term_history(history: Sequence[HistoryEntry], prefs: terms_mod.TermPreferences, n: int) -> None:
    """A terms session's records: ``n`` edits of known terms each, guesses that chain from [] (else an error)."""
    guess: list[str] = []
    for entry in history:
        edits = entry.candidate_edits
        if not isinstance(edits, list) or len(edits) != n:
            raise InvalidArgument("session", f"round {entry.round}: a terms session needs {n} 'candidate_edits'")
        try:
            parsed = [terms_mod.Edit.from_record(e) for e in edits]
            for e in parsed:
                if e.term is not None and e.term not in prefs.index:
                    raise ValueError(f"unknown term {e.term!r}")
            if entry.guess_previous != guess or entry.guess_updated != prefs.apply(guess, parsed[entry.index]):
                raise ValueError("its guesses do not follow from its edits")
        except InvalidArgument:
            raise
        except ValueError as exc:
            raise InvalidArgument("session", f"round {entry.round}: {exc}") from None
        guess = list(entry.guess_updated)


def _array(value, name: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument("session", f"'{name}' is not a list of numbers") from None
    if not np.isfinite(arr).all():
        raise InvalidArgument("session", f"'{name}' holds non-finite numbers")
    return arr


class FeedbackSession:
    """An iterative-feedback session on one model. Create with `start` or `resume`.

    Attributes:
        model: the `Model`.
        prompt, negative: the start prompt and negative prompt.
        seed: the hidden noise seed (every image of the session starts from its noise).
        config: the `FeedbackConfig`.
        initial: ``[1, L, D]`` embedding of the start prompt.
        path: the session folder when the session is persisted, else None.
    """

    def __init__(self, model, prompt: str, seed: int, config: FeedbackConfig, initial: PromptEmbedding, *,
                 negative: str = "", history: Sequence[HistoryEntry] = (), noise_z: np.ndarray | None = None,
                 store: store_mod.SessionStore | None = None, pool: CandidatePool | None = None):
        self.model = model
        self.prompt = prompt
        self.negative = negative
        self.seed = seed
        self.config = config
        self.initial = initial
        self._history = list(history)
        self._current = self._history[-1].updated if self._history else initial
        self._store = store
        self._pool = pool
        self._base_noise = model.initial_noise([seed])  # [1, C, h, w]
        self._subspace: EmbeddingSubspace | None = None
        self._noise_space: NoiseSubspace | None = None
        self._candidates: Candidates | None = None
        if config.recommender == "bo":
            self._noise_z = np.zeros(config.noise_axes) if noise_z is None else np.asarray(noise_z, dtype=np.float64)
        else:
            self._noise_z = None
        self._guess: list[str] = list(self._history[-1].guess_updated or []) if self._history else []
        self.repaired = False  # set by `resume` when current.safetensors had to be rewritten

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def start(cls, model, prompt: str, seed: int = 0, config: FeedbackConfig | None = None, *, negative: str = "",
              path: str | os.PathLike | None = None, pool: CandidatePool | None = None) -> FeedbackSession:
        """Begin a session: ``C = encode(prompt)``, the hidden noise from ``seed``.

        Args:
            path: a folder to persist the session in (it must not hold one yet); every
                choice is written there before `choose` returns. None keeps it in memory.
            pool: a `CandidatePool` built for this model and session seed (lets several
                sessions share the costly pool encoding); by default it is built on the
                first round.
        """
        config = (config or FeedbackConfig()).check()
        if config.recommender == "terms" and config.terms is None:
            # Fixed into the saved config, so a resumed session keeps its terms whatever the defaults become.
            config = dataclasses.replace(config, terms=default_term_groups(model)).check()
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgument("prompt", "must be a non-empty text")
        seed = V.check_seed(seed)
        initial = model.encode([prompt], negative)
        session = cls(model, prompt, seed, config, initial, negative=negative, pool=None)
        if pool is not None:
            session._check_pool(pool)
            session._pool = pool
        if path is not None:
            session._store = store_mod.SessionStore.create(
                path, session._state(session._history, initial, session._noise_z), initial
            )
        return session

    @classmethod
    def resume(cls, model, path: str | os.PathLike, *, pool: CandidatePool | None = None) -> FeedbackSession:
        """Continue the session persisted in ``path`` (after a quit or a crash).

        Raises:
            InvalidArgument("model", ...): the session was made with another model.
            InvalidArgument("session", ...): the folder is corrupted or of another schema.
        """
        store = store_mod.SessionStore(path)
        stored = store.load(model.model_id, model.embedding_shape)
        state = stored.state
        config = config_from_state(state, path)
        seed = V.check_seed(state["seed"])

        def on_model(e: PromptEmbedding) -> PromptEmbedding:
            return e.to(model.device, model.dtype)

        history = []
        for entry in stored.entries:
            r = entry.record
            history.append(HistoryEntry(
                round=r["round"], index=r["index"], strength=_check_strength(r["strength"]),
                previous=on_model(entry.previous), chosen=on_model(entry.chosen), updated=on_model(entry.updated),
                similarity=float(r.get("similarity", math.nan)), source=str(r.get("source", "")),
                candidates_z=_array(r.get("candidates_z"), "candidates_z"),
                noise_z_previous=_array(r.get("noise_z_previous"), "noise_z_previous"),
                noise_z_updated=_array(r.get("noise_z_updated"), "noise_z_updated"),
                candidate_edits=r.get("candidate_edits"), guess_previous=r.get("guess_previous"),
                guess_updated=r.get("guess_updated"),
                time=str(r.get("time", "")),
            ))
        noise_z = _array(state.get("noise_z"), "noise_z")
        if config.recommender == "bo":
            if noise_z is None or noise_z.shape != (config.noise_axes,):
                raise InvalidArgument(
                    "session", f"'noise_z' must hold {config.noise_axes} numbers for the bo recommender"
                )
            if any(e.candidates_z is None or e.candidates_z.ndim != 2 for e in history):
                raise InvalidArgument("session", "a bo session's history needs 'candidates_z' in every record")
        if config.recommender == "terms":
            if config.terms is None:
                raise InvalidArgument("session", "a terms session's config needs its 'terms'")
            _check_term_history(history, terms_mod.TermPreferences(config.terms), config.n_variants)
        session = cls(model, state["prompt"], seed, config, on_model(stored.initial), negative=state["negative"],
                      history=history, noise_z=noise_z, store=store)
        if pool is not None:
            session._check_pool(pool)
            session._pool = pool
        session.repaired = stored.repaired
        return session

    # -- state -------------------------------------------------------------------------------

    @property
    def current(self) -> PromptEmbedding:
        """``[1, L, D]``: the current embedding ``C``."""
        return self._current

    @property
    def history(self) -> list[HistoryEntry]:
        """The choices so far, oldest first (a copy)."""
        return list(self._history)

    @property
    def round(self) -> int:
        """The round now shown: 1 + the number of choices applied."""
        return len(self._history) + 1

    @property
    def path(self) -> Path | None:
        return self._store.path if self._store is not None else None

    @property
    def session_seed(self) -> int:
        return self.config.session_seed if self.config.session_seed is not None else self.seed

    @property
    def noise(self) -> Tensor:
        """``[1, C, h, w]``: the initial noise of the current image."""
        if self._noise_z is None or self.config.noise_axes == 0:
            return self._base_noise
        return self._noise_subspace().noise(self._noise_z[None]).to(self._base_noise.device)

    def _state(self, history: list[HistoryEntry], current: PromptEmbedding, noise_z: np.ndarray | None) -> dict:
        from noise2art import __version__

        return {
            "format": store_mod.FORMAT,
            "schema_version": store_mod.SCHEMA_VERSION,
            "noise2art_version": __version__,
            "model_id": self.model.model_id,
            "embedding_shape": list(self.model.embedding_shape),
            "prompt": self.prompt,
            "negative": self.negative,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "round": len(history) + 1,
            "initial": store_mod.INITIAL_FILE,
            "initial_hash": self.initial.hash(),
            "current": store_mod.CURRENT_FILE,
            "current_hash": current.hash(),
            "noise_z": None if noise_z is None else np.asarray(noise_z, dtype=float).tolist(),
            "history": [e.record() for e in history],
            "updated_at": _now(),
        }

    # -- the pool and subspaces --------------------------------------------------------------

    def _check_pool(self, pool: CandidatePool) -> None:
        if not isinstance(pool, CandidatePool):
            raise InvalidArgument("pool", f"expected a CandidatePool, got {type(pool).__name__}")
        if pool.model_id != self.model.model_id or tuple(pool.cond.shape[1:]) != tuple(self.model.embedding_shape):
            raise InvalidArgument("pool", f"was encoded by model '{pool.model_id}', this session uses "
                                          f"'{self.model.model_id}'")
        if len(pool) < self.config.n_variants:
            raise InvalidArgument(
                "pool", f"holds {len(pool)} prompts, fewer than n_variants = {self.config.n_variants}"
            )

    def pool(self, callback: Callable[[int, int], object] | None = None) -> CandidatePool:
        """The session's candidate pool, encoded on first use (``callback(done, total)``)."""
        if self._pool is None:
            self._pool = build_pool(self.model, self.config, self.session_seed, callback)
        return self._pool

    def _embedding_subspace(self) -> EmbeddingSubspace:
        if self._subspace is None:
            axes, std = pca_axes(self.pool().cond, self.config.prompt_axes)
            device = self.initial.cond.device
            subspace = EmbeddingSubspace(self.initial.cond[0], axes.to(device), std.to(device), 1.0)
            if self.config.bo_radius is None:
                # Fixed sample coordinates (from the session seed) so the radius is reproducible.
                rng = np.random.default_rng([self.session_seed, _RADIUS_STREAM])
                z = rng.uniform(-1.0, 1.0, size=(64, self.config.prompt_axes))
                subspace.radius = calibrate_radius(subspace, float(self.config.similarity), z)
            else:
                subspace.radius = float(self.config.bo_radius)
            self._subspace = subspace
        return self._subspace

    def _noise_subspace(self) -> NoiseSubspace:
        if self._noise_space is None:
            seed = int(np.random.default_rng([self.session_seed, _NOISE_AXES_STREAM]).integers(2**62))
            base = self._base_noise[0]
            axes = noise_axes(tuple(base.shape), self.config.noise_axes, seed).to(base.device)
            self._noise_space = NoiseSubspace(base, axes, self.config.noise_scale)
        return self._noise_space

    def recommender(self) -> PreferenceGP:
        """The BO recommender, fitted to every choice in the history."""
        if self.config.recommender != "bo":
            raise InvalidArgument("recommender", "this session uses the random scheme; start it with recommender='bo'")
        gp = PreferenceGP(self.config.prompt_axes + self.config.noise_axes, beta=self.config.beta)
        for entry in self._history:
            gp.observe(entry.candidates_z, entry.index)
        return gp

    def term_preferences(self) -> terms_mod.TermPreferences:
        """The terms recommender's preferences, learnt from every choice in the history."""
        if self.config.recommender != "terms":
            raise InvalidArgument("recommender", "this session does not use the terms recommender; start it with "
                                                 "recommender='terms'")
        prefs = terms_mod.TermPreferences(self.config.terms)
        for entry in self._history:
            prefs.observe([terms_mod.Edit.from_record(e) for e in entry.candidate_edits], entry.index)
        return prefs

    @property
    def guess(self) -> list[str]:
        """The terms recommender's current guess: the terms appended to the prompt (a copy)."""
        return list(self._guess)

    # -- candidates --------------------------------------------------------------------------

    def _rng(self, round_: int) -> np.random.Generator:
        return np.random.default_rng([self.session_seed, round_])

    def candidates(self, pool_callback: Callable[[int, int], object] | None = None) -> Candidates:
        """This round's candidates (computed once per round; deterministic in session seed and round)."""
        if self._candidates is None or self._candidates.round != self.round:
            if self.config.recommender == "bo":
                self._candidates = self._bo_candidates(pool_callback)
            elif self.config.recommender == "terms":
                self._candidates = self._terms_candidates()
            else:
                self._candidates = self._random_candidates(pool_callback)
        return self._candidates

    def _random_candidates(self, pool_callback) -> Candidates:
        cfg = self.config
        rng = self._rng(self.round)
        pool = self.pool(pool_callback)
        L = pool.cond.shape[1]
        if not -L <= cfg.distance_row < L:
            raise InvalidArgument("distance_row", f"row {cfg.distance_row} is out of range for L = {L}")
        first = int(rng.integers(len(pool)))
        picks = farthest_point_selection(pool.cond[:, cfg.distance_row, :], cfg.n_variants, first)
        b = pool.cond[picks].to(self._current.cond.device, self._current.cond.dtype)  # [n, L, D]
        style_prompts = [_style_prompt(rng, self.prompt, cfg) for _ in picks]
        p = _encode_cond(self.model, style_prompts)  # [n, L, D]
        c = self._current.cond  # [1, L, D]
        target = float(cfg.similarity)
        if cfg.step_rule == "exact":
            first_move = space.slerp_to_similarity(c, b, target)
            second_move = space.slerp_to_similarity(first_move.embedding, p, target)
            final = space.slerp_to_similarity(c, second_move.embedding, target)
            cond = final.embedding
            t = torch.stack([first_move.t, second_move.t, final.t], dim=1).to(torch.float32)
        else:
            e1, t1 = self._reference_moves(c.expand_as(b), b, target)
            cond, t2 = self._reference_moves(e1, p, target)
            t = torch.stack([t1, t2, torch.full_like(t1, math.nan)], dim=1)
        sim = space.similarity(c, cond).detach().to(torch.float32).cpu()
        embedding = self._current.with_tensors(
            cond.detach(), prompts=[f"feedback round {self.round} candidate {i + 1}" for i in range(len(picks))]
        )
        return Candidates(self.round, embedding, sim, target, t.detach().cpu(), [pool.prompts[i] for i in picks],
                          style_prompts)

    def _reference_moves(self, a: Tensor, b: Tensor, target: float) -> tuple[Tensor, Tensor]:
        """The reference's step per batch element: ``slerp(a_i, b_i, (1-target)/(1-cos(row)))``.

        ``t`` is not clamped (it extrapolates past ``b`` when ``cos > target``); an
        infinite ``t`` (that row of ``a`` and ``b`` coincide) becomes 0, where the
        reference would produce NaN.
        """
        t = space.reference_step_t(a, b, target, row=self.config.distance_row).to(torch.float32)
        t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        moved = torch.stack([space.slerp(a[i], b[i], float(t[i])) for i in range(a.shape[0])])
        return moved, t.cpu()

    def _bo_candidates(self, pool_callback) -> Candidates:
        cfg = self.config
        rng = self._rng(self.round)
        self.pool(pool_callback)
        subspace = self._embedding_subspace()
        z = self.recommender().propose(cfg.n_variants, rng)
        cond = subspace.embed(z[:, :cfg.prompt_axes]).to(self._current.cond.device, self._current.cond.dtype)
        noise = None
        if cfg.noise_axes:
            noise = self._noise_subspace().noise(z[:, cfg.prompt_axes:]).to(self._base_noise.device)
        sim = space.similarity(self._current.cond, cond).detach().to(torch.float32).cpu()
        embedding = self._current.with_tensors(
            cond, prompts=[f"feedback round {self.round} bo candidate {i + 1}" for i in range(cfg.n_variants)]
        )
        labels = [f"bo z[{', '.join(f'{v:+.2f}' for v in row[:3])}, ...]" for row in z]
        t = torch.full((cfg.n_variants, 3), math.nan)
        return Candidates(self.round, embedding, sim, None, t, labels, [""] * cfg.n_variants, z=z, noise=noise)

    def _terms_candidates(self) -> Candidates:
        cfg = self.config
        prefs = self.term_preferences()
        edits = prefs.propose(self._guess, cfg.n_variants, self._rng(self.round))
        guesses = [prefs.apply(self._guess, e) for e in edits]
        texts = [terms_mod.compose(self.prompt, g) for g in guesses]
        cond = _encode_cond(self.model, texts).to(self._current.cond.device, self._current.cond.dtype)
        sim = space.similarity(self._current.cond, cond).detach().to(torch.float32).cpu()
        embedding = self._current.with_tensors(cond, prompts=texts)
        t = torch.full((cfg.n_variants, 3), math.nan)
        return Candidates(self.round, embedding, sim, None, t, [e.label() for e in edits], texts,
                          edits=edits, guesses=guesses)

    # -- rendering ---------------------------------------------------------------------------

    def variants(self, callback: StepCallback | None = None,
                 pool_callback: Callable[[int, int], object] | None = None) -> Variants:
        """Render the current image and this round's candidates in ONE batched sampling call.

        Args:
            callback: denoising progress ``callback(step, total, latents)``.
            pool_callback: ``(done, total)`` while the pool is encoded (first round only).

        Returns:
            `Variants`: images ``[1 + n, 3, H, W]``, the current image first.
        """
        start = time.perf_counter()
        cands = self.candidates(pool_callback)
        embedding = PromptEmbedding.cat([self._current, cands.embedding])
        if cands.noise is None:
            latents = self._base_noise.expand(len(embedding), *self._base_noise.shape[1:])
        else:
            latents = torch.cat([self.noise, cands.noise.to(self._base_noise.dtype)])
        with torch.no_grad():
            lat = self.model.sample(embedding, latents=latents, pairing="zip",
                                    batch_size=self.config.batch_size or len(embedding), callback=callback,
                                    **self.config.sample_kwargs())
        images = self._decode(lat)
        return Variants(cands, images, time.perf_counter() - start)

    def _decode(self, latents: Tensor) -> Tensor:
        """Images in the model's dtype (the decoder always runs in it)."""
        with torch.no_grad():
            return self.model.decode(latents)

    def render_current(self, callback: StepCallback | None = None) -> Tensor:
        """``[1, 3, H, W]``: the current embedding on the session's noise (as `variants` renders it)."""
        with torch.no_grad():
            lat = self.model.sample(self._current, latents=self.noise, callback=callback, **self.config.sample_kwargs())
        return self._decode(lat)

    def render_on_seeds(self, seeds: Sequence[int], callback: StepCallback | None = None) -> Tensor:
        """``[S, 3, H, W]``: the current embedding rendered on other seeds (does it hold beyond one noise?)."""
        seeds = V.check_seeds(seeds)
        with torch.no_grad():
            lat = self.model.sample(self._current, seeds, batch_size=self.config.batch_size, callback=callback,
                                    **self.config.sample_kwargs())
        return self._decode(lat)

    # -- choices -----------------------------------------------------------------------------

    def choose(self, index: int, strength: float = 0.5) -> HistoryEntry:
        """Move ``C`` toward candidate ``index`` (0-based): ``C = slerp(C, chosen, strength)``.

        The choice is written to the session folder (when there is one) before this
        returns, so its result is never shown before it is saved. Bad input raises
        before anything changes.

        Raises:
            InvalidArgument("index" | "strength", ...)
        """
        n = self.config.n_variants
        if not _is_int(index) or not 0 <= int(index) < n:
            raise InvalidArgument(
                "index", f"must be an integer in [0, {n - 1}] (one of the {n} candidates), got {index!r}"
            )
        index = int(index)
        strength = _check_strength(strength)
        cands = self.candidates()
        chosen = cands.embedding[index]
        previous = self._current
        cond = space.slerp(previous.cond, chosen.cond, strength)
        updated = previous.with_tensors(cond, prompts=[f"feedback round {self.round}: {cands.sources[index]}"])
        noise_z_updated = None
        if cands.z is not None and self._noise_z is not None:
            noise_z_updated = (1.0 - strength) * self._noise_z + strength * cands.z[index, self.config.prompt_axes:]
        entry = HistoryEntry(
            round=self.round, index=index, strength=strength, previous=previous, chosen=chosen, updated=updated,
            similarity=float(cands.similarity[index]), source=cands.sources[index],
            candidates_z=None if cands.z is None else cands.z.copy(),
            noise_z_previous=None if self._noise_z is None else self._noise_z.copy(),
            noise_z_updated=noise_z_updated,
            candidate_edits=None if cands.edits is None else [e.record() for e in cands.edits],
            guess_previous=None if cands.guesses is None else list(self._guess),
            guess_updated=None if cands.guesses is None else list(cands.guesses[index]),
            time=_now(),
        )
        history = self._history + [entry]
        if self._store is not None:
            state = self._state(history, updated, noise_z_updated if noise_z_updated is not None else self._noise_z)
            self._store.commit_choice(state, entry.record(),
                                      {"previous": previous, "chosen": chosen, "updated": updated}, updated)
        self._history = history
        self._current = updated
        if noise_z_updated is not None:
            self._noise_z = noise_z_updated
        if entry.guess_updated is not None:
            self._guess = list(entry.guess_updated)
        self._candidates = None
        return entry

    def undo(self) -> HistoryEntry:
        """Take back the last choice (written to the session folder first); returns the undone entry."""
        if not self._history:
            raise InvalidArgument("undo", "there is no choice to undo")
        entry = self._history[-1]
        history = self._history[:-1]
        noise_z = entry.noise_z_previous if entry.noise_z_previous is not None else self._noise_z
        if self._store is not None:
            self._store.commit_undo(self._state(history, entry.previous, noise_z),
                                    store_mod.history_files(entry.round), entry.previous)
        self._history = history
        self._current = entry.previous
        self._noise_z = noise_z
        if entry.guess_previous is not None:
            self._guess = list(entry.guess_previous)
        self._candidates = None
        return entry

    def export(self, path: str | os.PathLike) -> Path:
        """Save the current embedding as ``.safetensors`` (atomically); returns the path."""
        return self._current.save(path)

    # -- map ---------------------------------------------------------------------------------

    def map(self, method: str = "pca") -> FeedbackMap:
        """2-D coordinates of the path of ``C``, the chosen candidates and this round's candidates.

        ``method="pca"``: principal components (``torch.linalg.svd``) of the flattened rows
        ``1..L-1`` of all those embeddings, so the picture shows the directions in which
        they differ most.
        """
        if method != "pca":
            raise InvalidArgument("method", f"must be 'pca', got {method!r}")
        cands = self.candidates()
        path = [self.initial] + [e.updated for e in self._history]
        chosen = [e.chosen for e in self._history]
        cond = torch.cat([e.cond for e in path] + [e.cond for e in chosen] + [cands.embedding.cond])
        x = cond[:, 1:, :].reshape(cond.shape[0], -1).to(torch.float32).cpu()
        x = x - x.mean(dim=0, keepdim=True)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        k = min(2, vh.shape[0])
        coords = torch.zeros(x.shape[0], 2)
        coords[:, :k] = x @ vh[:k].T
        var = s ** 2
        total = float(var.sum())
        explained = [float(var[i]) / total if total > 0 and i < len(var) else 0.0 for i in range(2)]
        labels = ["start"] + [str(e.round) for e in self._history]
        labels[-1] = "current"
        kinds = ["path"] * len(path)
        labels += [f"c{e.round}" for e in self._history] + [f"v{i + 1}" for i in range(len(cands))]
        kinds += ["chosen"] * len(chosen) + ["candidate"] * len(cands)
        arrows = [(i, i + 1) for i in range(len(path) - 1)]
        return FeedbackMap(coords.numpy(), labels, kinds, arrows, (explained[0], explained[1]))


# --------------------------------------------------------------------------- drawing


_COLOURS = {"path": (0, 114, 178), "chosen": (213, 94, 0), "candidate": (0, 158, 115)}


def save_map_png(fmap: FeedbackMap, path: str | os.PathLike, size: int = 512) -> Path:
    """Draw a `FeedbackMap` with Pillow (points, labels, arrows along the path); atomic write."""
    from PIL import Image, ImageDraw, ImageFont

    if not _is_int(size) or size < 64:
        raise InvalidArgument("size", f"must be an integer >= 64, got {size!r}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidArgument("path", f"the map is written as .png, got '{path.name}'")
    pts = np.asarray(fmap.points, dtype=np.float64).reshape(-1, 2)
    margin = 40
    lo, hi = pts.min(axis=0) if len(pts) else np.zeros(2), pts.max(axis=0) if len(pts) else np.ones(2)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)

    def to_px(p):
        q = (p - lo) / span
        return margin + q[0] * (size - 2 * margin), size - margin - q[1] * (size - 2 * margin)

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((6, 4), f"PCA: {fmap.explained[0]:.0%} / {fmap.explained[1]:.0%} of the variance", fill=(90, 90, 90),
              font=font)
    for a, b in fmap.arrows:
        (x0, y0), (x1, y1) = to_px(pts[a]), to_px(pts[b])
        draw.line([(x0, y0), (x1, y1)], fill=_COLOURS["path"], width=2)
        angle = math.atan2(y1 - y0, x1 - x0)
        for side in (-0.45, 0.45):
            draw.line([(x1, y1), (x1 - 10 * math.cos(angle + side), y1 - 10 * math.sin(angle + side))],
                      fill=_COLOURS["path"], width=2)
    for p, label, kind in zip(pts, fmap.labels, fmap.kinds):
        x, y = to_px(p)
        r = 6 if label == "current" else 4
        colour = _COLOURS.get(kind, (0, 0, 0))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0) if label == "current" else None)
        draw.text((x + 6, y - 6), label, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
