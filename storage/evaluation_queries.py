"""Queries for offline evaluation, active selection and simulated ground truth.

Kept apart from the generic repositories because each one encodes a leakage rule: what happened
*after* a context's cut is read only as an evaluation target, never as an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

_CURRENT = "NOT EXISTS (SELECT 1 FROM label_retractions r WHERE r.label_id = l.label_id)"


def future_interactions(
    con: Any, contexts: pd.DataFrame, *, events: Sequence[str] | None = None, positive_only: bool = True
) -> pd.DataFrame:
    """What each context's shopper did at or after the context's ``as_of`` (evaluation targets only).

    ``contexts`` has columns ``context_id, shopper_id, as_of``. Returns ``context_id, item_id, ts,
    quantity`` ordered by context and time; returns and cancellations (quantity <= 0) are left out
    unless ``positive_only`` is False.
    """
    sql = (
        "SELECT c.context_id, i.item_id, i.ts, i.quantity FROM _ctx_in c "
        "JOIN interactions i ON i.shopper_id = c.shopper_id AND i.ts >= c.as_of WHERE true"
    )
    if positive_only:
        sql += " AND i.quantity > 0"
    return _per_context(con, contexts, sql, events, " ORDER BY c.context_id, i.ts, i.item_id")


def items_bought_before(
    con: Any, contexts: pd.DataFrame, *, events: Sequence[str] | None = None
) -> pd.DataFrame:
    """``context_id, item_id``: what each context's shopper bought strictly before its ``as_of``.

    Evaluation uses it to hold the baselines to the candidates' rule (never an item already bought).
    """
    sql = (
        "SELECT DISTINCT c.context_id, i.item_id FROM _ctx_in c "
        "JOIN interactions i ON i.shopper_id = c.shopper_id AND i.ts < c.as_of WHERE i.quantity > 0"
    )
    return _per_context(con, contexts, sql, events, " ORDER BY c.context_id, i.item_id")


def _per_context(
    con: Any, contexts: pd.DataFrame, sql: str, events: Sequence[str] | None, order_by: str
) -> pd.DataFrame:
    """Run ``sql`` against the contexts registered as ``_ctx_in``, filtered to ``events`` if given."""
    frame = contexts[["context_id", "shopper_id", "as_of"]].copy()
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    params: list[Any] = []
    if events:
        sql += " AND i.event IN (" + ",".join("?" * len(events)) + ")"
        params.extend(events)
    con.register("_ctx_in", frame)
    try:
        return con.execute(sql + order_by, params).df()
    finally:
        con.unregister("_ctx_in")


def interactions_before(
    con: Any, cut: Any, *, events: Sequence[str] | None = None, positive_only: bool = True
) -> pd.DataFrame:
    """``shopper_id, item_id, ts, quantity`` of interactions strictly before ``cut`` (model inputs)."""
    sql = "SELECT shopper_id, item_id, ts, quantity FROM interactions WHERE ts < ?"
    params: list[Any] = [cut]
    if positive_only:
        sql += " AND quantity > 0"
    if events:
        sql += " AND event IN (" + ",".join("?" * len(events)) + ")"
        params.extend(events)
    return con.execute(sql + " ORDER BY shopper_id, ts", params).df()


def labelled_pairs_per_context(con: Any) -> dict[str, int]:
    """How many distinct pairs of each context have at least one current (not retracted) label."""
    rows = con.execute(
        "SELECT p.context_id, count(DISTINCT p.pair_id) FROM pairs p JOIN labels l ON l.pair_id = p.pair_id "
        f"WHERE p.context_id IS NOT NULL AND {_CURRENT} GROUP BY p.context_id"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def item_categories(con: Any) -> pd.DataFrame:
    """``item_id, title, category`` of the whole catalogue (for diversity and coverage)."""
    return con.execute("SELECT item_id, title, category FROM catalog_items ORDER BY item_id").df()
