"""Read-side SQL for the Agreement dashboard, plus the bulk writes of an external label import.

Everything the dashboard needs from the store comes out of here as tidy pandas frames: one row per
current (not retracted) label joined to its pair, gold answer and annotator; throughput per day per
annotator; the queue by strategy and round; re-shown pairs for self-consistency; and round /
reward-model metrics. Services (rlhf.dashboard, rlhf.quality) compute on these frames; no other
package runs SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import pandas as pd

from storage._rows import from_json

NO_ROUND = "(no round)"

_CURRENT = "NOT EXISTS (SELECT 1 FROM label_retractions r WHERE r.label_id = l.label_id)"


@dataclass(frozen=True)
class LabelSelection:
    """Which labels a dashboard view covers. ``None`` means "no restriction" for every field.

    ``round_ids`` may contain :data:`NO_ROUND` for pairs made outside any round; dates are inclusive
    days on the label's ``created_at`` (UTC); ``sources`` are label sources (app, import, simulated...).
    """

    round_ids: tuple[str, ...] | None = None
    date_from: date | None = None
    date_to: date | None = None
    strategies: tuple[str, ...] | None = None
    annotators: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None


def _where(sel: LabelSelection) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``l`` labels and ``p`` pairs) for a selection, with its parameters."""
    clauses, params = _selected(sel, at="l.created_at", annotator="l.annotator_id", source="l.source")
    return " AND ".join([_CURRENT, *clauses]), params


def _selected(sel: LabelSelection, *, at: str, annotator: str, source: str | None) -> tuple[list[str], list[Any]]:
    """The conditions of a selection over pairs ``p`` and rows that have a time ``at``, an ``annotator`` and
    (unless None) a label ``source`` column, with their parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if sel.round_ids is not None:
        clauses.append("list_contains(?, coalesce(p.round_id, ?))")
        params += [list(sel.round_ids), NO_ROUND]
    if sel.date_from is not None:
        clauses.append(f"{at} >= ?")
        params.append(datetime.combine(_as_date(sel.date_from), time.min))
    if sel.date_to is not None:
        clauses.append(f"{at} < ?")
        params.append(datetime.combine(_as_date(sel.date_to) + timedelta(days=1), time.min))
    for column, values in (("p.strategy", sel.strategies), (annotator, sel.annotators), (source, sel.sources)):
        if column is not None and values is not None:
            clauses.append(f"list_contains(?, {column})")
            params.append(list(values))
    return clauses, params


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def label_frame(con: Any, selection: LabelSelection | None = None, *, with_rationale: bool = False) -> pd.DataFrame:
    """Current labels in the selection, one row each, joined to pair, gold answer and annotator.

    Columns: label_id, pair_id, annotator_id, choice, strength, left_side, time_ms, is_reshow,
    label_source, created_at, rationale, strategy, round_id (NO_ROUND when none), is_gold,
    pair_source, context_id, gold_choice (NULL unless the pair is gold), annotator_kind, item_flags (JSON
    text). The free-text rationale and the item flags are left out unless asked for (they dominate the
    transfer on big selections).
    """
    where, params = _where(selection or LabelSelection())
    rationale = "l.rationale" if with_rationale else "CAST(NULL AS VARCHAR)"
    flags = "CAST(l.item_flags AS VARCHAR)" if with_rationale else "CAST(NULL AS VARCHAR)"
    sql = f"""
        SELECT l.label_id, l.pair_id, l.annotator_id, l.choice, l.strength, l.left_side, l.time_ms,
               l.is_reshow, l.source AS label_source, l.created_at, {rationale} AS rationale,
               p.strategy, coalesce(p.round_id, '{NO_ROUND}') AS round_id, p.is_gold,
               p.source AS pair_source, p.context_id, g.expected_choice AS gold_choice,
               a.kind AS annotator_kind, {flags} AS item_flags
        FROM labels l
        JOIN pairs p ON p.pair_id = l.pair_id
        LEFT JOIN gold g ON g.pair_id = l.pair_id
        LEFT JOIN annotators a ON a.annotator_id = l.annotator_id
        WHERE {where}
        ORDER BY l.created_at, l.label_id
    """
    return con.execute(sql, params).df()


def skipped_frame(con: Any, selection: LabelSelection | None = None) -> pd.DataFrame:
    """Skipped assignments in the selection (its rounds, strategies, annotators and days; skips have no label
    source), newest first: closed_at, annotator_id, pair_id, skip_reason, strategy, round_id."""
    clauses, params = _selected(selection or LabelSelection(), at="a.closed_at", annotator="a.annotator_id",
                                source=None)
    sql = f"""
        SELECT a.closed_at, a.annotator_id, a.pair_id, a.skip_reason, p.strategy,
               coalesce(p.round_id, '{NO_ROUND}') AS round_id
        FROM assignments a JOIN pairs p ON p.pair_id = a.pair_id
        WHERE {" AND ".join(["a.status = 'skipped'", *clauses])}
        ORDER BY a.closed_at DESC, a.assignment_id
    """
    return con.execute(sql, params).df()


def throughput_by_day(con: Any, selection: LabelSelection | None = None) -> pd.DataFrame:
    """Labels per UTC day per annotator with the median seconds per label (re-shows included)."""
    where, params = _where(selection or LabelSelection())
    sql = f"""
        SELECT CAST(date_trunc('day', l.created_at) AS DATE) AS day, l.annotator_id,
               count(*) AS labels, median(l.time_ms) / 1000.0 AS median_seconds
        FROM labels l JOIN pairs p ON p.pair_id = l.pair_id
        WHERE {where}
        GROUP BY ALL ORDER BY day, l.annotator_id
    """
    return con.execute(sql, params).df()


def queue_by_strategy_round(con: Any, now: datetime) -> pd.DataFrame:
    """The labelling queue by strategy and round: pairs complete, waiting for overlap, unlabelled.

    A pair is complete when its current, non-re-show labels reach its overlap target; ``waiting``
    pairs have some labels but fewer than the target; ``labels_needed`` is what the queue still has to
    collect on servable ('open') pairs; ``live_leases`` are unexpired assignments at ``now`` (UTC). Gold
    pairs are counted apart (``gold_pairs``): the queue serves them to everyone and never completes them, so
    complete + waiting + unlabelled + gold = pairs, and open counts the other pairs, as ``queue status`` does.
    """
    sql = f"""
        WITH cur AS (
            SELECT l.pair_id, count(*) AS n FROM labels l
            WHERE NOT l.is_reshow AND {_CURRENT} GROUP BY l.pair_id),
        lease AS (
            SELECT pair_id, count(*) AS n FROM assignments
            WHERE status = 'active' AND expires_at > ? AND NOT is_reshow GROUP BY pair_id)
        SELECT p.strategy, coalesce(p.round_id, '{NO_ROUND}') AS round_id,
               count(*) AS pairs,
               count(*) FILTER (WHERE NOT p.is_gold AND coalesce(cur.n, 0) >= p.overlap_target) AS complete,
               count(*) FILTER (WHERE NOT p.is_gold AND coalesce(cur.n, 0) > 0
                                AND coalesce(cur.n, 0) < p.overlap_target) AS waiting_for_overlap,
               count(*) FILTER (WHERE NOT p.is_gold AND coalesce(cur.n, 0) = 0) AS unlabelled,
               coalesce(sum(greatest(p.overlap_target - coalesce(cur.n, 0), 0))
                   FILTER (WHERE p.status = 'open' AND NOT p.is_gold), 0) AS labels_needed,
               count(*) FILTER (WHERE p.status = 'open' AND NOT p.is_gold) AS open_pairs,
               coalesce(sum(lease.n), 0) AS live_leases,
               count(*) FILTER (WHERE p.is_gold) AS gold_pairs
        FROM pairs p
        LEFT JOIN cur ON cur.pair_id = p.pair_id
        LEFT JOIN lease ON lease.pair_id = p.pair_id
        GROUP BY ALL ORDER BY 1, 2
    """
    return con.execute(sql, [now]).df()


def served_mix(con: Any, selection: LabelSelection | None = None) -> pd.DataFrame:
    """Per annotator: labels, labels on pairs the queue served as gold and re-shown labels (to compare with the
    set rates). A label given before its pair became gold was not served as gold and does not count here."""
    where, params = _where(selection or LabelSelection())
    sql = f"""
        SELECT l.annotator_id, count(*) AS labels,
               count(*) FILTER (WHERE a.reason = 'gold') AS gold_labels,
               count(*) FILTER (WHERE l.is_reshow) AS reshow_labels
        FROM labels l JOIN pairs p ON p.pair_id = l.pair_id
        LEFT JOIN assignments a ON a.assignment_id = l.assignment_id
        WHERE {where} GROUP BY ALL ORDER BY 1
    """
    return con.execute(sql, params).df()


def self_consistency_pairs(con: Any, selection: LabelSelection | None = None) -> pd.DataFrame:
    """Each re-shown label beside the same annotator's first label on that pair.

    Choices are canonical (A = gen_a), so a consistent annotator repeats the same choice although the
    sides were swapped; ``first_left`` / ``reshow_left`` say which list was on the left each time.
    """
    where, params = _where(selection or LabelSelection())
    sql = f"""
        SELECT l.annotator_id, l.pair_id, o.choice AS first_choice, o.strength AS first_strength,
               o.left_side AS first_left, l.choice AS reshow_choice, l.strength AS reshow_strength,
               l.left_side AS reshow_left, l.created_at
        FROM labels l
        JOIN pairs p ON p.pair_id = l.pair_id
        JOIN labels o ON o.pair_id = l.pair_id AND o.annotator_id = l.annotator_id AND NOT o.is_reshow
             AND NOT EXISTS (SELECT 1 FROM label_retractions r2 WHERE r2.label_id = o.label_id)
        WHERE l.is_reshow AND {where}
        ORDER BY l.created_at
    """
    return con.execute(sql, params).df()


def round_quality_rows(con: Any) -> pd.DataFrame:
    """Rounds with their metrics, their reward model's metrics and their latest held-out evaluation report
    (JSON decoded into dicts)."""
    sql = """
        WITH latest AS (
            SELECT round_id, metrics FROM evaluations WHERE round_id IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY round_id ORDER BY created_at DESC, eval_id DESC) = 1
        )
        SELECT r.round_id, r.status, r.created_at, r.finished_at, r.policy_id, r.parent_policy_id,
               r.reward_model_id, r.metrics AS round_metrics, m.metrics AS rm_metrics, m.backbone,
               e.metrics AS eval_report
        FROM rounds r LEFT JOIN reward_models m ON m.rm_id = r.reward_model_id
        LEFT JOIN latest e ON e.round_id = r.round_id
        ORDER BY r.created_at
    """
    frame = con.execute(sql).df()
    for column in ("round_metrics", "rm_metrics", "eval_report"):
        frame[column] = [from_json(v) if isinstance(v, str) else (v if isinstance(v, dict) else {}) for v in frame[column]]
    return frame


def policy_comparison_labels(con: Any) -> pd.DataFrame:
    """Current first labels on pairs whose two lists come from different policies (for human win rates),
    with how each pair was chosen (``strategy``, ``selection_reason``, ``is_gold``)."""
    return con.execute(f"""
        SELECT l.pair_id, l.annotator_id, l.choice, ga.policy_id AS policy_a, gb.policy_id AS policy_b,
               p.strategy, p.selection_reason, p.is_gold
        FROM labels l
        JOIN pairs p ON p.pair_id = l.pair_id
        JOIN generations ga ON ga.generation_id = p.gen_a
        JOIN generations gb ON gb.generation_id = p.gen_b
        WHERE NOT l.is_reshow AND {_CURRENT} AND ga.policy_id <> gb.policy_id""").df()


def selection_options(con: Any) -> dict[str, list[Any]]:
    """Values the sidebar filters offer: rounds, strategies, annotators, label sources and the date span."""
    def column(sql: str) -> list[Any]:
        return [r[0] for r in con.execute(sql).fetchall()]

    span = con.execute("SELECT min(created_at), max(created_at) FROM labels").fetchone()
    return {
        "rounds": column(f"SELECT DISTINCT coalesce(round_id, '{NO_ROUND}') FROM pairs ORDER BY 1"),
        "strategies": column("SELECT DISTINCT strategy FROM pairs ORDER BY 1"),
        "annotators": column("SELECT DISTINCT annotator_id FROM labels ORDER BY 1"),
        "sources": column("SELECT DISTINCT source FROM labels ORDER BY 1"),
        "first_label": [span[0]],
        "last_label": [span[1]],
    }


# --------------------------------------------------------------------------------------------------
# External label import (writes). Validation happens in rlhf.label_import before any of these run.


def existing_ids(con: Any, table: str, column: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` already exist in ``table.column`` (pairs, annotators)."""
    if table not in {"pairs", "annotators", "gold"} or column not in {"pair_id", "annotator_id"}:
        raise ValueError(f"unsupported lookup {table}.{column}")
    if not ids:
        return set()
    probe = pd.DataFrame({"id": list(ids)})
    con.register("_probe_ids", probe)
    try:
        rows = con.execute(f"SELECT DISTINCT t.{column} FROM {table} t JOIN _probe_ids i ON i.id = t.{column}").fetchall()
    finally:
        con.unregister("_probe_ids")
    return {r[0] for r in rows}


def existing_label_keys(con: Any, keys: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``keys`` (pair_id, annotator_id) that already carry a current, non-re-show label."""
    con.register("_probe_keys", keys[["pair_id", "annotator_id"]])
    try:
        return con.execute(f"""
            SELECT DISTINCT k.pair_id, k.annotator_id FROM _probe_keys k
            JOIN labels l ON l.pair_id = k.pair_id AND l.annotator_id = k.annotator_id
            WHERE NOT l.is_reshow AND {_CURRENT}""").df()
    finally:
        con.unregister("_probe_keys")


def insert_external_pairs(con: Any, pairs: pd.DataFrame) -> int:
    """Pairs that exist only as labels from elsewhere: no lists, never served by the queue.

    ``pairs`` columns: pair_id, overlap_target, is_gold. Stored with source 'external', strategy
    'external' and status 'external' (the queue serves only 'open' pairs with two generations).
    """
    if pairs.empty:
        return 0
    con.register("_ext_pairs", pairs[["pair_id", "overlap_target", "is_gold"]])
    try:
        con.execute("""
            INSERT INTO pairs (pair_id, context_id, gen_a, gen_b, strategy, priority, overlap_target, status,
                               is_gold, selection_reason, round_id, source)
            SELECT pair_id, NULL, NULL, NULL, 'external', 0, overlap_target, 'external', is_gold,
                   'imported', NULL, 'external' FROM _ext_pairs""")
    finally:
        con.unregister("_ext_pairs")
    return len(pairs)


def insert_external_annotators(con: Any, annotator_ids: Sequence[str]) -> int:
    """Accounts for annotators known only from imported labels: kind 'external', no password, inactive."""
    if not annotator_ids:
        return 0
    con.register("_ext_annotators", pd.DataFrame({"annotator_id": list(annotator_ids)}))
    try:
        con.execute("""
            INSERT INTO annotators (annotator_id, display_name, role, password_hash, active, kind)
            SELECT annotator_id, annotator_id, 'annotator', NULL, false, 'external' FROM _ext_annotators""")
    finally:
        con.unregister("_ext_annotators")
    return len(annotator_ids)


def insert_gold_answers(con: Any, gold: pd.DataFrame, created_by: str | None = None) -> int:
    """Gold answers (pair_id, expected_choice) for pairs that have none yet; marks the pairs gold."""
    if gold.empty:
        return 0
    con.register("_ext_gold", gold[["pair_id", "expected_choice"]])
    try:
        con.execute(
            "INSERT INTO gold (pair_id, expected_choice, note, created_by) "
            "SELECT pair_id, expected_choice, 'imported', ? FROM _ext_gold", [created_by])
        con.execute("UPDATE pairs SET is_gold = true WHERE pair_id IN (SELECT pair_id FROM _ext_gold)")
    finally:
        con.unregister("_ext_gold")
    return len(gold)
