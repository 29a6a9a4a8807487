"""Candidate schemes of a feedback session, one module each, behind one protocol (`base.Scheme`).

``random`` (the reference's), ``bo`` (GP-UCB over a prompt and noise subspace) and
``terms`` (learnt term preferences). `FeedbackConfig.recommender` names one; `SCHEMES` is
the only place that maps the name to its class.
"""

from __future__ import annotations

from noise2art.methods.feedback.schemes.base import PoolCallback, Scheme, SchemeContext
from noise2art.methods.feedback.schemes.bo import BoScheme
from noise2art.methods.feedback.schemes.random import RandomScheme
from noise2art.methods.feedback.schemes.terms import TermsScheme

__all__ = ["SCHEMES", "BoScheme", "PoolCallback", "RandomScheme", "Scheme", "SchemeContext", "TermsScheme"]

SCHEMES: dict[str, type[Scheme]] = {"random": RandomScheme, "bo": BoScheme, "terms": TermsScheme}
