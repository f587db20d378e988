"""Exceptions raised at the storage edge; callers turn them into human sentences."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store could not do what was asked."""


class StoreBusyError(StoreError):
    """Another process held the store for longer than the configured lock timeout."""


class NotFoundError(StoreError, LookupError):
    """A record named by id does not exist."""


class ValidationError(StoreError, ValueError):
    """Input records break a rule; ``problems`` lists each one for the user."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        detail = "" if not self.problems else "\n" + "\n".join(f"  - {p}" for p in self.problems[:50])
        more = len(self.problems) - 50
        if more > 0:
            detail += f"\n  ... and {more} more"
        super().__init__(message + detail)


class ConflictError(StoreError):
    """The request conflicts with the current state (e.g. a label for an expired assignment)."""
