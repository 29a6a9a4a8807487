"""A feedback session: the current embedding, one hidden noise, choices, undo, persistence.

The session renders and records; which candidates a round shows is its scheme's part
(`schemes`, called only through the `schemes.Scheme` protocol).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noise2art import space
from noise2art.engine import validation as V
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.sampling import StepCallback
from noise2art.errors import InvalidArgument
from noise2art.methods.feedback.candidates import Candidates, Variants
from noise2art.methods.feedback.config import FeedbackConfig, config_from_state, is_int, is_number
from noise2art.methods.feedback.map import FeedbackMap, pca_map
from noise2art.methods.feedback.pool import CandidatePool, build_pool
from noise2art.methods.feedback.schemes import SCHEMES, Scheme, SchemeContext
from noise2art.methods.feedback.store import (
    CURRENT_FILE,
    FORMAT,
    INITIAL_FILE,
    SCHEMA_VERSION,
    SessionStore,
    history_files,
)
from noise2art.methods.vocabulary import default_term_groups

__all__ = ["FeedbackSession", "HistoryEntry"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_strength(strength) -> float:
    if not is_number(strength) or not math.isfinite(float(strength)) or not 0.0 <= float(strength) <= 1.0:
        raise InvalidArgument("strength", f"must be a number in [0, 1], got {strength!r}")
    return float(strength)


@dataclass
class HistoryEntry:
    """One choice: the embedding before it, the candidate picked and the embedding after it.

    ``round`` is the round the choice was made in (1 for the first); ``index`` the
    candidate (0-based); ``similarity`` the candidate's achieved similarity to ``previous``.
    ``scheme_state`` is the scheme's JSON object for this choice (`schemes.Scheme.state`;
    ``{}`` for the random scheme).
    """

    round: int
    index: int
    strength: float
    previous: PromptEmbedding
    chosen: PromptEmbedding
    updated: PromptEmbedding
    similarity: float
    source: str = ""
    scheme_state: dict = field(default_factory=dict)
    time: str = ""

    def record(self) -> dict:
        """The JSON record of ``session.json`` (file names per `store.history_files`)."""
        return {
            "round": self.round, "index": self.index, "strength": self.strength,
            "similarity": self.similarity, "source": self.source,
            **history_files(self.round),
            "updated_hash": self.updated.hash(),
            "scheme_state": self.scheme_state,
            "time": self.time,
        }


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
                 negative: str = "", history: Sequence[HistoryEntry] = (),
                 store: SessionStore | None = None, pool: CandidatePool | None = None):
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
        self._candidates: Candidates | None = None
        context = SchemeContext(model, prompt, config, initial, self._base_noise, self.session_seed, self.pool)
        self._scheme: Scheme = SCHEMES[config.recommender](context)
        self._scheme.restore([e.scheme_state for e in self._history])
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
            session._store = SessionStore.create(path, session._state(session._history, initial), initial)
        return session

    @classmethod
    def resume(cls, model, path: str | os.PathLike, *, pool: CandidatePool | None = None) -> FeedbackSession:
        """Continue the session persisted in ``path`` (after a quit or a crash).

        Folders of schema version 1 resume too (`store.read_state` converts them); the
        next choice or undo rewrites ``session.json`` in the current version.

        Raises:
            InvalidArgument("model", ...): the session was made with another model.
            InvalidArgument("session", ...): the folder is corrupted or of another schema.
        """
        store = SessionStore(path)
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
                scheme_state=r["scheme_state"], time=str(r.get("time", "")),
            ))
        session = cls(model, state["prompt"], seed, config, on_model(stored.initial), negative=state["negative"],
                      history=history, store=store)
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
    def scheme(self) -> Scheme:
        """The session's candidate scheme (`schemes.SCHEMES[config.recommender]`)."""
        return self._scheme

    @property
    def noise(self) -> Tensor:
        """``[1, C, h, w]``: the initial noise of the current image."""
        return self._scheme.noise()

    def _state(self, history: list[HistoryEntry], current: PromptEmbedding) -> dict:
        from noise2art import __version__

        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "noise2art_version": __version__,
            "model_id": self.model.model_id,
            "embedding_shape": list(self.model.embedding_shape),
            "prompt": self.prompt,
            "negative": self.negative,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "round": len(history) + 1,
            "initial": INITIAL_FILE,
            "initial_hash": self.initial.hash(),
            "current": CURRENT_FILE,
            "current_hash": current.hash(),
            "history": [e.record() for e in history],
            "updated_at": _now(),
        }

    # -- the pool ----------------------------------------------------------------------------

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

    # -- candidates and rendering ------------------------------------------------------------

    def candidates(self, pool_callback: Callable[[int, int], object] | None = None) -> Candidates:
        """This round's candidates (computed once per round; deterministic in session seed and round)."""
        if self._candidates is None or self._candidates.round != self.round:
            rng = np.random.default_rng([self.session_seed, self.round])
            self._candidates = self._scheme.propose(self.round, self._current, rng, pool_callback)
        return self._candidates

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
                                    batch_size=self.config.sampling.batch_size or len(embedding), callback=callback,
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
            lat = self.model.sample(self._current, seeds, batch_size=self.config.sampling.batch_size, callback=callback,
                                    **self.config.sample_kwargs())
        return self._decode(lat)

    # -- choices -----------------------------------------------------------------------------

    def choose(self, index: int, strength: float = 0.5) -> HistoryEntry:
        """Move ``C`` toward candidate ``index`` (0-based): ``C = slerp(C, chosen, strength)``.

        The choice is written to the session folder (when there is one) before this
        returns, so its result is never shown before it is saved. Bad input raises
        before anything changes, and so does a failed write.

        Raises:
            InvalidArgument("index" | "strength", ...)
        """
        n = self.config.n_variants
        if not is_int(index) or not 0 <= int(index) < n:
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
        before = self._scheme.state()
        entry = HistoryEntry(
            round=self.round, index=index, strength=strength, previous=previous, chosen=chosen, updated=updated,
            similarity=float(cands.similarity[index]), source=cands.sources[index],
            scheme_state=self._scheme.observe(cands, index, strength), time=_now(),
        )
        history = self._history + [entry]
        if self._store is not None:
            try:
                self._store.commit_choice(self._state(history, updated), entry.record(),
                                          {"previous": previous, "chosen": chosen, "updated": updated}, updated)
            except BaseException:
                self._scheme.restore(before)  # the choice is not saved, so the scheme has not seen it
                raise
        self._history = history
        self._current = updated
        self._candidates = None
        return entry

    def undo(self) -> HistoryEntry:
        """Take back the last choice (written to the session folder first); returns the undone entry."""
        if not self._history:
            raise InvalidArgument("undo", "there is no choice to undo")
        entry = self._history[-1]
        history = self._history[:-1]
        if self._store is not None:
            self._store.commit_undo(self._state(history, entry.previous),
                                    history_files(entry.round), entry.previous)
        self._history = history
        self._current = entry.previous
        self._scheme.restore([e.scheme_state for e in history])
        self._candidates = None
        return entry

    def export(self, path: str | os.PathLike) -> Path:
        """Save the current embedding as ``.safetensors`` (atomically); returns the path."""
        return self._current.save(path)

    def map(self, method: str = "pca") -> FeedbackMap:
        """2-D coordinates of the path of ``C``, the chosen candidates and this round's candidates.

        ``method="pca"``: principal components of the flattened rows ``1..L-1`` of all
        those embeddings, so the picture shows the directions in which they differ most
        (`map.pca_map`; `noise2art.plot.save_map_png` draws it).
        """
        if method != "pca":
            raise InvalidArgument("method", f"must be 'pca', got {method!r}")
        cands = self.candidates()
        path = [self.initial] + [e.updated for e in self._history]
        return pca_map(path, [e.chosen for e in self._history], [e.round for e in self._history], cands.embedding)
