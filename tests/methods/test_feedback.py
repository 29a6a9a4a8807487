"""Feedback sessions on the tiny SD model: candidates, batching, choices, persistence, schemes, map, BO,
simulated users."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import noise2art
from noise2art import space
from noise2art.engine.embedding import PromptEmbedding
from noise2art.engine.devices import native_bf16
from noise2art.engine.companions import Companions
from noise2art.engine.settings import SamplingOverrides
from noise2art.errors import InvalidArgument
from noise2art.methods.feedback import (
    RECOMMENDERS,
    SCHEMES,
    FeedbackConfig,
    FeedbackSession,
    build_pool,
    default_style_terms,
    farthest_point_selection,
    random_prompt,
)
from noise2art.methods.feedback import store as feedback_store
from noise2art.methods.feedback.preference_gp import (
    EmbeddingSubspace,
    NoiseSubspace,
    PreferenceGP,
    calibrate_radius,
    noise_axes,
    pca_axes,
)
from noise2art.methods.simulated_user import (
    make_task,
    rewrite_prompt,
    simulate_feedback,
    simulate_prompt_rewriting,
)
from noise2art.plot import save_map_png

PROMPT = "a red ball"


def config(precision: str = "model", **overrides) -> FeedbackConfig:
    # The model's precision, so renders compare exactly with plain `Model.render` calls.
    # The reference's random scheme unless a test names another (the default is bo).
    settings = dict(pool_size=24, n_variants=5, recommender="random",
                    sampling=SamplingOverrides(steps=2, scheduler="ddim", precision=precision))
    settings.update(overrides)
    return FeedbackConfig(**settings)


@pytest.fixture(scope="module")
def pool(tiny_model):
    """One encoded pool (session seed 7) shared by the sessions of this module."""
    return build_pool(tiny_model, config(), 7)


def new_session(model, pool=None, path=None, seed=3, **overrides):
    cfg = config(session_seed=7, **overrides)
    return FeedbackSession.start(model, PROMPT, seed, cfg, path=path, pool=pool)


def files(folder):
    """Every file under a folder with its bytes: 'nothing was written' means this is unchanged."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- config and pool


def test_config_checks_name_the_field():
    assert FeedbackConfig().check().n_variants == 5
    assert FeedbackConfig().recommender == "bo"  # the best measured scheme (docs/feedback.md)
    # A session file from before there were several schemes ran the random one, and resumes so.
    saved = {k: v for k, v in FeedbackConfig().to_dict().items() if k != "recommender"}
    assert FeedbackConfig.from_dict(saved).recommender == "random"
    for field_, value in [("n_variants", 0), ("similarity", 1.0), ("similarity", math.nan), ("pool_size", 3),
                          ("step_rule", "approx"), ("recommender", "ucb"), ("beta", -1.0), ("n_style_terms", 10**6),
                          ("steps", 0), ("bo_radius", 0.0), ("style_terms", "oil"),
                          ("precision", "fp8")]:
        fields = {"sampling": SamplingOverrides(**{field_: value})} if field_ in ("steps", "precision") \
            else {field_: value}
        with pytest.raises(InvalidArgument, match=field_):
            FeedbackConfig(**fields).check()
    # A config written when the sampling settings sat at the top level reads into `sampling`.
    legacy = {k: v for k, v in config().to_dict().items() if k != "sampling"}
    legacy.update(steps=2, scheduler="ddim", guidance=None, batch_size=None, precision="model")
    assert FeedbackConfig.from_dict(legacy) == config()
    with pytest.raises(InvalidArgument, match="unknown"):
        FeedbackConfig.from_dict({**FeedbackConfig().to_dict(), "colour": "red"})
    assert FeedbackConfig.from_dict(config(beta=0.5).to_dict()) == config(beta=0.5)


def test_default_style_terms_hold_world_styles_and_generic_terms():
    terms = default_style_terms()
    assert "an oil painting" in terms and "pixel art" in terms and "highly detailed" in terms
    assert "concept art" in terms
    assert len(terms) == len(set(terms))


def test_random_prompt_words_and_style_terms():
    rng = np.random.default_rng(0)
    text = random_prompt(rng, ["sun", "moon"], 4, ["oil", "ink", "pixel"], 3)
    words, *styles = text.split(", ")
    assert len(words.split()) == 4 and set(words.split()) <= {"sun", "moon"}
    assert sorted(styles) == ["ink", "oil", "pixel"]  # three distinct terms
    letters = random_prompt(rng, None, 3, ["oil"], 1)
    assert all(w.isalpha() and 3 <= len(w) <= 8 for w in letters.split(", ")[0].split())


def test_farthest_point_selection_maximises_the_least_distance():
    angles = torch.tensor([0.0, 10.0, 90.0, 180.0, 100.0, 200.0]) * math.pi / 180
    rows = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    picks = farthest_point_selection(rows, 3, first=0)
    assert picks[:2] == [0, 3]  # 180 degrees from the start
    assert picks[2] in (2, 4)  # 90 / 100 degrees: farthest from both 0 and 180
    with pytest.raises(InvalidArgument, match="n"):
        farthest_point_selection(rows, 7, first=0)


def test_pool_is_deterministic_in_the_seed(tiny_model, pool):
    again = build_pool(tiny_model, config(), 7)
    assert again.prompts == pool.prompts and torch.equal(again.cond, pool.cond)
    assert build_pool(tiny_model, config(), 8).prompts != pool.prompts
    assert pool.cond.shape == (24, 77, 32)


# --------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("target", [0.5, 0.72, 0.9])
def test_exact_rule_reaches_the_target_similarity(tiny_model, pool, target):
    session = new_session(tiny_model, pool, similarity=target)
    cands = session.candidates()
    achieved = space.similarity(session.current.cond, cands.embedding.cond)
    assert achieved.shape == (5,)
    assert torch.allclose(achieved, torch.full_like(achieved, target), atol=1e-3)
    assert float(cands.similarity_error.max()) < 1e-3
    # Row 0 (the start token) never moves, and the negative states are the session's.
    assert torch.equal(cands.embedding.cond[:, 0], session.current.cond[:, 0].expand(5, -1))
    assert torch.equal(cands.embedding.uncond, session.current.uncond.expand(5, -1, -1))


def test_reference_rule_uses_the_approximate_step(tiny_model, pool):
    session = new_session(tiny_model, pool, step_rule="reference")
    cands = session.candidates()
    # The first move's t is the reference's (1 - 0.72) / (1 - cos) on the last row of the picked pool prompts.
    picked = torch.stack([pool.cond[pool.prompts.index(s)] for s in cands.sources])
    expected = space.reference_step_t(session.current.cond, picked, 0.72)
    assert torch.allclose(cands.t[:, 0], expected.float(), rtol=1e-5)
    exact = new_session(tiny_model, pool).candidates()
    assert cands.sources == exact.sources  # same picks, different steps
    assert float(cands.similarity_error.mean()) > 10 * float(exact.similarity_error.mean())


def test_same_session_seed_gives_the_same_candidates(tiny_model, pool):
    a = new_session(tiny_model, pool).candidates()
    b = new_session(tiny_model, None).candidates()  # its own pool, built from the same seed
    assert a.sources == b.sources and a.style_prompts == b.style_prompts
    assert torch.equal(a.embedding.cond, b.embedding.cond)
    other = FeedbackSession.start(tiny_model, PROMPT, 3, config(session_seed=8)).candidates()
    assert other.sources != a.sources


def test_candidates_change_per_round_and_come_back_after_undo(tiny_model, pool):
    session = new_session(tiny_model, pool)
    first = session.candidates()
    session.choose(0, 0.5)
    second = session.candidates()
    assert second.round == 2 and not torch.equal(second.embedding.cond, first.embedding.cond)
    session.undo()
    again = session.candidates()
    assert again.round == 1 and torch.equal(again.embedding.cond, first.embedding.cond)


def test_variants_are_rendered_in_one_batched_call_from_one_noise(tiny_model, pool, monkeypatch):
    session = new_session(tiny_model, pool)
    session.candidates()  # the pool encoding is not what is counted
    calls, unet_batches = [], []
    original = tiny_model.sample

    def counting_sample(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "sample", counting_sample)
    hook = tiny_model.unet.register_forward_hook(lambda m, args, out: unet_batches.append(args[0].shape[0]))
    try:
        variants = session.variants()
    finally:
        hook.remove()
    assert len(calls) == 1
    assert unet_batches == [12, 12]  # 2 DDIM steps, (current + 5 candidates) x (cond + uncond) per call
    assert calls[0]["pairing"] == "zip"
    latents = calls[0]["latents"]
    noise = tiny_model.initial_noise([3])
    assert latents.shape[0] == 6 and all(torch.equal(latents[i], noise[0]) for i in range(6))
    assert variants.images.shape == (6, 3, 32, 32)
    assert variants.current_image.shape == (1, 3, 32, 32) and variants.candidate_images.shape[0] == 5
    assert bool(torch.isfinite(variants.images).all())
    # The current image is the current embedding on the session's noise.
    alone = session.render_current()
    assert torch.allclose(alone, variants.images[:1], atol=1e-4)


# --------------------------------------------------------------------------- choices


def test_choose_moves_by_slerp_and_undo_restores(tiny_model, pool):
    session = new_session(tiny_model, pool)
    start = session.current
    cands = session.candidates()
    entry = session.choose(2, 0.3)
    expected = space.slerp(start.cond, cands.embedding.cond[2:3], 0.3)
    assert torch.allclose(session.current.cond, expected, atol=1e-6)
    assert (entry.round, entry.index, entry.strength) == (1, 2, 0.3)
    assert torch.equal(entry.previous.cond, start.cond) and torch.equal(entry.chosen.cond, cands.embedding.cond[2:3])
    assert torch.equal(entry.updated.cond, session.current.cond)
    assert session.round == 2 and len(session.history) == 1
    assert entry.similarity == pytest.approx(0.72, abs=1e-3)
    undone = session.undo()
    assert undone is entry and session.round == 1 and session.history == []
    assert torch.equal(session.current.cond, start.cond)
    with pytest.raises(InvalidArgument, match="undo"):
        session.undo()


def test_strength_zero_keeps_and_one_reaches_the_candidate(tiny_model, pool):
    session = new_session(tiny_model, pool)
    start = session.current.cond.clone()
    session.choose(1, 0.0)
    assert torch.allclose(session.current.cond, start, atol=1e-6)
    cands = session.candidates()
    session.choose(4, 1.0)
    assert torch.allclose(session.current.cond, cands.embedding.cond[4:5], atol=1e-5)


@pytest.mark.parametrize("index, strength, name", [
    (-1, 0.5, "index"), (5, 0.5, "index"), (1.0, 0.5, "index"), (True, 0.5, "index"),
    (0, -0.1, "strength"), (0, 1.5, "strength"), (0, math.nan, "strength"), (0, math.inf, "strength"),
    (0, "0.5", "strength"),
])
def test_bad_choices_are_clear_errors_and_write_nothing(tiny_model, pool, tmp_path, index, strength, name):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder)
    before = files(folder)
    current = session.current.cond.clone()
    with pytest.raises(InvalidArgument, match=name):
        session.choose(index, strength)
    assert files(folder) == before
    assert session.history == [] and torch.equal(session.current.cond, current)


# --------------------------------------------------------------------------- persistence


def test_session_folder_layout_and_schema(tiny_model, pool, tmp_path):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder)
    session.choose(1, 0.5)
    names = set(files(folder))
    assert {"session.json", "initial.safetensors", "current.safetensors", "history/0001_previous.safetensors",
            "history/0001_chosen.safetensors", "history/0001_updated.safetensors"} == names
    state = json.loads((folder / "session.json").read_text())
    assert state["format"] == feedback_store.FORMAT and state["schema_version"] == feedback_store.SCHEMA_VERSION
    assert state["model_id"] == tiny_model.model_id and state["prompt"] == PROMPT and state["seed"] == 3
    assert state["round"] == 2 and state["config"]["pool_size"] == 24
    assert [(h["round"], h["index"], h["strength"]) for h in state["history"]] == [(1, 1, 0.5)]
    current = PromptEmbedding.load(folder / "current.safetensors")
    assert torch.equal(current.cond, session.current.cond)


def test_resume_continues_where_the_session_stopped(tiny_model, pool, tmp_path):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder)
    session.choose(1, 0.5)
    session.choose(3, 0.25)
    expected_next = session.candidates()
    del session  # the process ends without any goodbye: nothing more is written
    resumed = FeedbackSession.resume(tiny_model, folder, pool=pool)
    assert resumed.round == 3 and not resumed.repaired
    assert [(e.round, e.index, e.strength) for e in resumed.history] == [(1, 1, 0.5), (2, 3, 0.25)]
    assert torch.equal(resumed.current.cond, resumed.history[-1].updated.cond)
    assert torch.equal(resumed.candidates().embedding.cond, expected_next.embedding.cond)
    assert resumed.config == config(session_seed=7)
    # Undo after resuming removes the files of the undone choice, after the JSON commit.
    resumed.undo()
    assert not (folder / "history/0002_updated.safetensors").exists()
    assert FeedbackSession.resume(tiny_model, folder, pool=pool).round == 2


def test_a_crash_before_the_json_commit_leaves_the_previous_state(tiny_model, pool, tmp_path, monkeypatch):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder)
    session.choose(0, 0.5)
    committed = session.current.cond.clone()

    def crash(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(feedback_store, "_write_json", crash)
    with pytest.raises(OSError):
        session.choose(2, 0.5)  # embeddings and current.safetensors are written, the JSON is not
    assert session.round == 2 and torch.equal(session.current.cond, committed)  # memory unchanged too
    monkeypatch.undo()
    resumed = FeedbackSession.resume(tiny_model, folder, pool=pool)
    assert resumed.round == 2 and torch.equal(resumed.current.cond, committed)
    assert resumed.repaired  # current.safetensors was one step ahead and has been put back
    assert torch.equal(PromptEmbedding.load(folder / "current.safetensors").cond, committed)
    resumed.choose(2, 0.5)  # the round's files are simply overwritten
    assert FeedbackSession.resume(tiny_model, folder, pool=pool).round == 3


def test_resume_with_another_model_names_both(tiny_model, tiny_sd_v_path, pool, tmp_path):
    folder = tmp_path / "s"
    new_session(tiny_model, pool, path=folder)
    other = noise2art.load_model(tiny_sd_v_path, device="cpu")
    with pytest.raises(InvalidArgument, match="model") as info:
        FeedbackSession.resume(other, folder)
    assert tiny_model.model_id in str(info.value) and other.model_id in str(info.value)


@pytest.mark.parametrize("damage, message", [
    ("bad-json", "not readable JSON"),
    ("schema", "schema version 99"),
    ("missing-history", "missing"),
    ("missing-field", "prompt"),
    ("tampered", "hash"),
    ("outside", "outside"),
    ("bad-config", "config is invalid"),
])
def test_corrupted_folders_are_clear_errors_and_nothing_is_written(tiny_model, pool, tmp_path, damage, message):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder)
    session.choose(0, 0.5)
    state_path = folder / "session.json"
    state = json.loads(state_path.read_text())
    if damage == "bad-json":
        state_path.write_text(state_path.read_text()[:-20])
    elif damage == "schema":
        state["schema_version"] = 99
    elif damage == "missing-history":
        (folder / "history/0001_chosen.safetensors").unlink()
    elif damage == "missing-field":
        del state["prompt"]
    elif damage == "tampered":
        other = session.candidates().embedding[3]
        other.save(folder / "history/0001_updated.safetensors")
    elif damage == "outside":
        state["history"][0]["chosen"] = "../elsewhere.safetensors"
    elif damage == "bad-config":
        state["config"]["n_variants"] = 0
    if damage in ("schema", "missing-field", "outside", "bad-config"):
        state_path.write_text(json.dumps(state))
    before = files(folder)
    with pytest.raises(InvalidArgument, match=message) as info:
        FeedbackSession.resume(tiny_model, folder)
    assert info.value.name == "session"
    assert files(folder) == before


def test_start_refuses_a_folder_that_holds_a_session(tiny_model, pool, tmp_path):
    folder = tmp_path / "s"
    new_session(tiny_model, pool, path=folder)
    before = files(folder)
    with pytest.raises(InvalidArgument, match="already holds a session"):
        new_session(tiny_model, pool, path=folder)
    assert files(folder) == before
    with pytest.raises(InvalidArgument, match="holds no feedback session"):
        FeedbackSession.resume(tiny_model, tmp_path / "empty")


def test_export_and_render_on_other_seeds(tiny_model, pool, tmp_path):
    session = new_session(tiny_model, pool)
    session.choose(2, 0.5)
    path = session.export(tmp_path / "final.safetensors")
    loaded = tiny_model.load_embedding(path)
    assert torch.equal(loaded.cond, session.current.cond)
    with pytest.raises(InvalidArgument, match="safetensors"):
        session.export(tmp_path / "final.pt")
    images = session.render_on_seeds([5, 6])
    assert images.shape == (2, 3, 32, 32)
    with torch.no_grad():
        plain = tiny_model.render(session.current, [5, 6], steps=2, scheduler="ddim")
    assert torch.allclose(images, plain, atol=1e-4)
    with pytest.raises(InvalidArgument, match="seeds"):
        session.render_on_seeds([])


def test_bf16_precision_renders_close_to_the_model_and_consistently(tiny_model, pool):
    exact = new_session(tiny_model, pool)
    fast = new_session(tiny_model, pool, precision="bf16")
    a, b = exact.variants().images, fast.variants().images
    assert a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, b)  # bf16 products really ran
    assert (a - b).abs().mean() < 0.02
    # The current image of a round is what render_current gives (one precision per session;
    # bf16 kernels differ by batch size in the last bits only).
    assert (fast.render_current() - b[:1]).abs().mean() < 0.1 * (a - b).abs().mean()
    on_cpu_with_bf16 = native_bf16(tiny_model.device) and tiny_model.dtype == torch.float32
    auto = new_session(tiny_model, pool, precision="auto").variants().images
    assert torch.equal(auto, b if on_cpu_with_bf16 else a)


# --------------------------------------------------------------------------- schemes and old folders


def test_every_scheme_name_has_one_class_with_the_protocol():
    assert set(SCHEMES) == set(RECOMMENDERS)
    for cls in SCHEMES.values():
        assert all(callable(getattr(cls, m, None)) for m in ("propose", "observe", "state", "restore", "noise"))


def test_a_history_entry_holds_one_scheme_state(tiny_model, pool, tmp_path):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder, recommender="bo", prompt_axes=4, noise_axes=2)
    cands = session.candidates()
    entry = session.choose(1, 0.5)
    assert set(entry.scheme_state) == {"candidates_z", "index", "noise_z"}
    assert np.array_equal(entry.scheme_state["candidates_z"], cands.z) and entry.scheme_state["index"] == 1
    record = json.loads((folder / "session.json").read_text())["history"][0]
    assert record["scheme_state"] == entry.scheme_state and "candidates_z" not in record
    assert session.scheme.state() == [entry.scheme_state]


def as_version_1(state: dict) -> dict:
    """A schema-2 ``session.json`` as the schema-1 code wrote it: every scheme's fields, null where unused."""
    recommender = state["config"]["recommender"]
    noise_z = [0.0] * state["config"]["noise_axes"] if recommender == "bo" else None
    guess: list | None = [] if recommender == "terms" else None
    history = []
    for record in state["history"]:
        old = {k: v for k, v in record.items() if k not in ("scheme_state", "time")}
        scheme = record["scheme_state"]
        old.update(candidates_z=scheme.get("candidates_z"), noise_z_previous=noise_z,
                   noise_z_updated=scheme.get("noise_z"), candidate_edits=scheme.get("candidate_edits"),
                   guess_previous=guess, guess_updated=scheme.get("guess"), time=record["time"])
        if recommender == "bo":
            noise_z = scheme["noise_z"]
        if recommender == "terms":
            guess = scheme["guess"]
        history.append(old)
    return {**state, "schema_version": 1, "noise_z": noise_z, "history": history}


@pytest.mark.parametrize("overrides", [
    {},
    {"recommender": "bo", "prompt_axes": 4, "noise_axes": 2},
    {"recommender": "terms", "terms": {"time": ["at dawn", "at dusk"], "style": ["a sketch", "pixel art"]},
     "n_variants": 3},
], ids=["random", "bo", "terms"])
def test_a_folder_of_schema_version_1_resumes_to_the_same_state(tiny_model, pool, tmp_path, overrides):
    folder = tmp_path / "s"
    session = new_session(tiny_model, pool, path=folder, **overrides)
    session.choose(1, 0.5)
    session.choose(2, 0.25)
    state_path = folder / "session.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(as_version_1(state), indent=1) + "\n")
    assert feedback_store.read_state(folder) == state  # converted back, field by field
    resumed = FeedbackSession.resume(tiny_model, folder, pool=pool)
    assert [e.scheme_state for e in resumed.history] == [e.scheme_state for e in session.history]
    assert resumed.scheme.state() == session.scheme.state()
    assert torch.equal(resumed.noise, session.noise) and torch.equal(resumed.current.cond, session.current.cond)
    expected, again = session.variants(), resumed.variants()
    assert torch.equal(again.candidates.embedding.cond, expected.candidates.embedding.cond)
    assert again.candidates.sources == expected.candidates.sources
    assert torch.equal(again.images, expected.images)
    # Undo needs the converted history only; the next write stores the current schema.
    resumed.undo()
    session.undo()
    assert torch.equal(resumed.noise, session.noise)
    assert torch.equal(resumed.candidates().embedding.cond, session.candidates().embedding.cond)
    saved = json.loads(state_path.read_text())
    assert saved["schema_version"] == feedback_store.SCHEMA_VERSION and "noise_z" not in saved
    assert saved["history"][0]["scheme_state"] == session.history[0].scheme_state


# --------------------------------------------------------------------------- map


def test_map_holds_path_choices_and_candidates(tiny_model, pool, tmp_path):
    session = new_session(tiny_model, pool)
    empty = session.map()
    assert empty.points.shape == (6, 2) and empty.labels[0] == "current" and empty.arrows == []
    session.choose(0, 0.5)
    session.choose(3, 0.5)
    fmap = session.map()
    assert fmap.points.shape == (3 + 2 + 5, 2)
    assert fmap.kinds == ["path"] * 3 + ["chosen"] * 2 + ["candidate"] * 5
    assert fmap.labels[:3] == ["start", "1", "current"] and fmap.labels[3:5] == ["c1", "c2"]
    assert fmap.arrows == [(0, 1), (1, 2)]
    assert np.isfinite(fmap.points).all() and 0 < fmap.explained[0] <= 1
    # Points that differ in embedding differ on the map.
    assert np.linalg.norm(fmap.points[0] - fmap.points[2]) > 0
    path = save_map_png(fmap, tmp_path / "map.png")
    with Image.open(path) as im:
        assert im.size == (512, 512) and im.format == "PNG"
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(InvalidArgument, match="method"):
        session.map("tsne")


# --------------------------------------------------------------------------- BO scheme


def test_gp_proposals_stay_in_the_box_and_follow_the_choices():
    rng = np.random.default_rng(0)
    gp = PreferenceGP(4, beta=2.0)
    first = gp.propose(5, rng)
    assert first.shape == (5, 4) and np.all(np.abs(first) <= 1.0)
    # Without data the kriging believer spreads the batch out.
    dists = np.linalg.norm(first[:, None] - first[None], axis=-1)[np.triu_indices(5, 1)]
    assert dists.min() > 0.5
    # A user who always picks the candidate nearest a hidden point z*:
    hidden = np.array([0.7, -0.5, 0.3, 0.0])
    for _ in range(8):
        shown = gp.propose(5, rng)
        gp.observe(shown, int(np.argmin(np.linalg.norm(shown - hidden, axis=1))))
    assert gp.x.shape == (40, 4)
    mean, _ = gp.posterior(np.stack([hidden, -hidden]))
    assert mean[0] > mean[1] + 0.2
    gp.beta = 0.0  # pure exploitation
    exploit = gp.propose(5, np.random.default_rng(1))
    assert np.all(np.abs(exploit) <= 1.0)
    fresh = PreferenceGP(4, beta=0.0).propose(5, np.random.default_rng(1))
    near = np.linalg.norm(exploit - hidden, axis=1).mean()
    assert near < 0.6 * np.linalg.norm(fresh - hidden, axis=1).mean()
    with pytest.raises(InvalidArgument, match="chosen"):
        gp.observe(shown, 5)


def test_noise_subspace_keeps_unit_variance_and_its_origin():
    base = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    space_ = NoiseSubspace(base, noise_axes((4, 16, 16), 3, seed=1), scale=0.5)
    z = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0]])
    noise = space_.noise(z)
    assert torch.equal(noise[0], base)
    assert abs(float(noise[1].std()) - 1.0) < 0.1 and not torch.allclose(noise[1], base)


def test_pca_axes_and_radius_calibration(tiny_model, pool):
    axes, std = pca_axes(pool.cond, 4)
    assert axes.shape == (4, 76, 32) and std.shape == (4,)
    flat = axes.reshape(4, -1)
    assert torch.allclose(flat @ flat.T, torch.eye(4), atol=1e-4)
    assert bool((std[:-1] >= std[1:]).all()) and float(std[0]) > 0
    origin = tiny_model.encode([PROMPT]).cond[0]
    sub = EmbeddingSubspace(origin, axes, std)
    z = np.random.default_rng(0).uniform(-1, 1, size=(64, 4))
    sub.radius = calibrate_radius(sub, 0.72, z)
    achieved = space.similarity(origin, sub.embed(z)).mean()
    assert float(achieved) == pytest.approx(0.72, abs=1e-3)
    assert torch.equal(sub.embed(np.zeros((1, 4)))[0], origin)


def test_bo_session_renders_in_one_batch_learns_and_resumes(tiny_model, pool, tmp_path, monkeypatch):
    folder = tmp_path / "bo"
    session = new_session(tiny_model, pool, path=folder, recommender="bo", prompt_axes=4, noise_axes=2)
    cands = session.candidates()
    assert cands.z.shape == (5, 6) and np.all(np.abs(cands.z) <= 1.0) and cands.target_similarity is None
    calls = []
    original = tiny_model.sample
    monkeypatch.setattr(tiny_model, "sample", lambda *a, **k: calls.append(k) or original(*a, **k))
    variants = session.variants()
    monkeypatch.undo()
    assert len(calls) == 1 and variants.images.shape == (6, 3, 32, 32)
    latents = calls[0]["latents"]
    assert torch.equal(latents[0], tiny_model.initial_noise([3])[0])  # z_noise = 0 at the start
    assert not torch.equal(latents[1], latents[2])  # candidates differ in noise too
    session.choose(4, 0.5)
    assert np.allclose(session.scheme.noise_z, 0.5 * cands.z[4, 4:])
    gp = session.scheme.gp()
    assert gp.x.shape == (5, 6) and gp.y[4] == 1.0
    resumed = FeedbackSession.resume(tiny_model, folder, pool=pool)
    assert np.allclose(resumed.scheme.noise_z, session.scheme.noise_z)
    assert np.allclose(resumed.candidates().z, session.candidates().z)


# --------------------------------------------------------------------------- simulated users


def test_simulated_user_picks_the_candidate_nearest_the_target():
    """A scripted session: the user must pick the image nearest the target each round."""
    target = torch.zeros(1, 3, 8, 8)
    target[:, 0] = 1.0  # red

    class ScriptedSession:
        model = SimpleNamespace(companions=Companions())
        rounds = [3, 1]  # which candidate is red in each round

        def __init__(self):
            self.chosen = []

        def variants(self):
            r = len(self.chosen)
            images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(r)) * 0.2
            images[1 + self.rounds[r]] = target[0]
            cands = SimpleNamespace(similarity_error=torch.full((5,), 1e-4))
            return SimpleNamespace(images=images, candidates=cands, seconds=0.01)

        def choose(self, index, strength):
            self.chosen.append((index, strength))

        def render_current(self):
            return target.clone()

    session = ScriptedSession()
    result = simulate_feedback(session, target, rounds=2, strength=0.5)
    assert session.chosen == [(3, 0.5), (1, 0.5)] and result.choices == [3, 1]
    assert len(result.distances) == 3 and result.distances[-1] == pytest.approx(0.0, abs=1e-4)
    assert len(result.similarity_errors) == 10 and len(result.seconds_per_round) == 2


def test_rewrite_prompt_adds_drops_or_replaces_one_word():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        out = rewrite_prompt("a red ball", rng, ["blue", "cube"])
        n = len(out.split())
        assert n in (2, 3, 4)
        seen.add(n)
    assert seen == {2, 3, 4}
    for _ in range(20):
        assert rewrite_prompt("ball", rng, ["cube"]).split()  # never emptied


def test_prompt_rewriting_never_gets_worse(tiny_model):
    noise = tiny_model.initial_noise([3])
    kwargs = dict(steps=2, scheduler="ddim")
    with torch.no_grad():
        target = tiny_model.render("a blue cube", latents=noise, **kwargs)
    result = simulate_prompt_rewriting(tiny_model, PROMPT, target, noise, rounds=2, images_per_round=3,
                                       vocabulary=["blue", "cube", "red", "cat"], **kwargs)
    assert len(result.distances) == 3 and len(result.prompts) == 3
    assert all(b <= a for a, b in zip(result.distances, result.distances[1:]))


def test_make_task_gives_a_vague_start_and_a_full_target():
    from noise2art.world.captions import parse

    task = make_task(np.random.default_rng(4))
    assert task.start != task.target
    assert len(parse(task.target)) >= len(parse(task.start))
    assert make_task(np.random.default_rng(4)) == task
