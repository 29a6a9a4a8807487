"""A feedback session's folder: the state a crash must not lose, written so that it never tears.

Layout (schema version 2)::

    DIR/session.json                         the state; the commit point of every change
    DIR/initial.safetensors                  the embedding of the start prompt
    DIR/current.safetensors                  the current embedding (an export copy)
    DIR/history/0001_previous.safetensors    choice 1: the embedding before it,
    DIR/history/0001_chosen.safetensors      the candidate picked,
    DIR/history/0001_updated.safetensors     and the embedding after it
    DIR/history/0002_...

``session.json`` holds ``format``, ``schema_version``, ``model_id``, ``embedding_shape``,
``prompt``, ``negative``, ``seed``, ``config`` (a ``FeedbackConfig`` as a dict),
``round``, ``initial`` / ``initial_hash``, ``current`` / ``current_hash`` and
``history``: one record per choice with ``round``, ``index``, ``strength``,
``similarity``, ``source``, the three file names, ``updated_hash``, ``time`` and
``scheme_state``, the scheme's object for the choice (`schemes.base`). File names in it
are relative to ``DIR``.

Schema version 1 kept each scheme's data in fields of its own (the top-level ``noise_z``;
per record ``candidates_z`` / ``noise_z_previous`` / ``noise_z_updated`` for ``bo``,
``candidate_edits`` / ``guess_previous`` / ``guess_updated`` for ``terms``, null where
unused). `read_state` converts such a file to version 2 in memory; the session's next
write stores version 2. The ``*_previous`` fields and ``noise_z`` are dropped: each
repeats the record before it.

Write order. Every file is written to a temporary name and renamed into place, new
embedding files before the JSON, and the JSON last: a crash at any point leaves the
previous ``session.json`` with every file it names intact (a choice overwrites only
``history/<its round>_*`` files, which the committed JSON does not name yet). The current
embedding is by definition the last record's ``updated`` (or ``initial``);
``current.safetensors`` is a copy for users, checked against ``current_hash`` on load and
rewritten if a crash left it one step ahead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from noise2art.engine.embedding import PromptEmbedding
from noise2art.errors import InvalidArgument
from noise2art.files import write_text

__all__ = [
    "CURRENT_FILE",
    "FORMAT",
    "HISTORY_DIR",
    "INITIAL_FILE",
    "SCHEMA_VERSION",
    "STATE_FILE",
    "SessionStore",
    "StoredEntry",
    "StoredSession",
    "history_files",
    "read_state",
]

FORMAT = "noise2art.feedback-session"
SCHEMA_VERSION = 2
STATE_FILE = "session.json"
INITIAL_FILE = "initial.safetensors"
CURRENT_FILE = "current.safetensors"
HISTORY_DIR = "history"
HISTORY_KINDS = ("previous", "chosen", "updated")


def history_files(round_: int) -> dict[str, str]:
    """Relative file names of one choice's embeddings: ``{"previous": "history/0001_previous.safetensors", ...}``."""
    return {kind: f"{HISTORY_DIR}/{round_:04d}_{kind}.safetensors" for kind in HISTORY_KINDS}


@dataclass
class StoredEntry:
    """One history record of ``session.json`` with its three embeddings loaded."""

    record: dict
    previous: PromptEmbedding
    chosen: PromptEmbedding
    updated: PromptEmbedding


@dataclass
class StoredSession:
    """A session folder read back and checked."""

    path: Path
    state: dict
    initial: PromptEmbedding
    current: PromptEmbedding
    entries: list[StoredEntry] = field(default_factory=list)
    repaired: bool = False  # current.safetensors was missing or stale and has been rewritten


def _corrupted(path: Path, message: str) -> InvalidArgument:
    return InvalidArgument("session", f"'{path}' is not a usable feedback session: {message}")


def _write_json(path: Path, obj: dict) -> None:
    """Write JSON to a temporary name, flush it to disk, then rename it into place."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def _relative(folder: Path, name: object, key: str) -> Path:
    """A file name from the JSON, which must stay inside the session folder."""
    if not isinstance(name, str) or not name:
        raise _corrupted(folder, f"'{key}' must be a file name, got {name!r}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise _corrupted(folder, f"'{key}' names a file outside the session folder: {name!r}")
    return folder.joinpath(*pure.parts)


_TYPES = {
    "model_id": str, "prompt": str, "negative": str, "seed": int, "config": dict, "round": int,
    "initial": str, "initial_hash": str, "current": str, "current_hash": str, "history": list,
}
_ENTRY_TYPES = {
    "round": int, "index": int, "strength": (int, float), "previous": str, "chosen": str, "updated": str,
    "updated_hash": str,
}


def read_state(path: str | os.PathLike) -> dict:
    """Read and check ``DIR/session.json`` without loading any tensor (cheap: before a model loads).

    Raises:
        InvalidArgument("session", ...): no session there, unreadable JSON, another format
        or schema version, a missing or mistyped field, history rounds out of sequence.
    """
    folder = Path(path)
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise InvalidArgument("session", f"'{folder}' holds no feedback session (no {STATE_FILE})")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupted(folder, f"{STATE_FILE} is not readable JSON ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _corrupted(folder, f"{STATE_FILE} is not a {FORMAT} file")
    version = state.get("schema_version")
    if version not in (1, SCHEMA_VERSION) or isinstance(version, bool):
        raise _corrupted(
            folder, f"schema version {version!r}; this version of noise2art reads versions 1 and {SCHEMA_VERSION}"
        )
    for key, kind in _TYPES.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise _corrupted(folder, f"field '{key}' is missing or not a {kind.__name__}")
    for k, record in enumerate(state["history"], start=1):
        if not isinstance(record, dict):
            raise _corrupted(folder, f"history record {k} is not an object")
        for key, kind in _ENTRY_TYPES.items():
            value = record.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise _corrupted(folder, f"history record {k}: field '{key}' is missing or mistyped")
        if record["round"] != k:
            raise _corrupted(folder, f"history record {k} says round {record['round']}")
    if state["round"] != len(state["history"]) + 1:
        raise _corrupted(folder, f"round {state['round']} does not follow {len(state['history'])} choices")
    if version == 1:
        state = _from_version_1(state)
    for k, record in enumerate(state["history"], start=1):
        if not isinstance(record.get("scheme_state"), dict):
            raise _corrupted(folder, f"history record {k}: field 'scheme_state' is missing or not an object")
    return state


# Schema version 1's per-scheme record fields -> the keys of the scheme's object in version 2.
_VERSION_1_FIELDS = {
    "random": {},
    "bo": {"candidates_z": "candidates_z", "noise_z_updated": "noise_z"},
    "terms": {"candidate_edits": "candidate_edits", "guess_updated": "guess"},
}
_VERSION_1_RECORD_FIELDS = ("candidates_z", "noise_z_previous", "noise_z_updated", "candidate_edits",
                            "guess_previous", "guess_updated")


def _from_version_1(state: dict) -> dict:
    """A schema-1 state as version 2: each record's scheme fields moved into its ``scheme_state``."""
    fields = _VERSION_1_FIELDS.get(state["config"].get("recommender", "random"), {})
    history = []
    for record in state["history"]:
        new = {k: v for k, v in record.items() if k not in _VERSION_1_RECORD_FIELDS}
        # The schemes that learn keep the pick with the round's data (the random one learns nothing).
        scheme_state = {"index": record["index"]} if fields else {}
        scheme_state.update({key: record.get(old) for old, key in fields.items()})
        new["scheme_state"] = scheme_state
        history.append(new)
    converted = {k: v for k, v in state.items() if k != "noise_z"}
    converted.update(schema_version=SCHEMA_VERSION, history=history)
    return converted


class SessionStore:
    """Reads and writes one session folder; see the module docstring for the layout and write order."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- writing ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, state: dict, initial: PromptEmbedding) -> SessionStore:
        """Start a session folder (refusing one that already holds a session)."""
        store = cls(path)
        if (store.path / STATE_FILE).exists():
            raise InvalidArgument("session", f"'{store.path}' already holds a session; resume it instead")
        if store.path.exists() and not store.path.is_dir():
            raise InvalidArgument("session", f"'{store.path}' exists and is not a folder")
        store.path.mkdir(parents=True, exist_ok=True)
        initial.save(store.path / INITIAL_FILE)
        initial.save(store.path / CURRENT_FILE)
        _write_json(store.path / STATE_FILE, state)
        return store

    def commit_choice(self, state: dict, record: dict, embeddings: dict[str, PromptEmbedding],
                      current: PromptEmbedding) -> None:
        """Write one choice: its three embeddings, the current copy, then ``session.json``."""
        (self.path / HISTORY_DIR).mkdir(exist_ok=True)
        for kind in HISTORY_KINDS:
            embeddings[kind].save(_relative(self.path, record[kind], kind))
        current.save(self.path / CURRENT_FILE)
        _write_json(self.path / STATE_FILE, state)

    def commit_undo(self, state: dict, removed: dict, current: PromptEmbedding) -> None:
        """Write an undo: the current copy, ``session.json``, then delete the undone choice's files."""
        current.save(self.path / CURRENT_FILE)
        _write_json(self.path / STATE_FILE, state)
        for kind in HISTORY_KINDS:
            try:
                _relative(self.path, removed[kind], kind).unlink()
            except (FileNotFoundError, KeyError):
                pass  # an orphan from a crash is harmless; a missing one is already gone

    # -- reading ---------------------------------------------------------------------------

    def _load(self, key: str, name: str, model_id: str, shape: tuple[int, int]) -> PromptEmbedding:
        file = _relative(self.path, name, key)
        if not file.is_file():
            raise _corrupted(self.path, f"the file '{name}' ({key}) is missing")
        try:
            return PromptEmbedding.load(file, model_id=model_id, shape=shape)
        except InvalidArgument as exc:
            raise _corrupted(self.path, f"'{name}' ({key}): {exc}") from None

    def load(self, model_id: str, shape: tuple[int, int]) -> StoredSession:
        """Read the whole session for a model, checking every file the JSON names.

        Raises:
            InvalidArgument("model", ...): the session was made with another model (both named).
            InvalidArgument("session", ...): a corrupted folder (see `read_state`; missing or
            unreadable embedding files; an embedding whose hash differs from the record).
        """
        state = read_state(self.path)
        if state["model_id"] != model_id:
            raise InvalidArgument(
                "model", f"the session in '{self.path}' was made with model '{state['model_id']}', "
                         f"but the loaded model is '{model_id}'",
            )
        if list(state.get("embedding_shape") or shape) != list(shape):
            raise InvalidArgument(
                "model", f"the session in '{self.path}' holds embeddings of shape {state.get('embedding_shape')}, "
                         f"the loaded model '{model_id}' makes {list(shape)}",
            )
        initial = self._load("initial", state["initial"], model_id, shape)
        if initial.hash() != state["initial_hash"]:
            raise _corrupted(self.path, f"'{state['initial']}' does not match its recorded hash")
        entries = []
        for record in state["history"]:
            loaded = {kind: self._load(kind, record[kind], model_id, shape) for kind in HISTORY_KINDS}
            if loaded["updated"].hash() != record["updated_hash"]:
                raise _corrupted(self.path, f"'{record['updated']}' does not match its recorded hash")
            entries.append(StoredEntry(record, **loaded))
        current = entries[-1].updated if entries else initial
        if current.hash() != state["current_hash"]:
            raise _corrupted(self.path, "current_hash does not match the last choice's embedding")
        repaired = False
        current_file = _relative(self.path, state["current"], "current")
        try:
            on_disk = PromptEmbedding.load(current_file, model_id=model_id, shape=shape)
            stale = on_disk.hash() != state["current_hash"]
        except InvalidArgument:
            stale = True
        if stale:
            # A crash between renaming current.safetensors and committing session.json, or
            # a deleted copy: the committed state is the truth, so put the copy back.
            current.save(current_file)
            repaired = True
        return StoredSession(self.path, state, initial, current, entries, repaired)
