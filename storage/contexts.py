"""Contexts: a shopper at a point in time, with history and candidate items."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from storage._rows import as_json, fetch_dicts, from_json
from storage.errors import NotFoundError
from storage.records import Context

_COLUMNS = "context_id, shopper_id, as_of, history, candidates, retrieval, split"


def insert_contexts(con: Any, contexts: Iterable[Context]) -> int:
    """Insert contexts, replacing any with the same id."""
    rows = [
        (c.context_id, c.shopper_id, c.as_of, as_json(c.history), as_json(c.candidates), c.retrieval, c.split)
        for c in contexts
    ]
    if rows:
        con.executemany(f"INSERT OR REPLACE INTO contexts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def get_context(con: Any, context_id: str) -> Context:
    rows = fetch_dicts(con, f"SELECT {_COLUMNS} FROM contexts WHERE context_id = ?", [context_id])
    if not rows:
        raise NotFoundError(f"No context with id {context_id!r}.")
    return _context(rows[0])


def get_contexts(con: Any, ids: Sequence[str]) -> dict[str, Context]:
    if not ids:
        return {}
    placeholders = ",".join("?" * len(ids))
    rows = fetch_dicts(con, f"SELECT {_COLUMNS} FROM contexts WHERE context_id IN ({placeholders})", list(ids))
    return {r["context_id"]: _context(r) for r in rows}


def list_contexts(con: Any, *, split: str | None = None, limit: int | None = None) -> list[Context]:
    """Contexts in id order, optionally of one split ('train' / 'heldout')."""
    sql = f"SELECT {_COLUMNS} FROM contexts"
    params: list[Any] = []
    if split:
        sql += " WHERE split = ?"
        params.append(split)
    sql += " ORDER BY context_id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_context(r) for r in fetch_dicts(con, sql, params)]


def count_contexts(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM contexts").fetchone()[0])


def _context(r: dict[str, Any]) -> Context:
    return Context(
        context_id=r["context_id"],
        shopper_id=r["shopper_id"],
        as_of=r["as_of"],
        history=list(from_json(r["history"]) or []),
        candidates=list(from_json(r["candidates"]) or []),
        retrieval=r["retrieval"],
        split=r["split"],
    )


def existing_context_ids(con: Any, ids: Sequence[str], *, with_lists: bool = False) -> set[str]:
    """Which of ``ids`` are already stored (``with_lists``: and have generated lists, which pairs and labels
    refer to)."""
    if not ids:
        return set()
    import pandas as pd

    table = "generations" if with_lists else "contexts"
    con.register("_ctx_ids_in", pd.DataFrame({"context_id": list(ids)}))
    try:
        rows = con.execute(f"SELECT DISTINCT t.context_id FROM {table} t JOIN _ctx_ids_in USING (context_id)").fetchall()
    finally:
        con.unregister("_ctx_ids_in")
    return {r[0] for r in rows}


def insert_contexts_bulk(con: Any, contexts: Sequence[Context]) -> int:
    """Insert many contexts in one statement (replacing any with the same id); fast for thousands."""
    if not contexts:
        return 0
    import pandas as pd

    frame = pd.DataFrame(
        {
            "context_id": [c.context_id for c in contexts],
            "shopper_id": [c.shopper_id for c in contexts],
            "as_of": pd.to_datetime([c.as_of for c in contexts]),
            "history": [as_json(c.history) for c in contexts],
            "candidates": [as_json(c.candidates) for c in contexts],
            "retrieval": [c.retrieval for c in contexts],
            "split": [c.split for c in contexts],
        }
    )
    con.register("_ctx_in", frame)
    try:
        con.execute(
            f"INSERT OR REPLACE INTO contexts ({_COLUMNS}) "
            "SELECT context_id, shopper_id, as_of, history::JSON, candidates::JSON, retrieval, split FROM _ctx_in"
        )
    finally:
        con.unregister("_ctx_in")
    return len(frame)


def contexts_frame(con: Any) -> Any:
    """All contexts as a frame (JSON columns as text), ordered by id: for exports and comparisons."""
    return con.execute(f"SELECT {_COLUMNS} FROM contexts ORDER BY context_id").df()
