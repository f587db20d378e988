"""Training rounds, per-step training metrics, and evaluation results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from storage._rows import as_json, fetch_dicts, from_json
from storage.errors import NotFoundError
from storage.paths import from_stored, store_folder, to_stored
from storage.records import RoundRecord

_ROUND_COLUMNS = (
    "round_id, status, stage, config, timings, metrics, error, policy_id, parent_policy_id, "
    "reward_model_id, folder, pid, created_at, finished_at"
)
_JSON_FIELDS = ("config", "timings", "metrics")


def insert_round(con: Any, record: RoundRecord) -> None:
    con.execute(
        "INSERT INTO rounds (round_id, status, stage, config, timings, metrics, error, policy_id, "
        "parent_policy_id, reward_model_id, folder, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [record.round_id, record.status, record.stage, as_json(record.config), as_json(record.timings),
         as_json(record.metrics), record.error, record.policy_id, record.parent_policy_id,
         record.reward_model_id, to_stored(con, record.folder), record.pid],
    )


def update_round(con: Any, round_id: str, **fields: Any) -> None:
    """Set some columns of a round; dict values for JSON columns are serialised."""
    get_round(con, round_id)
    if not fields:
        return
    allowed = set(_ROUND_COLUMNS.replace(" ", "").split(","))
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"Unknown round fields: {sorted(unknown)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    values = [as_json(v) if k in _JSON_FIELDS else to_stored(con, v) if k == "folder" else v
              for k, v in fields.items()]
    con.execute(f"UPDATE rounds SET {sets} WHERE round_id = ?", [*values, round_id])


def get_round(con: Any, round_id: str) -> RoundRecord:
    record = find_round(con, round_id)
    if record is None:
        raise NotFoundError(f"No round with id {round_id!r}.")
    return record


def find_round(con: Any, round_id: str) -> RoundRecord | None:
    """The round with this id, or None."""
    rows = fetch_dicts(con, f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_id = ?", [round_id])
    return _round(store_folder(con), rows[0]) if rows else None


def list_rounds(con: Any) -> list[RoundRecord]:
    folder = store_folder(con)
    return [_round(folder, r) for r in fetch_dicts(con, f"SELECT {_ROUND_COLUMNS} FROM rounds ORDER BY created_at")]


def _round(folder: Path | None, r: dict[str, Any]) -> RoundRecord:
    for key in _JSON_FIELDS:
        r[key] = from_json(r[key])
    r["folder"] = from_stored(folder, r["folder"])
    return RoundRecord(**r)


def insert_training_metrics(con: Any, run_id: str, run_kind: str, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
    """Append per-step metrics of a training run (PPO, GRPO, reward model): (step, {name: value})."""
    values = [(run_id, run_kind, int(step), as_json(dict(metrics))) for step, metrics in rows]
    if values:
        con.executemany(
            "INSERT INTO training_metrics (run_id, run_kind, step, metrics) VALUES (?, ?, ?, ?)", values
        )
    return len(values)


def training_metrics_frame(con: Any, run_id: str | None = None, run_kind: str | None = None) -> pd.DataFrame:
    """Per-step metrics as a wide frame: run_id, run_kind, step, one column per metric."""
    sql = "SELECT run_id, run_kind, step, metrics FROM training_metrics WHERE true"
    params: list[Any] = []
    if run_id:
        sql += " AND run_id = ?"
        params.append(run_id)
    if run_kind:
        sql += " AND run_kind = ?"
        params.append(run_kind)
    rows = fetch_dicts(con, sql + " ORDER BY run_id, step", params)
    records = [{"run_id": r["run_id"], "run_kind": r["run_kind"], "step": r["step"], **from_json(r["metrics"])}
               for r in rows]
    return pd.DataFrame.from_records(records)


def insert_evaluation(
    con: Any, eval_id: str, metrics: Mapping[str, Any], *, policy_id: str | None = None,
    round_id: str | None = None, dataset: str | None = None,
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO evaluations (eval_id, policy_id, round_id, dataset, metrics) VALUES (?, ?, ?, ?, ?)",
        [eval_id, policy_id, round_id, dataset, as_json(dict(metrics))],
    )


def list_evaluations(con: Any, *, round_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT eval_id, policy_id, round_id, dataset, metrics, created_at FROM evaluations"
    params: list[Any] = []
    if round_id:
        sql += " WHERE round_id = ?"
        params.append(round_id)
    rows = fetch_dicts(con, sql + " ORDER BY created_at, eval_id", params)
    for r in rows:
        r["metrics"] = from_json(r["metrics"])
    return rows
