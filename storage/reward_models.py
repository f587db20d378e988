"""Rows of the reward-model registry (``reward_models``): one per trained model, written once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage._rows import as_json, fetch_dicts, from_json
from storage.errors import ConflictError, NotFoundError
from storage.paths import from_stored, store_folder, to_stored
from storage.records import RewardModelRecord

_COLUMNS = "rm_id, round_id, backbone, path, metrics, card, created_at"


def insert_reward_model(con: Any, record: RewardModelRecord) -> None:
    """Register a trained reward model; an existing id is a conflict (models are immutable)."""
    exists = con.execute("SELECT count(*) FROM reward_models WHERE rm_id = ?", [record.rm_id]).fetchone()[0]
    if exists:
        raise ConflictError(f"A reward model with id {record.rm_id!r} is already registered.")
    con.execute(
        "INSERT INTO reward_models (rm_id, round_id, backbone, path, metrics, card) VALUES (?, ?, ?, ?, ?, ?)",
        [record.rm_id, record.round_id, record.backbone, to_stored(con, record.path), as_json(record.metrics), as_json(record.card)],
    )


def get_reward_model(con: Any, rm_id: str) -> RewardModelRecord:
    rows = fetch_dicts(con, f"SELECT {_COLUMNS} FROM reward_models WHERE rm_id = ?", [rm_id])
    if not rows:
        raise NotFoundError(f"No reward model with id {rm_id!r}.")
    return _record(store_folder(con), rows[0])


def latest_reward_model(con: Any, *, round_id: str | None = None) -> RewardModelRecord | None:
    """The most recently registered model (of one round, if given), or None when there is none."""
    sql = f"SELECT {_COLUMNS} FROM reward_models"
    params: list[Any] = []
    if round_id:
        sql += " WHERE round_id = ?"
        params.append(round_id)
    rows = fetch_dicts(con, sql + " ORDER BY created_at DESC, rm_id DESC LIMIT 1", params)
    return _record(store_folder(con), rows[0]) if rows else None


def list_reward_models(con: Any) -> list[RewardModelRecord]:
    """Every registered model, newest first."""
    rows = fetch_dicts(con, f"SELECT {_COLUMNS} FROM reward_models ORDER BY created_at DESC, rm_id DESC")
    folder = store_folder(con)
    return [_record(folder, r) for r in rows]


def _record(folder: Path | None, r: dict[str, Any]) -> RewardModelRecord:
    return RewardModelRecord(
        rm_id=r["rm_id"], backbone=r["backbone"], path=from_stored(folder, r["path"]), round_id=r["round_id"],
        metrics=from_json(r["metrics"]), card=from_json(r["card"]), created_at=r["created_at"],
    )
