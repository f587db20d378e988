"""Parquet snapshots of what a training round needs, and the matching reader.

A round never trains against the live store (the app keeps serving annotators meanwhile): it copies the
tables it needs to Parquet files in a folder and works from those files. Each table is exported in its
own short unit of work, so the store is never held for longer than one ``COPY``.

Consistency without one long transaction: tables are exported from the referencing side to the
referenced side (labels, then gold, pairs, generations, contexts, annotators, catalogue). Nothing is
ever deleted from these tables, so every row a label points to already exists when the label is
copied and is still there when its parent table is copied a moment later: references inside a
snapshot always resolve. Rows added during the export may appear in a parent table without children;
that is harmless.

Retracted labels (a row in ``label_retractions``) are left out: a snapshot holds current labels only.
Password hashes never leave the store.

Layout of a snapshot folder::

    manifest.json          # snapshot_id, created_at, schema_version, format, tables {name: {file, rows}}
    labels.parquet ...     # one file per table; JSON columns are stored as text

The manifest is written last (atomically), so a folder without one is an interrupted export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from storage.errors import StoreError
from storage.ids import new_id
from storage.records import CatalogItem, Context, Generation, ListItem
from storage.schema import current_version

if TYPE_CHECKING:
    from storage.db import Store

UTC = timezone.utc  # datetime.UTC is Python 3.11+
#: Version of the snapshot folder layout (not the store schema; that one is in the manifest too).
SNAPSHOT_FORMAT = 1
MANIFEST = "manifest.json"

# Export order: referencing tables first (see the module docstring).
_QUERIES: dict[str, str] = {
    "labels": (
        "SELECT l.label_id, l.pair_id, l.annotator_id, l.assignment_id, l.choice, l.strength, l.left_side, "
        "CAST(l.item_flags AS VARCHAR) AS item_flags, l.rationale, l.time_ms, l.is_reshow, l.source, l.created_at "
        "FROM labels l WHERE NOT EXISTS (SELECT 1 FROM label_retractions r WHERE r.label_id = l.label_id) "
        "ORDER BY l.created_at, l.label_id"
    ),
    "gold": "SELECT pair_id, expected_choice, note, created_by, created_at FROM gold ORDER BY pair_id",
    "pairs": (
        "SELECT pair_id, context_id, gen_a, gen_b, strategy, priority, overlap_target, status, is_gold, "
        "selection_reason, round_id, source, created_at FROM pairs ORDER BY pair_id"
    ),
    "generations": (
        "SELECT generation_id, context_id, policy_id, raw_text, CAST(items AS VARCHAR) AS items, "
        "CAST(problems AS VARCHAR) AS problems, is_valid, CAST(sampling AS VARCHAR) AS sampling, prompt_tokens, "
        "completion_tokens, round_id, created_at FROM generations ORDER BY generation_id"
    ),
    "contexts": (
        "SELECT context_id, shopper_id, as_of, CAST(history AS VARCHAR) AS history, "
        "CAST(candidates AS VARCHAR) AS candidates, retrieval, split, created_at FROM contexts ORDER BY context_id"
    ),
    "annotators": (
        "SELECT annotator_id, display_name, role, active, kind, created_at FROM annotators ORDER BY annotator_id"
    ),
    "catalog_items": (
        "SELECT item_id, title, description, category, price, CAST(attributes AS VARCHAR) AS attributes, source "
        "FROM catalog_items ORDER BY item_id"
    ),
}

#: Every table a snapshot can hold, in export order.
SNAPSHOT_TABLES: tuple[str, ...] = tuple(_QUERIES)

_JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "labels": ("item_flags",),
    "generations": ("items", "problems", "sampling"),
    "contexts": ("history", "candidates"),
    "catalog_items": ("attributes",),
}


class SnapshotError(StoreError):
    """A snapshot folder is missing, incomplete or inconsistent with its manifest."""


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back from its folder: the manifest and one DataFrame per table."""

    folder: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(repr=False)

    @property
    def snapshot_id(self) -> str:
        return str(self.manifest["snapshot_id"])

    @property
    def schema_version(self) -> int:
        return int(self.manifest["schema_version"])

    def table(self, name: str) -> pd.DataFrame:
        """One table; a clear error when the snapshot was taken without it."""
        if name not in self.tables:
            raise SnapshotError(f"The snapshot {self.folder} has no table {name!r} (it has {sorted(self.tables)}).")
        return self.tables[name]

    def counts(self) -> dict[str, int]:
        return {name: int(meta["rows"]) for name, meta in self.manifest["tables"].items()}

    # Typed records for callers that prefer them to frames (contexts, items, generations).
    def context_records(self) -> dict[str, Context]:
        return {
            r.context_id: Context(
                context_id=r.context_id, shopper_id=r.shopper_id, as_of=r.as_of, history=list(r.history or []),
                candidates=list(r.candidates or []), retrieval=r.retrieval, split=r.split,
            )
            for r in self.table("contexts").itertuples(index=False)
        }

    def catalog_records(self) -> dict[str, CatalogItem]:
        return {
            r.item_id: CatalogItem(
                item_id=r.item_id, title=r.title, description=r.description, category=r.category,
                price=None if pd.isna(r.price) else float(r.price), attributes=r.attributes,
            )
            for r in self.table("catalog_items").itertuples(index=False)
        }

    def generation_records(self) -> dict[str, Generation]:
        out: dict[str, Generation] = {}
        for r in self.table("generations").itertuples(index=False):
            out[r.generation_id] = Generation(
                generation_id=r.generation_id, context_id=r.context_id, policy_id=r.policy_id, raw_text=r.raw_text,
                items=[ListItem(i["item_id"], i.get("reason", "")) for i in (r.items or [])],
                problems=list(r.problems or []), is_valid=bool(r.is_valid), sampling=r.sampling,
                prompt_tokens=None if pd.isna(r.prompt_tokens) else int(r.prompt_tokens),
                completion_tokens=None if pd.isna(r.completion_tokens) else int(r.completion_tokens),
                round_id=r.round_id, created_at=r.created_at,
            )
        return out


def write_snapshot(
    store: Store,
    folder: str | Path,
    *,
    tables: Sequence[str] = SNAPSHOT_TABLES,
    snapshot_id: str | None = None,
) -> dict[str, Any]:
    """Export ``tables`` of ``store`` to Parquet files in ``folder`` and return the manifest.

    Each table is one short unit of work. The folder must be empty or absent; the manifest is written
    last, so an interrupted export leaves no manifest and :func:`read_snapshot` refuses the folder.
    """
    unknown = [t for t in tables if t not in _QUERIES]
    if unknown:
        raise SnapshotError(f"Cannot snapshot unknown tables {unknown}; known: {list(SNAPSHOT_TABLES)}.")
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        raise SnapshotError(f"{folder} already holds a snapshot; choose a new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    ordered = [t for t in SNAPSHOT_TABLES if t in tables]
    entries: dict[str, dict[str, Any]] = {}
    schema_version = 0
    for name in ordered:
        target = folder / f"{name}.parquet"
        tmp = folder / f".{name}.parquet.tmp"
        escaped = str(tmp.resolve()).replace("'", "''")
        with store.transaction() as con:
            schema_version = current_version(con)
            con.execute(f"COPY ({_QUERIES[name]}) TO '{escaped}' (FORMAT parquet, COMPRESSION zstd)")
            rows = int(con.execute(f"SELECT count(*) FROM read_parquet('{escaped}')").fetchone()[0])
        os.replace(tmp, target)
        entries[name] = {"file": target.name, "rows": rows}
    manifest = {
        "snapshot_id": snapshot_id or new_id("snap"),
        "format": SNAPSHOT_FORMAT,
        "schema_version": schema_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "store_path": str(store.path),
        "retracted_labels_excluded": True,
        "tables": entries,
    }
    tmp_manifest = folder / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp_manifest, folder / MANIFEST)
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a snapshot folder, or a SnapshotError saying what is wrong."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SnapshotError(f"{folder} is not a complete snapshot (no {MANIFEST}); export it again.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path} has snapshot format {manifest.get('format')!r}; this code reads {SNAPSHOT_FORMAT}.")
    return manifest


def read_snapshot(folder: str | Path, *, tables: Sequence[str] | None = None, decode_json: bool = True) -> Snapshot:
    """Read a snapshot (all its tables, or ``tables``), checking each file's row count against the manifest.

    JSON columns are decoded into Python lists/dicts unless ``decode_json`` is False.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    wanted = list(manifest["tables"]) if tables is None else list(tables)
    frames: dict[str, pd.DataFrame] = {}
    for name in wanted:
        meta = manifest["tables"].get(name)
        if meta is None:
            raise SnapshotError(f"The snapshot {folder} was taken without the table {name!r}.")
        path = folder / meta["file"]
        if not path.is_file():
            raise SnapshotError(f"The snapshot {folder} lacks {meta['file']} named in its manifest.")
        frame = pd.read_parquet(path)
        if len(frame) != int(meta["rows"]):
            raise SnapshotError(
                f"{path} has {len(frame)} rows but the manifest says {meta['rows']}: the snapshot is damaged."
            )
        if decode_json:
            for column in _JSON_COLUMNS.get(name, ()):
                if column in frame:
                    frame[column] = frame[column].map(_decode)
        frames[name] = frame
    return Snapshot(folder=folder, manifest=manifest, tables=frames)


def _decode(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value
