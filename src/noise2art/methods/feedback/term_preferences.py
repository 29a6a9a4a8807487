"""The term preferences of the ``terms`` feedback scheme: which terms the user's choices favour.

The random scheme of iterative feedback (docs/feedback.md) proposes directions that know
nothing of the choices so far, and the GP-UCB scheme (`preference_gp`) learns in a
subspace whose axes mean nothing to the model. This one learns in the space the model
was trained on: text. It keeps a *guess* ``G``, a set of terms (say "at sunset", "an oil
painting") that, appended to the user's prompt, describe what the user is steering
toward, and a preference score per term learnt from every choice:

* a round's candidates are the guess unchanged ("keep") and ``n - 1`` *edits* of it:
  add a term, replace a term by another of its group (terms of one group exclude each
  other: one time of day, one style), or drop a term. Candidate ``i``'s embedding is the
  text encoder's states of ``prompt + ", " + ", ".join(G_i)``, so its image shows the
  edit plainly, and the user's pick is a clean comparison of edits;
* the choice moves the current embedding as in every scheme,
  ``C <- slerp(C, chosen, s)``, and makes the chosen candidate's terms the new guess: ``C``
  follows the guess at the pace the user's strength sets;
* preferences: each term holds a Beta posterior over "the user wants this term"
  (``Beta(1 + wins, 1 + losses)``). A picked add/replace counts a win for its new term
  (and a loss for the term it replaced); every edit shown but not picked counts
  ``loss_weight`` of a loss for its new term (it lost to another edit: weak evidence);
  picking "keep" counts a full loss for every edit's new term (each was compared with no
  change and lost) and half a win for every term a drop edit offered to remove; a
  picked drop counts a loss for the dropped term;
* proposals: Thompson sampling. Draw ``theta_t`` from every term's posterior and value
  an edit by how much it raises the guess's sampled worth (``theta_new - theta_old``, an
  empty group worth 0.5, the prior mean). A round focuses on the group of the best
  edit and shows that group's best edits side by side (filling up with the best edits
  of other groups), so one pick compares the alternatives of a group directly. Terms
  never shown have a wide posterior and get tried; terms that lost sink; terms that won
  come back.

Every draw comes from the round's ``numpy.random.Generator``, so a session seed gives
the same candidates, and the preferences are a function of the history alone: undo and
resume rebuild them exactly (`schemes.terms` drives this through a session).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from noise2art.errors import InvalidArgument

__all__ = ["EDIT_KINDS", "Edit", "TermPreferences", "check_term_groups", "compose"]

EDIT_KINDS = ("keep", "add", "replace", "drop")
MAX_TERMS = 10_000


@dataclass(frozen=True)
class Edit:
    """One candidate's change of the guess.

    Attributes:
        kind: ``"keep"``, ``"add"``, ``"replace"`` or ``"drop"``.
        term: the term added (add, replace) or removed (drop); None for keep.
        old: the term replaced (replace only).
    """

    kind: str
    term: str | None = None
    old: str | None = None

    def record(self) -> list:
        """JSON form ``[kind, term, old]``."""
        return [self.kind, self.term, self.old]

    @classmethod
    def from_record(cls, value) -> Edit:
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and value[0] in EDIT_KINDS
                and all(v is None or isinstance(v, str) for v in value[1:])):
            raise InvalidArgument("session", f"an edit must be [kind, term, old] with kind in {EDIT_KINDS}, "
                                             f"got {value!r}")
        return cls(*value)

    def label(self) -> str:
        if self.kind == "keep":
            return "keep"
        if self.kind == "replace":
            return f"{self.old} -> {self.term}"
        return f"{'+' if self.kind == 'add' else '-'} {self.term}"


def check_term_groups(groups, name: str = "terms") -> dict[str, list[str]]:
    """``groups`` as ``{group: [term, ...]}`` of non-empty strings, each term in one group only."""
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidArgument(name, "must be a non-empty mapping of group name -> list of terms")
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for group, terms in groups.items():
        if not isinstance(group, str) or not group.strip():
            raise InvalidArgument(name, f"group names must be non-empty texts, got {group!r}")
        if isinstance(terms, str) or not isinstance(terms, Sequence) or not terms or not all(
            isinstance(t, str) and t.strip() and "," not in t for t in terms
        ):
            raise InvalidArgument(name, f"group {group!r} must be a non-empty list of non-empty texts without commas")
        for term in terms:
            if term in seen:
                raise InvalidArgument(name, f"term {term!r} is in groups {seen[term]!r} and {group!r}")
            seen[term] = group
        out[group] = list(terms)
    if len(seen) > MAX_TERMS:
        raise InvalidArgument(name, f"at most {MAX_TERMS} terms, got {len(seen)}")
    return out


def compose(prompt: str, terms: Sequence[str]) -> str:
    """The text of a guess: the user's prompt, then its terms, comma-joined."""
    return ", ".join([prompt, *terms]) if terms else prompt


class TermPreferences:
    """Beta posteriors over terms, learnt from "picked one of these edits" rounds.

    Args:
        groups: ``{group: [term, ...]}`` (`check_term_groups`); a guess holds at most one
            term per group.
        loss_weight: the loss counted for an edit shown but not picked, in [0, 1].
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], *, loss_weight: float = 0.5):
        self.groups = check_term_groups(groups)
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)) or not 0 <= loss_weight <= 1:
            raise InvalidArgument("loss_weight", f"must be a number in [0, 1], got {loss_weight!r}")
        self.loss_weight = float(loss_weight)
        self.terms = [t for terms in self.groups.values() for t in terms]
        self.index = {t: i for i, t in enumerate(self.terms)}
        self.group_of = {t: g for g, terms in self.groups.items() for t in terms}
        self.wins = np.zeros(len(self.terms))
        self.losses = np.zeros(len(self.terms))

    # -- guesses -------------------------------------------------------------------------

    def check_guess(self, guess: Sequence[str]) -> list[str]:
        """``guess`` as a list of known terms, at most one per group (else `InvalidArgument`)."""
        groups = set()
        for term in guess:
            if term not in self.index:
                raise InvalidArgument("guess", f"unknown term {term!r}")
            if self.group_of[term] in groups:
                raise InvalidArgument("guess", f"two terms of group {self.group_of[term]!r}")
            groups.add(self.group_of[term])
        return list(guess)

    def apply(self, guess: Sequence[str], edit: Edit) -> list[str]:
        """The guess after ``edit``: an added term goes last, a replacing term takes the old one's place.

        Why this order: the embedding moves by slerp row by row, so texts that share a
        prefix mix cleanly; an edit that shifted every later token would blend unrelated
        tokens on the way.
        """
        terms = list(guess)
        if edit.kind == "add":
            terms.append(edit.term)
        elif edit.kind == "replace":
            terms[terms.index(edit.old)] = edit.term
        elif edit.kind == "drop":
            terms.remove(edit.term)
        return terms

    # -- learning ------------------------------------------------------------------------

    def observe(self, edits: Sequence[Edit], chosen: int) -> None:
        """Count one round: ``edits`` shown (as candidates), of which index ``chosen`` was picked."""
        if isinstance(chosen, bool) or not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < len(edits):
            raise InvalidArgument("chosen", f"must be an index in [0, {len(edits) - 1}], got {chosen!r}")
        for edit in edits:
            if edit.term is not None and edit.term not in self.index:
                raise InvalidArgument("edits", f"unknown term {edit.term!r}")
        pick = edits[chosen]
        for i, edit in enumerate(edits):
            if edit.kind == "keep":
                continue
            k = self.index[edit.term]
            if i == chosen:
                if edit.kind == "drop":
                    self.losses[k] += 1.0
                else:
                    self.wins[k] += 1.0
                    if edit.kind == "replace" and edit.old in self.index:
                        self.losses[self.index[edit.old]] += 1.0
            elif pick.kind == "keep":
                # Compared with no change and lost (or, for a drop, the term was kept).
                if edit.kind == "drop":
                    self.wins[k] += 0.5
                else:
                    self.losses[k] += 1.0
            elif edit.kind != "drop":
                self.losses[k] += self.loss_weight

    def mean(self) -> np.ndarray:
        """``[T]`` posterior mean of every term (in `terms` order)."""
        return (1.0 + self.wins) / (2.0 + self.wins + self.losses)

    # -- proposals -----------------------------------------------------------------------

    def propose(self, guess: Sequence[str], n: int, rng: np.random.Generator) -> list[Edit]:
        """``n`` edits: "keep" first, then ``n - 1`` by one Thompson draw, with distinct new terms.

        The round focuses on one group: the one whose best edit has the highest sampled
        value. Its best edits come first (so the pick compares, say, the times of day
        with each other and with no change: one round settles a whole group), and the
        best edits of other groups fill the slots it leaves.

        Raises:
            InvalidArgument("n_variants", ...): fewer possible edits than ``n - 1``.
        """
        guess = self.check_guess(guess)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument("n_variants", f"must be an integer >= 1, got {n!r}")
        theta = rng.beta(1.0 + self.wins, 1.0 + self.losses)  # [T]
        held = {self.group_of[t]: t for t in guess}
        options: list[tuple[float, Edit]] = []
        for k, term in enumerate(self.terms):
            if term in held.values():
                options.append((0.5 - theta[k], Edit("drop", term)))
                continue
            old = held.get(self.group_of[term])
            if old is None:
                options.append((theta[k] - 0.5, Edit("add", term)))
            else:
                options.append((theta[k] - theta[self.index[old]], Edit("replace", term, old)))
        if len(options) < n - 1:
            raise InvalidArgument("n_variants", f"the {len(self.terms)} terms allow {len(options)} edits, "
                                                f"fewer than n_variants - 1 = {n - 1}")
        # Stable sort on the negated value: ties (rare with continuous draws) keep term order.
        order = sorted(range(len(options)), key=lambda i: -options[i][0])
        focus = self.group_of[options[order[0]][1].term]
        in_focus = [i for i in order if self.group_of[options[i][1].term] == focus]
        rest = [i for i in order if self.group_of[options[i][1].term] != focus]
        return [Edit("keep")] + [options[i][1] for i in (in_focus + rest)[: n - 1]]
