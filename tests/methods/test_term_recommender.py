"""The terms scheme: edits, preferences, proposals, and sessions that use it (tiny SD model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.feedback import FeedbackConfig, FeedbackSession
from noise2art.methods.feedback.term_preferences import Edit, TermPreferences, check_term_groups, compose
from noise2art.methods.vocabulary import GENERIC_STYLE_TERMS, default_term_groups

GROUPS = {"time": ["at dawn", "at dusk", "at night"], "style": ["an oil painting", "a sketch"], "detail": ["intricate"]}


def test_embedded_model_terms_come_from_its_own_vocabulary_file():
    import noise2art

    embedded = noise2art.load_model()
    assert embedded.vocabulary is not None
    assert default_term_groups(embedded) == embedded.vocabulary["groups"] == default_term_groups()


def test_default_terms_cover_every_world_family_once():
    from noise2art.world.attributes import FAMILIES

    groups = default_term_groups()
    check_term_groups(groups)  # no term in two groups
    assert set(groups) == set(FAMILIES) - {"snow"}  # snow is named with the mountains
    assert len(groups["color"]) == len(FAMILIES["color"])
    assert "snow-capped mountains" in groups["mountains"]


@pytest.mark.parametrize("groups, message", [
    ({}, "non-empty mapping"),
    ({"a": []}, "non-empty list"),
    ({"a": ["x, y"]}, "without commas"),
    ({"a": ["x"], "b": ["x"]}, "in groups 'a' and 'b'"),
])
def test_bad_term_groups_are_clear_errors(groups, message):
    with pytest.raises(InvalidArgument, match=message):
        check_term_groups(groups)


def test_apply_appends_adds_and_replaces_in_place():
    prefs = TermPreferences(GROUPS)
    guess = prefs.apply([], Edit("add", "a sketch"))
    guess = prefs.apply(guess, Edit("add", "at dawn"))
    assert guess == ["a sketch", "at dawn"]  # added last, whatever the group order
    assert prefs.apply(guess, Edit("replace", "an oil painting", "a sketch")) == ["an oil painting", "at dawn"]
    assert prefs.apply(guess, Edit("drop", "a sketch")) == ["at dawn"]
    assert prefs.apply(guess, Edit("keep")) == guess
    assert compose("a ball", guess) == "a ball, a sketch, at dawn" and compose("a ball", []) == "a ball"
    with pytest.raises(InvalidArgument, match="two terms of group 'time'"):
        prefs.check_guess(["at dawn", "at dusk"])


def test_observe_counts_wins_and_losses():
    prefs = TermPreferences(GROUPS, loss_weight=0.5)
    i = prefs.index
    shown = [Edit("keep"), Edit("add", "at dawn"), Edit("add", "at dusk"), Edit("drop", "a sketch")]
    prefs.observe(shown, 1)  # "at dawn" beat the others
    assert prefs.wins[i["at dawn"]] == 1 and prefs.losses[i["at dusk"]] == 0.5
    assert prefs.wins[i["a sketch"]] == 0 and prefs.losses[i["a sketch"]] == 0  # a drop not picked says nothing
    prefs.observe(shown, 0)  # no change beat every edit
    assert prefs.losses[i["at dawn"]] == 1 and prefs.losses[i["at dusk"]] == 1.5 and prefs.wins[i["a sketch"]] == 0.5
    prefs.observe([Edit("keep"), Edit("replace", "at night", "at dawn")], 1)
    assert prefs.wins[i["at night"]] == 1 and prefs.losses[i["at dawn"]] == 2
    prefs.observe([Edit("keep"), Edit("drop", "intricate")], 1)
    assert prefs.losses[i["intricate"]] == 1
    mean = prefs.mean()
    assert mean[i["at night"]] == pytest.approx(2 / 3) and mean[i["an oil painting"]] == 0.5
    with pytest.raises(InvalidArgument, match="chosen"):
        prefs.observe(shown, 4)


def test_propose_keeps_first_focuses_a_group_and_is_deterministic():
    prefs = TermPreferences(GROUPS)
    edits = prefs.propose(["a sketch"], 4, np.random.default_rng(0))
    assert edits[0] == Edit("keep") and len(edits) == 4
    assert len({e.term for e in edits[1:]}) == 3  # distinct terms
    focus = prefs.group_of[edits[1].term]
    n_focus = sum(prefs.group_of[e.term] == focus for e in edits[1:])
    assert n_focus == min(3, len(GROUPS[focus]))  # the focused group's edits come first, side by side
    for e in edits[1:]:
        assert (e.kind, e.old) in {("drop", None), ("add", None), ("replace", "a sketch")}
        assert e.kind != "replace" or prefs.group_of[e.term] == "style"
    assert edits == prefs.propose(["a sketch"], 4, np.random.default_rng(0))
    with pytest.raises(InvalidArgument, match="fewer than n_variants"):
        prefs.propose([], 8, np.random.default_rng(0))


def test_proposals_follow_the_choices():
    """A term that keeps winning is rarely offered for a drop; one that keeps losing is rarely offered again."""
    prefs = TermPreferences(GROUPS)
    for _ in range(30):
        prefs.observe([Edit("keep"), Edit("add", "at night"), Edit("add", "intricate")], 1)
    offered = [e for s in range(40) for e in prefs.propose(["at night"], 3, np.random.default_rng(s))[1:]]
    assert sum(e.term == "intricate" for e in offered) <= 2
    assert sum(e.term == "at night" for e in offered) <= 2  # rarely offered for a drop
    assert sum(e.kind == "add" and prefs.group_of[e.term] == "style" for e in offered) >= 70  # untried: explored


def terms_session(model, path=None, **overrides):
    settings = dict(sampling=SamplingOverrides(steps=2, scheduler="ddim", precision="model"), n_variants=4,
                    recommender="terms", terms=GROUPS, session_seed=7)
    settings.update(overrides)
    return FeedbackSession.start(model, "a red ball", 3, FeedbackConfig(**settings), path=path)


def test_terms_session_candidates_are_the_encoded_edits(tiny_model):
    session = terms_session(tiny_model)
    cands = session.candidates()
    assert cands.sources[0] == "keep" and cands.guesses[0] == []
    texts = [compose("a red ball", g) for g in cands.guesses]
    assert cands.style_prompts == texts
    expected = tiny_model.text_encoder(texts, tiny_model.device, tiny_model.dtype).states
    assert torch.allclose(cands.embedding.cond, expected, atol=1e-6)
    assert torch.allclose(cands.embedding.cond[0], session.current.cond[0], atol=1e-6)  # keep == the prompt
    variants = session.variants()
    assert variants.images.shape == (5, 3, 32, 32)


def test_terms_session_learns_undoes_and_resumes(tiny_model, tmp_path):
    folder = tmp_path / "terms"
    session = terms_session(tiny_model, path=folder)
    first = session.candidates()
    session.choose(2, 0.5)
    assert session.scheme.guess == first.guesses[2]
    prefs = session.scheme.preferences()
    assert prefs.wins[prefs.index[first.edits[2].term]] == 1
    second = session.candidates()
    resumed = FeedbackSession.resume(tiny_model, folder)
    assert resumed.scheme.guess == session.scheme.guess
    assert resumed.config.terms == GROUPS
    assert [e for e in resumed.candidates().edits] == second.edits
    session.undo()
    assert session.scheme.guess == [] and session.candidates().edits == first.edits


def test_terms_session_fixes_the_default_terms_and_checks_its_records(tiny_model, tmp_path):
    folder = tmp_path / "terms"
    session = terms_session(tiny_model, path=folder, terms=None)
    # A Stable Diffusion model ships no vocabulary: the session steers with the generic art terms.
    assert session.config.terms == default_term_groups(tiny_model) == {t: [t] for t in GENERIC_STYLE_TERMS}
    session.choose(1, 1.0)
    state = json.loads((folder / "session.json").read_text())
    assert state["config"]["terms"] == default_term_groups(tiny_model)
    state["history"][0]["scheme_state"]["guess"] = ["a forest"]
    (folder / "session.json").write_text(json.dumps(state))
    with pytest.raises(InvalidArgument, match="round 1: its guesses do not follow from its edits"):
        FeedbackSession.resume(tiny_model, folder)


def test_terms_scheme_needs_two_variants():
    with pytest.raises(InvalidArgument, match="n_variants"):
        FeedbackConfig(recommender="terms", n_variants=1).check()
