"""Exceptions every layer raises, so interfaces can turn them into one-line messages.

`InvalidArgument` subclasses `ValueError`: the Python API raises `ValueError` for bad input,
the CLI prints the message on one line and exits with code 2.
"""

from __future__ import annotations


class Noise2ArtError(Exception):
    """Base class of the errors this package raises on purpose."""


class InvalidArgument(Noise2ArtError, ValueError):
    """An argument is outside its allowed range; the message names both."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name}: {message}")


class ModelLoadError(Noise2ArtError):
    """A model could not be found, fetched or read."""


class Cancelled(Noise2ArtError):
    """A long job stopped because its cancel check returned True."""


class Preempted(Noise2ArtError):
    """A long job gave way to a more urgent one; it resumes from what it stored."""
