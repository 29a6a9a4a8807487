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

``recommender="bo"`` replaces steps 2-3 by GP-UCB over a low-dimensional subspace of
prompt embedding and initial noise (`schemes.bo`, `preference_gp`); its candidates then
also differ in noise, and a choice moves the noise coordinates too.
``recommender="terms"`` replaces them by learnt preferences over terms (`schemes.terms`,
`term_preferences`): the candidates are the encodings of the prompt plus a guessed set
of terms, unchanged and edited.

Beyond the reference: candidates and the current image are rendered in one batched
sampling call; exact similarity; undo; sessions persisted after every choice and
resumable (`store`); the embedding exported and rendered on other seeds; a 2-D map of
the session (`map`; `noise2art.plot.save_map_png` draws it). See docs/feedback.md.

Modules:

* `config`: `FeedbackConfig`, the session's settings;
* `pool`: the random-prompt pool and farthest-point selection;
* `candidates`: `Candidates` and `Variants`, what a round shows;
* `schemes`: the `Scheme` protocol and one module per scheme (``random``, ``bo``, ``terms``);
* `preference_gp`, `term_preferences`: what the ``bo`` and ``terms`` schemes learn with;
* `session`: `FeedbackSession` and its `HistoryEntry`;
* `store`: the session folder on disk;
* `map`: `FeedbackMap`, a 2-D projection of a session.
"""

from __future__ import annotations

from noise2art.methods.feedback.candidates import Candidates, Variants
from noise2art.methods.feedback.config import RECOMMENDERS, STEP_RULES, FeedbackConfig, config_from_state
from noise2art.methods.feedback.map import FeedbackMap
from noise2art.methods.feedback.pool import CandidatePool, build_pool, farthest_point_selection, random_prompt
from noise2art.methods.feedback.schemes import SCHEMES, Scheme, SchemeContext
from noise2art.methods.feedback.session import FeedbackSession, HistoryEntry
from noise2art.methods.vocabulary import GENERIC_STYLE_TERMS, default_style_terms, default_vocabulary

__all__ = [
    "GENERIC_STYLE_TERMS",
    "RECOMMENDERS",
    "SCHEMES",
    "STEP_RULES",
    "CandidatePool",
    "Candidates",
    "FeedbackConfig",
    "FeedbackMap",
    "FeedbackSession",
    "HistoryEntry",
    "Scheme",
    "SchemeContext",
    "Variants",
    "build_pool",
    "config_from_state",
    "default_style_terms",
    "default_vocabulary",
    "farthest_point_selection",
    "random_prompt",
]
