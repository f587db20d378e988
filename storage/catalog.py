"""Catalogue items, shoppers and interactions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from storage._rows import as_json, fetch_dicts, from_json
from storage.records import CatalogItem, Interaction, Shopper


def insert_items(con: Any, items: Iterable[CatalogItem], *, source: str = "import") -> int:
    """Insert catalogue items (ids must be new); returns how many were written."""
    rows = [
        (i.item_id, i.title, i.description, i.category, i.price, as_json(i.attributes), source) for i in items
    ]
    if rows:
        con.executemany(
            "INSERT INTO catalog_items (item_id, title, description, category, price, attributes, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def insert_items_frame(con: Any, frame: pd.DataFrame, *, source: str = "import") -> int:
    """Bulk insert validated items from a frame with the catalog_items columns."""
    df = frame.copy()
    df["source"] = source
    if "attributes" not in df:
        df["attributes"] = None
    con.register("_items_in", df)
    try:
        con.execute(
            "INSERT INTO catalog_items (item_id, title, description, category, price, attributes, source) "
            "SELECT item_id, title, description, category, price, attributes, source FROM _items_in"
        )
    finally:
        con.unregister("_items_in")
    return len(df)


def existing_item_ids(con: Any, ids: Sequence[str] | None = None) -> set[str]:
    """Item ids already in the catalogue (all, or those among ``ids``)."""
    if ids is None:
        return {r[0] for r in con.execute("SELECT item_id FROM catalog_items").fetchall()}
    frame = pd.DataFrame({"item_id": list(ids)})
    con.register("_ids_in", frame)
    try:
        rows = con.execute("SELECT c.item_id FROM catalog_items c JOIN _ids_in USING (item_id)").fetchall()
    finally:
        con.unregister("_ids_in")
    return {r[0] for r in rows}


def get_items(con: Any, ids: Sequence[str]) -> dict[str, CatalogItem]:
    """Items by id; unknown ids are simply absent from the result."""
    if not ids:
        return {}
    frame = pd.DataFrame({"item_id": list(dict.fromkeys(ids))})
    con.register("_ids_in", frame)
    try:
        rows = fetch_dicts(
            con,
            "SELECT c.item_id, title, description, category, price, attributes "
            "FROM catalog_items c JOIN _ids_in USING (item_id)",
        )
    finally:
        con.unregister("_ids_in")
    return {r["item_id"]: _item(r) for r in rows}


def all_items(con: Any) -> list[CatalogItem]:
    """The whole catalogue, ordered by id."""
    rows = fetch_dicts(
        con, "SELECT item_id, title, description, category, price, attributes FROM catalog_items ORDER BY item_id"
    )
    return [_item(r) for r in rows]


def count_items(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM catalog_items").fetchone()[0])


def _item(r: dict[str, Any]) -> CatalogItem:
    return CatalogItem(
        item_id=r["item_id"],
        title=r["title"],
        description=r["description"],
        category=r["category"],
        price=r["price"],
        attributes=from_json(r["attributes"]),
    )


def upsert_shoppers(con: Any, shoppers: Iterable[Shopper]) -> int:
    """Insert shoppers, replacing any with the same id."""
    rows = [
        (s.shopper_id, s.segment, as_json(s.attributes), as_json(s.hidden_preferences)) for s in shoppers
    ]
    if rows:
        con.executemany(
            "INSERT OR REPLACE INTO shoppers (shopper_id, segment, attributes, hidden_preferences) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def get_shopper(con: Any, shopper_id: str) -> Shopper | None:
    rows = fetch_dicts(con, "SELECT * FROM shoppers WHERE shopper_id = ?", [shopper_id])
    if not rows:
        return None
    r = rows[0]
    return Shopper(r["shopper_id"], r["segment"], from_json(r["attributes"]), from_json(r["hidden_preferences"]))


def all_shoppers(con: Any) -> list[Shopper]:
    rows = fetch_dicts(con, "SELECT * FROM shoppers ORDER BY shopper_id")
    return [
        Shopper(r["shopper_id"], r["segment"], from_json(r["attributes"]), from_json(r["hidden_preferences"]))
        for r in rows
    ]


def insert_interactions_frame(con: Any, frame: pd.DataFrame, *, source: str = "import") -> int:
    """Bulk insert validated interactions (shopper_id, item_id, event, ts, quantity)."""
    df = frame[["shopper_id", "item_id", "event", "ts", "quantity"]].copy()
    df["source"] = source
    con.register("_inter_in", df)
    try:
        con.execute(
            "INSERT INTO interactions (shopper_id, item_id, event, ts, quantity, source) "
            "SELECT shopper_id, item_id, event, ts, quantity, source FROM _inter_in"
        )
    finally:
        con.unregister("_inter_in")
    return len(df)


def interactions_frame(con: Any, *, before: Any = None, events: Sequence[str] | None = None) -> pd.DataFrame:
    """All interactions (optionally strictly before a time, optionally of some events) as a frame."""
    sql = "SELECT shopper_id, item_id, event, ts, quantity FROM interactions WHERE true"
    params: list[Any] = []
    if before is not None:
        sql += " AND ts < ?"
        params.append(before)
    if events:
        sql += " AND event IN (" + ",".join("?" * len(events)) + ")"
        params.extend(events)
    return con.execute(sql + " ORDER BY shopper_id, ts", params).df()


def shopper_interactions(con: Any, shopper_id: str) -> list[Interaction]:
    rows = fetch_dicts(
        con,
        "SELECT shopper_id, item_id, event, ts, quantity FROM interactions WHERE shopper_id = ? ORDER BY ts",
        [shopper_id],
    )
    return [Interaction(**r) for r in rows]


# --- bulk helpers for imports, the demo shop and context building -------------------------------------


def insert_new_shoppers_frame(con: Any, frame: pd.DataFrame) -> int:
    """Insert shoppers (shopper_id, segment, attributes JSON text) whose ids are not stored yet.

    Existing shoppers are left alone, so importing more interactions never wipes a shopper's segment or
    hidden preferences. Returns how many shoppers were added.
    """
    df = frame.copy()
    for column in ("segment", "attributes", "hidden_preferences"):
        if column not in df:
            df[column] = None
    df = df[["shopper_id", "segment", "attributes", "hidden_preferences"]].drop_duplicates("shopper_id")
    con.register("_shoppers_in", df)
    try:
        before = int(con.execute("SELECT count(*) FROM shoppers").fetchall()[0][0])
        con.execute(
            "INSERT INTO shoppers (shopper_id, segment, attributes, hidden_preferences) "
            "SELECT s.shopper_id, s.segment, s.attributes, s.hidden_preferences FROM _shoppers_in s "
            "WHERE NOT EXISTS (SELECT 1 FROM shoppers t WHERE t.shopper_id = s.shopper_id)"
        )
        after = int(con.execute("SELECT count(*) FROM shoppers").fetchall()[0][0])
    finally:
        con.unregister("_shoppers_in")
    return after - before


def stored_interaction_rows(con: Any, frame: pd.DataFrame) -> list[int]:
    """Positions (0-based, in ``frame``) of interactions already stored with the same shopper, item, event, ts.

    Used to refuse re-importing a file twice, which would silently double every purchase.
    """
    if frame.empty:
        return []
    df = frame[["shopper_id", "item_id", "event", "ts"]].copy()
    df["_pos"] = range(len(df))
    con.register("_inter_check", df)
    try:
        rows = con.execute(
            "SELECT DISTINCT c._pos FROM _inter_check c JOIN interactions i "
            "ON i.shopper_id = c.shopper_id AND i.item_id = c.item_id AND i.event = c.event AND i.ts = c.ts "
            "ORDER BY c._pos"
        ).fetchall()
    finally:
        con.unregister("_inter_check")
    return [int(r[0]) for r in rows]


def catalog_frame(con: Any) -> pd.DataFrame:
    """The catalogue's id, title, category and price as a frame, ordered by id (for retrieval)."""
    return con.execute("SELECT item_id, title, category, price FROM catalog_items ORDER BY item_id").df()


def items_frame(con: Any) -> pd.DataFrame:
    """The whole catalogue with every stored column except timestamps, ordered by id."""
    return con.execute(
        "SELECT item_id, title, description, category, price, attributes, source FROM catalog_items ORDER BY item_id"
    ).df()


def shoppers_frame(con: Any) -> pd.DataFrame:
    """All shoppers (without created_at), ordered by id."""
    return con.execute(
        "SELECT shopper_id, segment, attributes, hidden_preferences FROM shoppers ORDER BY shopper_id"
    ).df()


def purchases_at_or_after(con: Any, cuts: pd.DataFrame, *, events: Sequence[str] = ("purchase",)) -> pd.DataFrame:
    """For each (key, shopper_id, as_of) in ``cuts``: the distinct items that shopper had events on at/after as_of.

    Returns a frame (key, item_id). Evaluation only: this is exactly the future a context must not see.
    """
    df = cuts[["key", "shopper_id", "as_of"]].copy()
    con.register("_cuts_in", df)
    try:
        placeholders = ",".join("?" * len(events))
        return con.execute(
            "SELECT DISTINCT c.key, i.item_id FROM _cuts_in c JOIN interactions i "
            f"ON i.shopper_id = c.shopper_id AND i.ts >= c.as_of AND i.event IN ({placeholders}) "
            "ORDER BY c.key, i.item_id",
            list(events),
        ).df()
    finally:
        con.unregister("_cuts_in")


def data_counts(con: Any) -> dict[str, int]:
    """Rows in the data tables (catalogue, shoppers, interactions, contexts, accounts, labels)."""
    tables = ("catalog_items", "shoppers", "interactions", "contexts", "annotators", "labels")
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in tables}
