"""Small helpers for turning DuckDB rows into records."""

from __future__ import annotations

import json
from typing import Any


def as_json(value: Any) -> str | None:
    """Serialise a Python value for a JSON column (None stays NULL)."""
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def from_json(value: Any) -> Any:
    """Decode a JSON column value (DuckDB returns JSON as text)."""
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


def fetch_dicts(con: Any, sql: str, params: list[Any] | tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
    """Run a query and return each row as a dict keyed by column name."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]
