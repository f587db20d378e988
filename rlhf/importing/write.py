"""Writing a validated dataset in one transaction, and the two file imports built on it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.importing.files import CLI_WORDING, MappingWording, RawTable, apply_mapping, read_table
from rlhf.importing.validate import (
    CATALOG_OPTIONAL,
    CATALOG_REQUIRED,
    INTERACTION_ALIASES,
    INTERACTION_OPTIONAL,
    INTERACTION_REQUIRED,
    _member,
    _not_in,
    _Problems,
    _short,
    _text,
    validate_catalog,
    validate_interactions,
)
from rlhf.settings import ImportSettings, Settings, get_settings
from rlhf.wording import counted
from storage import Store
from storage import catalog as catalog_repo
from storage.errors import ValidationError

log = logging.getLogger(__name__)

#: Called with a short stage name ("read", "validate", "write") as an import progresses.
StageCallback = Callable[[str], None]


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote (nothing is written unless everything was valid)."""

    kind: str
    source: str
    rows_read: int
    rows_written: int
    shoppers_added: int = 0
    seconds: float = 0.0
    ignored_columns: tuple[str, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One sentence for the CLI and the Data page."""
        text = f"Imported {counted(self.rows_written, f'{self.kind} row')} from {self.source} in {self.seconds:.1f} s"
        if self.shoppers_added:
            text += f" ({counted(self.shoppers_added, 'new shopper')})"
        if self.ignored_columns:
            text += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return text + "."


def write_dataset(
    store: Store,
    *,
    items: pd.DataFrame | None = None,
    interactions: pd.DataFrame | None = None,
    shoppers: pd.DataFrame | None = None,
    source: str = "import",
    item_table: RawTable | None = None,
    interaction_table: RawTable | None = None,
    limits: ImportSettings | None = None,
) -> tuple[int, int, int]:
    """Write validated items, shoppers and interactions in ONE transaction, after the checks that need the store.

    Inside the transaction: item ids already in the catalogue, interactions naming items that are in
    neither the catalogue nor ``items``, and interactions already stored are refused (ValidationError,
    nothing written, naming the file when a table is given). Shoppers named by interactions are created
    when new. Returns (items written, interactions written, shoppers added).
    """
    limits = limits or get_settings().imports
    with store.transaction() as con:
        n_items = n_inter = n_shoppers = 0
        if items is not None and len(items):
            taken = catalog_repo.existing_item_ids(con, items["item_id"].tolist())
            if taken:
                problems = _Problems(item_table, limits.max_problems)
                ids = items["item_id"].to_numpy()
                problems.add(
                    _member(ids, taken), lambda i: f"item id {_short(ids[i])!r} is already in the catalogue"
                )
                problems.raise_if_any(_what(item_table, "The catalogue file"))
        if interactions is not None and len(interactions):
            wanted = interactions["item_id"].unique().tolist()
            known = catalog_repo.existing_item_ids(con, wanted)
            if items is not None:
                known |= set(items["item_id"])
            problems = _Problems(interaction_table, limits.max_problems)
            ids = interactions["item_id"].to_numpy()
            problems.add(_not_in(ids, known), lambda i: f"item {_short(ids[i])!r} is not in the catalogue")
            stored = catalog_repo.stored_interaction_rows(con, interactions)
            if stored:
                mask = np.zeros(len(interactions), dtype=bool)
                mask[stored] = True
                problems.add(
                    mask,
                    lambda i: (
                        "this interaction is already stored (same shopper, item, event and time); "
                        "was the file imported before?"
                    ),
                )
            problems.raise_if_any(_what(interaction_table, "The interactions file"))
        if items is not None and len(items):
            n_items = catalog_repo.insert_items_frame(con, items, source=source)
        if interactions is not None and len(interactions):
            people = (
                shoppers
                if shoppers is not None
                else pd.DataFrame({"shopper_id": interactions["shopper_id"].unique()})
            )
            n_shoppers = catalog_repo.insert_new_shoppers_frame(con, people)
            n_inter = catalog_repo.insert_interactions_frame(con, interactions, source=source)
        elif shoppers is not None and len(shoppers):
            n_shoppers = catalog_repo.insert_new_shoppers_frame(con, shoppers)
    return n_items, n_inter, n_shoppers


def _what(table: RawTable | None, fallback: str) -> str:
    """How an error names the data: the file's name when it came from a file, like every other message."""
    return Path(table.path).name if table is not None else fallback


def import_catalog(
    store: Store,
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    on_stage: StageCallback | None = None,
    wording: MappingWording = CLI_WORDING,
) -> ImportReport:
    """Import catalogue items from a CSV/Parquet/JSONL file: all rows or none.

    Raises FileRejectedError for unreadable files and ValidationError (``.problems``) for bad rows,
    ids already in the catalogue, or a mapping that names absent columns. ``wording`` phrases mapping
    hints for the front end in use (the CLI's ``--map`` by default).
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    table = read_table(path)
    frame, problems = apply_mapping(
        table.frame, mapping, known=CATALOG_REQUIRED + CATALOG_OPTIONAL, wording=wording
    )
    if problems:
        raise ValidationError(
            f"The column mapping does not fit {Path(path).name}; nothing was imported.", problems
        )
    _stage(on_stage, "validate")
    what = f"{Path(path).name}"
    clean = validate_catalog(frame, limits=settings.imports, table=table, what=what, wording=wording)
    _stage(on_stage, "write")
    n_items, _, _ = write_dataset(
        store, items=clean, source=f"file:{Path(path).name}", item_table=table, limits=settings.imports
    )
    report = ImportReport(
        "catalogue",
        str(path),
        len(frame),
        n_items,
        seconds=time.perf_counter() - started,
        ignored_columns=clean.attrs.get("ignored_columns", ()),
    )
    log.info(report.summary())
    return report


def import_interactions(
    store: Store,
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    on_stage: StageCallback | None = None,
    wording: MappingWording = CLI_WORDING,
) -> ImportReport:
    """Import interactions (shopper, item, timestamp, event, quantity) from a file: all rows or none.

    Every item must already be in the catalogue; new shoppers are created. Rows already stored, or
    repeated within the file, are refused rather than doubled; so are timestamps in the future.
    ``wording`` phrases mapping hints for the front end in use (the CLI's ``--map`` by default).
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    table = read_table(path)
    frame, problems = apply_mapping(
        table.frame,
        mapping,
        known=INTERACTION_REQUIRED + INTERACTION_OPTIONAL,
        aliases=INTERACTION_ALIASES,
        wording=wording,
    )
    if problems:
        raise ValidationError(
            f"The column mapping does not fit {Path(path).name}; nothing was imported.", problems
        )
    _stage(on_stage, "validate")
    known = None
    if "item_id" in frame.columns:  # so that unknown items are listed with every other problem
        with store.transaction() as con:
            known = catalog_repo.existing_item_ids(con, _text(frame["item_id"]).unique().tolist())
    clean = validate_interactions(
        frame, known_items=known, limits=settings.imports, table=table, what=Path(path).name, wording=wording
    )
    ignored = tuple(c for c in frame.columns if c not in INTERACTION_REQUIRED + INTERACTION_OPTIONAL)
    _stage(on_stage, "write")
    _, n_inter, n_shoppers = write_dataset(
        store,
        interactions=clean,
        source=f"file:{Path(path).name}",
        interaction_table=table,
        limits=settings.imports,
    )
    report = ImportReport(
        "interaction",
        str(path),
        len(frame),
        n_inter,
        shoppers_added=n_shoppers,
        seconds=time.perf_counter() - started,
        ignored_columns=ignored,
    )
    log.info(report.summary())
    return report


def _stage(callback: StageCallback | None, name: str) -> None:
    if callback is not None:
        callback(name)
