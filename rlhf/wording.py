"""Small helpers for the sentences RecFeedback shows people (CLI and app alike)."""

from __future__ import annotations


def counted(n: float, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: '1 row', '0 rows', '1,204 rows', '1.5 epochs'.

    ``plural`` is for nouns that do not just take an 's' ('1 entry', '2 entries').
    """
    shown = f"{n:,}" if isinstance(n, int) else f"{n:,g}"
    return f"{shown} {noun if n == 1 else plural or noun + 's'}"
