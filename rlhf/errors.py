"""Exceptions raised by the model side; each carries a sentence a user can act on."""

from __future__ import annotations


class RecFeedbackError(RuntimeError):
    """Base class for errors the CLI and the app show as a sentence."""


class ModelNotFoundError(RecFeedbackError):
    """The configured model is not installed or the path does not exist."""


class ImportFileError(RecFeedbackError):
    """An input file cannot be read at all (wrong format, bad encoding)."""


class RoundError(RecFeedbackError):
    """A training round cannot start or continue."""


class NoStoreError(RecFeedbackError):
    """The configured data folder holds no store (``recfeedback init`` makes one)."""
