"""Policies, their generations (recommendation lists) and the pairs built from them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from storage._rows import as_json, fetch_dicts, from_json
from storage.errors import NotFoundError
from storage.paths import from_stored, store_folder, to_stored
from storage.records import Generation, ListItem, Pair, Policy

_GEN_COLUMNS = (
    "generation_id, context_id, policy_id, raw_text, items, problems, is_valid, sampling, "
    "prompt_tokens, completion_tokens, round_id, created_at"
)
_PAIR_COLUMNS = (
    "pair_id, context_id, gen_a, gen_b, strategy, priority, overlap_target, status, is_gold, "
    "selection_reason, round_id, source, created_at"
)


def upsert_policy(con: Any, policy: Policy) -> None:
    """Insert a policy, or replace the row with the same id."""
    con.execute(
        "INSERT OR REPLACE INTO policies (policy_id, kind, base_model, adapter_path, parent_id, round_id, metrics) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [policy.policy_id, policy.kind, policy.base_model, to_stored(con, policy.adapter_path), policy.parent_id,
         policy.round_id, as_json(policy.metrics)],
    )


def get_policy(con: Any, policy_id: str) -> Policy:
    rows = fetch_dicts(con, "SELECT * FROM policies WHERE policy_id = ?", [policy_id])
    if not rows:
        raise NotFoundError(f"No policy with id {policy_id!r}.")
    return _policy(store_folder(con), rows[0])


def list_policies(con: Any) -> list[Policy]:
    folder = store_folder(con)
    return [_policy(folder, r) for r in fetch_dicts(con, "SELECT * FROM policies ORDER BY created_at, policy_id")]


def _policy(folder: Path | None, r: dict[str, Any]) -> Policy:
    return Policy(
        policy_id=r["policy_id"], kind=r["kind"], base_model=r["base_model"],
        adapter_path=from_stored(folder, r["adapter_path"]),
        parent_id=r["parent_id"], round_id=r["round_id"], metrics=from_json(r["metrics"]),
        created_at=r["created_at"],
    )


def insert_generations(con: Any, generations: Iterable[Generation]) -> int:
    rows = [
        (g.generation_id, g.context_id, g.policy_id, g.raw_text,
         as_json([{"item_id": i.item_id, "reason": i.reason} for i in g.items]), as_json(g.problems),
         g.is_valid, as_json(g.sampling), g.prompt_tokens, g.completion_tokens, g.round_id)
        for g in generations
    ]
    if rows:
        con.executemany(
            "INSERT INTO generations (generation_id, context_id, policy_id, raw_text, items, problems, is_valid, "
            "sampling, prompt_tokens, completion_tokens, round_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def get_generations(con: Any, ids: Sequence[str]) -> dict[str, Generation]:
    if not ids:
        return {}
    placeholders = ",".join("?" * len(ids))
    rows = fetch_dicts(
        con, f"SELECT {_GEN_COLUMNS} FROM generations WHERE generation_id IN ({placeholders})", list(ids)
    )
    return {r["generation_id"]: _generation(r) for r in rows}


def get_generation(con: Any, generation_id: str) -> Generation:
    found = get_generations(con, [generation_id])
    if generation_id not in found:
        raise NotFoundError(f"No generation with id {generation_id!r}.")
    return found[generation_id]


def generations_for_contexts(
    con: Any, context_ids: Sequence[str], *, policy_id: str | None = None
) -> list[Generation]:
    """Generations of some contexts (optionally of one policy), oldest first."""
    if not context_ids:
        return []
    placeholders = ",".join("?" * len(context_ids))
    sql = f"SELECT {_GEN_COLUMNS} FROM generations WHERE context_id IN ({placeholders})"
    params: list[Any] = list(context_ids)
    if policy_id:
        sql += " AND policy_id = ?"
        params.append(policy_id)
    return [_generation(r) for r in fetch_dicts(con, sql + " ORDER BY created_at, generation_id", params)]


def _generation(r: dict[str, Any]) -> Generation:
    return Generation(
        generation_id=r["generation_id"], context_id=r["context_id"], policy_id=r["policy_id"],
        raw_text=r["raw_text"],
        items=[ListItem(i["item_id"], i.get("reason", "")) for i in (from_json(r["items"]) or [])],
        problems=list(from_json(r["problems"]) or []), is_valid=bool(r["is_valid"]),
        sampling=from_json(r["sampling"]), prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"], round_id=r["round_id"], created_at=r["created_at"],
    )


def insert_pairs(con: Any, pairs: Iterable[Pair]) -> int:
    rows = [
        (p.pair_id, p.context_id, p.gen_a, p.gen_b, p.strategy, p.priority, p.overlap_target, p.status,
         p.is_gold, p.selection_reason, p.round_id, p.source)
        for p in pairs
    ]
    if rows:
        con.executemany(
            "INSERT INTO pairs (pair_id, context_id, gen_a, gen_b, strategy, priority, overlap_target, status, "
            "is_gold, selection_reason, round_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def get_pair(con: Any, pair_id: str) -> Pair:
    rows = fetch_dicts(con, f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE pair_id = ?", [pair_id])
    if not rows:
        raise NotFoundError(f"No pair with id {pair_id!r}.")
    return Pair(**rows[0])


def list_pairs(con: Any, *, status: str | None = None, source: str | None = "app") -> list[Pair]:
    sql = f"SELECT {_PAIR_COLUMNS} FROM pairs WHERE true"
    params: list[Any] = []
    if status:
        sql += " AND status = ?"
        params.append(status)
    if source:
        sql += " AND source = ?"
        params.append(source)
    return [Pair(**r) for r in fetch_dicts(con, sql + " ORDER BY priority DESC, pair_id", params)]


def existing_pair_keys(con: Any) -> set[tuple[str, str]]:
    """(gen_a, gen_b) of every pair, both orders, to avoid enqueueing the same comparison twice."""
    rows = con.execute("SELECT gen_a, gen_b FROM pairs WHERE gen_a IS NOT NULL").fetchall()
    return {(a, b) for a, b in rows} | {(b, a) for a, b in rows}


def find_policy(con: Any, policy_id: str) -> Policy | None:
    """The policy with this id, or None."""
    rows = fetch_dicts(con, "SELECT * FROM policies WHERE policy_id = ?", [policy_id])
    return _policy(store_folder(con), rows[0]) if rows else None


def contexts_without_generations(
    con: Any, policy_id: str, *, split: str | None = None, limit: int | None = None
) -> list[str]:
    """Ids of contexts (optionally of one split) with no generation of ``policy_id`` yet, in id order."""
    sql = (
        "SELECT c.context_id FROM contexts c WHERE NOT EXISTS ("
        "SELECT 1 FROM generations g WHERE g.context_id = c.context_id AND g.policy_id = ?)"
    )
    params: list[Any] = [policy_id]
    if split:
        sql += " AND c.split = ?"
        params.append(split)
    sql += " ORDER BY c.context_id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [r[0] for r in con.execute(sql, params).fetchall()]


def generations_for_policies(
    con: Any, policy_ids: Sequence[str], *, context_ids: Sequence[str] | None = None
) -> list[Generation]:
    """Generations of some policies (optionally restricted to some contexts), oldest first."""
    if not policy_ids:
        return []
    sql = f"SELECT {_GEN_COLUMNS} FROM generations WHERE policy_id IN ({','.join('?' * len(policy_ids))})"
    params: list[Any] = list(policy_ids)
    if context_ids is not None:
        if not context_ids:
            return []
        sql += f" AND context_id IN ({','.join('?' * len(context_ids))})"
        params.extend(context_ids)
    return [_generation(r) for r in fetch_dicts(con, sql + " ORDER BY created_at, generation_id", params)]


def heldout_contexts_with_lists(con: Any, policy_id: str, round_id: str | None = None) -> list[str]:
    """Held-out contexts (id order) with a list of ``policy_id``, written in ``round_id`` if given."""
    sql = ("SELECT DISTINCT g.context_id FROM generations g JOIN contexts c ON c.context_id = g.context_id "
           "WHERE c.split = 'heldout' AND g.policy_id = ?")
    params: list[Any] = [policy_id]
    if round_id:
        sql += " AND g.round_id = ?"
        params.append(round_id)
    return [r[0] for r in con.execute(sql + " ORDER BY g.context_id", params).fetchall()]


def generation_counts_by_policy(con: Any) -> dict[str, tuple[int, int]]:
    """Lists and valid lists per policy id: ``{policy_id: (n, n_valid)}``."""
    rows = con.execute(
        "SELECT policy_id, count(*), count(*) FILTER (WHERE is_valid) FROM generations GROUP BY policy_id"
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def count_generations(con: Any, *, policy_id: str | None = None, valid_only: bool = False) -> int:
    """How many generations there are (of one policy, optionally only valid ones)."""
    sql = "SELECT count(*) FROM generations WHERE true"
    params: list[Any] = []
    if policy_id:
        sql += " AND policy_id = ?"
        params.append(policy_id)
    if valid_only:
        sql += " AND is_valid"
    return int(con.execute(sql, params).fetchone()[0])
