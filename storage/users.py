"""Annotator accounts. Password hashes come from :mod:`rlhf.auth`; this module only stores them."""

from __future__ import annotations

from typing import Any

from storage._rows import fetch_dicts
from storage.errors import ConflictError, NotFoundError
from storage.records import Annotator

_COLUMNS = "annotator_id, role, display_name, active, kind, created_at"


def insert_annotator(con: Any, annotator: Annotator, password_hash: str | None) -> None:
    exists = con.execute("SELECT 1 FROM annotators WHERE annotator_id = ?", [annotator.annotator_id]).fetchone()
    if exists:
        raise ConflictError(f"A user named {annotator.annotator_id!r} already exists.")
    con.execute(
        "INSERT INTO annotators (annotator_id, role, display_name, password_hash, active, kind) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [annotator.annotator_id, annotator.role, annotator.display_name, password_hash, annotator.active,
         annotator.kind],
    )


def get_annotator(con: Any, annotator_id: str) -> Annotator:
    rows = fetch_dicts(con, f"SELECT {_COLUMNS} FROM annotators WHERE annotator_id = ?", [annotator_id])
    if not rows:
        raise NotFoundError(f"No user named {annotator_id!r}.")
    return Annotator(**rows[0])


def name_taken_ignoring_case(con: Any, annotator_id: str) -> str | None:
    """The existing annotator whose name equals ``annotator_id`` up to case ('ann1' for 'ANN1'), if any."""
    row = con.execute("SELECT annotator_id FROM annotators WHERE lower(annotator_id) = lower(?) LIMIT 1",
                      [annotator_id]).fetchone()
    return None if row is None else str(row[0])


def get_password_hash(con: Any, annotator_id: str) -> str | None:
    row = con.execute("SELECT password_hash FROM annotators WHERE annotator_id = ?", [annotator_id]).fetchone()
    return None if row is None else row[0]


def count_password_accounts(con: Any) -> int:
    """Active accounts that can log in with a password (simulated annotators have none)."""
    return int(con.execute("SELECT count(*) FROM annotators WHERE active AND password_hash IS NOT NULL").fetchone()[0])


def list_annotators(con: Any, *, kind: str | None = None) -> list[Annotator]:
    sql = f"SELECT {_COLUMNS} FROM annotators"
    params: list[Any] = []
    if kind:
        sql += " WHERE kind = ?"
        params.append(kind)
    return [Annotator(**r) for r in fetch_dicts(con, sql + " ORDER BY annotator_id", params)]


def update_annotator(
    con: Any,
    annotator_id: str,
    *,
    role: str | None = None,
    active: bool | None = None,
    display_name: str | None = None,
    password_hash: str | None = None,
) -> None:
    get_annotator(con, annotator_id)
    sets: list[str] = []
    params: list[Any] = []
    for column, value in (("role", role), ("active", active), ("display_name", display_name),
                          ("password_hash", password_hash)):
        if value is not None:
            sets.append(f"{column} = ?")
            params.append(value)
    if sets:
        con.execute(f"UPDATE annotators SET {', '.join(sets)} WHERE annotator_id = ?", [*params, annotator_id])
