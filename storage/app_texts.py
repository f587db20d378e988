"""Texts that admins edit in the app (annotation guidelines). Each save is a new version; the latest wins."""

from __future__ import annotations

from typing import Any


def get_text(con: Any, key: str) -> tuple[str, int] | None:
    """(body, version) of the latest version of a text, or None when it was never set."""
    row = con.execute(
        "SELECT body, version FROM app_texts WHERE key = ? ORDER BY version DESC LIMIT 1", [key]
    ).fetchone()
    return None if row is None else (row[0], int(row[1]))


def set_text(con: Any, key: str, body: str, *, updated_by: str | None = None) -> int:
    """Store a new version of a text and return its version number (earlier versions are kept)."""
    row = con.execute("SELECT coalesce(max(version), 0) FROM app_texts WHERE key = ?", [key]).fetchone()
    version = int(row[0]) + 1
    con.execute(
        "INSERT INTO app_texts (key, version, body, updated_by) VALUES (?, ?, ?, ?)", [key, version, body, updated_by]
    )
    return version
