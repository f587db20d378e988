"""Importing a catalogue and shopper interactions from files: validate everything first, then write once.

A user hands us a CSV, Parquet or JSONL file. We read it (refusing unknown formats and text that is
not UTF-8), rename columns through an optional mapping (``{"title": "name"}`` means our ``title``
comes from the file's ``name`` column), check every row with vectorised pandas rules, and only when
the whole file is clean write it in ONE store transaction. A file with any problem imports nothing; the
:class:`~storage.errors.ValidationError` lists each problem with the row it is on (``line N`` for CSV
and JSONL, counting the header as line 1; ``row N`` for Parquet) and what is wrong.

The same frame-level functions serve the UCI Online Retail adapter (:func:`import_online_retail`) and
the demo shop, so every path into the catalogue passes the same rules.

Canonical columns
- catalogue: ``item_id``, ``title`` (required); ``description``, ``category``, ``price``,
  ``attributes`` (a JSON object). Other columns become ``attributes`` when the file has no
  ``attributes`` column; otherwise they are ignored (and reported).
- interactions: ``shopper_id``, ``item_id``, ``ts`` (required; ``timestamp`` is accepted as a name too),
  ``event`` (default ``purchase``), ``quantity`` (default 1). Timestamps with a time zone are converted
  to UTC and stored without one; everything else is stored as written.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf.errors import ImportFileError
from rlhf.settings import ImportSettings, Settings, get_settings
from storage import Store
from storage import catalog as catalog_repo
from storage.errors import ValidationError

log = logging.getLogger(__name__)

#: File name endings we can read, and the reader used for each.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

CATALOG_REQUIRED = ("item_id", "title")
CATALOG_OPTIONAL = ("description", "category", "price", "attributes")
INTERACTION_REQUIRED = ("shopper_id", "item_id", "ts")
INTERACTION_OPTIONAL = ("event", "quantity")
#: Other names accepted for canonical interaction columns when the canonical one is absent.
INTERACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("timestamp", "time", "datetime"),
    "shopper_id": ("shopper", "customer_id", "user_id"),
    "item_id": ("item",),
}

#: Called with a short stage name ("read", "validate", "write") as an import progresses.
StageCallback = Callable[[str], None]


class FileRejectedError(ImportFileError, ValidationError):
    """The file cannot be read at all: unknown format, not UTF-8, malformed CSV/JSON, unreadable Parquet.

    It is both an :class:`~rlhf.errors.ImportFileError` and a :class:`~storage.errors.ValidationError`
    (with ``problems``), so callers may catch either.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        ValidationError.__init__(self, message, problems)


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
        text = f"Imported {self.rows_written:,} {self.kind} rows from {self.source} in {self.seconds:.1f} s"
        if self.shoppers_added:
            text += f" ({self.shoppers_added:,} new shoppers)"
        if self.ignored_columns:
            text += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return text + "."


# --- reading files -----------------------------------------------------------------------------------


@dataclass
class RawTable:
    """A file's rows as strings/values plus how to name each row for the user."""

    frame: pd.DataFrame
    path: str
    unit: str  # "line" (CSV/JSONL, 1-based file lines) or "row" (Parquet, 1-based rows)
    positions: np.ndarray  # the 1-based line or row number of each frame row

    def where(self, i: int) -> str:
        return f"{self.unit} {int(self.positions[i])}"


def read_table(path: str | Path) -> RawTable:
    """Read a CSV/TSV, Parquet or JSONL file into a frame without interpreting values yet.

    CSV cells stay strings (so that "abc" in a price column is reported rather than silently dropped).
    Raises :class:`FileRejectedError` for a missing file, an unknown extension, text that is not UTF-8
    (naming the byte offset and line), or a malformed file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileRejectedError(f"{p} does not exist or is not a file.")
    suffix = p.suffix.lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        raise FileRejectedError(
            f"{p.name}: unknown file type {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))}."
        )
    if kind == "parquet":
        try:
            frame = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise FileRejectedError(f"{p.name} is not a readable Parquet file: {exc}") from exc
        return RawTable(frame.reset_index(drop=True), str(p), "row", np.arange(1, len(frame) + 1))
    text = _decode_utf8(p)
    if kind in ("csv", "tsv"):
        return _parse_csv(text, p, "\t" if kind == "tsv" else ",")
    return _parse_jsonl(text, p)


def _decode_utf8(p: Path) -> str:
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise FileRejectedError(
            f"{p.name} is not UTF-8 text: byte 0x{bad} at byte offset {exc.start} (line {line}) cannot be "
            "decoded. Save the file as UTF-8 and import it again; nothing was imported.",
            [f"line {line}: byte 0x{bad} at offset {exc.start} is not valid UTF-8"],
        ) from exc
    return text.removeprefix("\ufeff")


def _parse_csv(text: str, p: Path, sep: str) -> RawTable:
    if not text.strip():
        raise FileRejectedError(f"{p.name} is empty.")
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False
        )
    except pd.errors.ParserError as exc:
        raise FileRejectedError(f"{p.name} is not a well-formed CSV file: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    # A record's first line: the header is line 1; quoted cells may span several lines.
    newlines = np.zeros(len(frame), dtype=np.int64)
    for column in frame.columns:
        newlines += frame[column].str.count("\n").fillna(0).to_numpy(dtype=np.int64)
    starts = (
        2 + np.concatenate([[0], np.cumsum(1 + newlines)[:-1]])
        if len(frame)
        else np.array([], dtype=np.int64)
    )
    blank = (frame == "").all(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), bool)
    frame = frame.loc[~blank].reset_index(drop=True)
    return RawTable(frame, str(p), "line", starts[~blank])


def _parse_jsonl(text: str, p: Path) -> RawTable:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileRejectedError(
                f"{p.name} line {number} is not valid JSON ({exc.msg} at column {exc.colno}); nothing was imported.",
                [f"line {number}: not valid JSON ({exc.msg})"],
            ) from exc
        if not isinstance(value, dict):
            raise FileRejectedError(
                f"{p.name} line {number} is a JSON {type(value).__name__}, not an object; "
                'each line must be one record like {"item_id": ..., "title": ...}.',
                [f"line {number}: not a JSON object"],
            )
        records.append(value)
        lines.append(number)
    if not records:
        raise FileRejectedError(f"{p.name} is empty.")
    frame = pd.DataFrame.from_records(records)
    frame.columns = [str(c).strip() for c in frame.columns]
    return RawTable(frame, str(p), "line", np.asarray(lines, dtype=np.int64))


# --- column mapping ----------------------------------------------------------------------------------


def parse_mapping(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["title=name", "item_id=sku"]`` -> ``{"title": "name", "item_id": "sku"}`` (ours = theirs)."""
    mapping: dict[str, str] = {}
    for pair in pairs or ():
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ImportFileError(f"--map {pair!r} should look like OUR_COLUMN=FILE_COLUMN, e.g. title=name.")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def apply_mapping(
    frame: pd.DataFrame,
    mapping: Mapping[str, str] | None,
    *,
    known: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Rename file columns to our names. Returns the frame and problems (a mapped column that is absent).

    Canonical names match case-insensitively; ``aliases`` supply other accepted names.
    """
    problems: list[str] = []
    columns = list(frame.columns)
    rename: dict[str, str] = {}
    for ours, theirs in (mapping or {}).items():
        if ours not in known:
            problems.append(
                f"--map {ours}={theirs}: {ours!r} is not a column we use (we use {', '.join(known)})"
            )
            continue
        match = theirs if theirs in columns else _casefold_match(theirs, columns)
        if match is None:
            problems.append(
                f"--map {ours}={theirs}: the file has no column {theirs!r} (it has {', '.join(map(str, columns))})"
            )
            continue
        rename[match] = ours
    taken = set(rename.values())
    for ours in known:
        if ours in taken:
            continue
        for candidate in (ours, *((aliases or {}).get(ours, ()))):
            match = _casefold_match(candidate, columns)
            if match is not None and match not in rename:
                rename[match] = ours
                taken.add(ours)
                break
    # Columns shadowed by a mapping (the file also has a column named like one of ours) are dropped.
    shadowed = [c for c in columns if c in taken and c not in rename]
    out = frame.drop(columns=shadowed).rename(columns=rename)
    return out, problems


def _casefold_match(name: str, columns: list[Any]) -> str | None:
    folded = name.casefold()
    for c in columns:
        if str(c).casefold() == folded:
            return c
    return None


# --- validation helpers ------------------------------------------------------------------------------


class _Problems:
    """Collects (row position, message) pairs with a cap, and formats them in file order."""

    def __init__(self, table: RawTable | None, cap: int) -> None:
        self.table = table
        self.cap = cap
        self.rows: list[tuple[int, str]] = []
        self.general: list[str] = []
        self.extra = 0

    def add_general(self, message: str) -> None:
        self.general.append(message)

    def add(self, mask: np.ndarray | pd.Series, message: Callable[[int], str]) -> None:
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        room = max(self.cap - len(self.rows), 0)
        for i in idx[:room]:
            self.rows.append((int(i), message(int(i))))
        self.extra += max(len(idx) - room, 0)

    def __bool__(self) -> bool:
        return bool(self.general or self.rows or self.extra)

    def messages(self) -> list[str]:
        where = self.table.where if self.table is not None else (lambda i: f"row {i + 1}")
        out = list(self.general)
        out += [f"{where(i)}: {m}" for i, m in sorted(self.rows, key=lambda r: r[0])]
        if self.extra:
            out.append(f"... and {self.extra:,} more problems")
        return out

    def raise_if_any(self, what: str) -> None:
        if not self:
            return
        n = len(self.general) + len(self.rows) + self.extra
        rows = len({i for i, _ in self.rows})
        place = f" in {rows:,}{'+' if self.extra else ''} rows" if rows else ""
        raise ValidationError(
            f"{what} has {n:,} problem{'s' if n != 1 else ''}{place}; nothing was imported.", self.messages()
        )


def _text(series: pd.Series) -> pd.Series:
    """Values as stripped strings, missing values as ''. Integral floats lose their '.0'."""
    if pd.api.types.is_float_dtype(series):
        as_int = series.dropna()
        if len(as_int) and (as_int == np.floor(as_int)).all():
            series = series.astype("Int64")
    out = series.astype("string").fillna("").str.strip()
    return out.astype(object)


def _member(values: np.ndarray, known: Any) -> np.ndarray:
    """Boolean mask: which ``values`` are in ``known`` (a hash lookup on object arrays, fast for millions)."""
    index = pd.Index(np.asarray(list(known), dtype=object), dtype=object).unique()
    return index.get_indexer(np.asarray(values, dtype=object)) >= 0


def _not_in(values: np.ndarray, known: Any) -> np.ndarray:
    """Boolean mask: which ``values`` are NOT in ``known``; looks up each distinct value once."""
    uniques = pd.unique(np.asarray(values, dtype=object))
    missing = uniques[~_member(uniques, known)]
    if len(missing) == 0:
        return np.zeros(len(values), dtype=bool)
    return _member(values, missing)


def _num(x: float) -> str:
    """2000000.0 -> '2,000,000'; 3.5 -> '3.5' (for messages)."""
    return f"{x:,.2f}".rstrip("0").rstrip(".")


def _short(value: Any, n: int = 40) -> str:
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def _check_lengths(problems: _Problems, values: pd.Series, limit: int, label: str) -> None:
    lengths = values.str.len().to_numpy()
    problems.add(lengths > limit, lambda i: f"{label} is {lengths[i]:,} characters (limit {limit:,})")


def _check_missing(problems: _Problems, frame: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    have = ", ".join(map(str, frame.columns)) or "none"
    for column in required:
        if column not in frame.columns:
            problems.add_general(
                f"missing column {column!r} in the {what} file (it has: {have}); "
                f"rename it or map one with --map {column}=YOUR_COLUMN"
            )


# --- catalogue ---------------------------------------------------------------------------------------


def validate_catalog(
    frame: pd.DataFrame,
    *,
    limits: ImportSettings,
    table: RawTable | None = None,
    what: str = "The catalogue file",
) -> pd.DataFrame:
    """Check catalogue rows and return a clean frame with the catalog_items columns.

    Rules: required columns present; item id not empty, within the length limit, unique in the file;
    title not empty; text within the limits; price empty or a number in [0, max_price]; attributes a
    JSON object. Raises ValidationError listing every problem (first ``limits.max_problems``).
    Duplicates against the stored catalogue are checked at write time, inside the transaction.
    """
    problems = _Problems(table, limits.max_problems)
    _check_missing(problems, frame, CATALOG_REQUIRED, "catalogue")
    problems.raise_if_any(what)

    item_id = _text(frame["item_id"])
    title = _text(frame["title"])
    problems.add(item_id == "", lambda i: "empty item id")
    _check_lengths(problems, item_id, limits.max_item_id_chars, "item id")
    problems.add(title == "", lambda i: "empty title")
    _check_lengths(problems, title, limits.max_title_chars, "title")

    dup = item_id.duplicated(keep=False) & (item_id != "")
    if dup.any():
        where = table.where if table is not None else (lambda i: f"row {i + 1}")
        positions = np.flatnonzero(dup.to_numpy())
        shown_ids = set(item_id.to_numpy()[positions[: limits.max_problems]].tolist())  # only what is listed
        groups = pd.Series(positions, index=item_id.to_numpy()[positions])
        groups = groups[_member(groups.index.to_numpy(), shown_ids)]
        places = groups.groupby(level=0).agg(lambda s: ", ".join(where(i) for i in s.iloc[:5]))
        ids = item_id.to_numpy()
        problems.add(
            dup.to_numpy(), lambda i: f"duplicate item id {_short(ids[i])!r} (appears at {places[ids[i]]})"
        )

    out = pd.DataFrame({"item_id": item_id, "title": title})
    for column, limit in (
        ("description", limits.max_description_chars),
        ("category", limits.max_category_chars),
    ):
        if column in frame.columns:
            values = _text(frame[column])
            _check_lengths(problems, values, limit, column)
            out[column] = values.where(values != "", None)
        else:
            out[column] = None

    if "price" in frame.columns:
        raw = frame["price"]
        text = _text(raw) if not pd.api.types.is_numeric_dtype(raw) else None
        price = pd.to_numeric(raw if text is None else text.where(text != "", None), errors="coerce")
        price = price.astype("float64")
        present = raw.notna().to_numpy() if text is None else (text != "").to_numpy()
        values = price.to_numpy()
        shown = (raw if text is None else text).to_numpy()
        not_number = present & ~np.isfinite(values)
        problems.add(not_number, lambda i: f"price {_short(shown[i])!r} is not a number")
        ok = present & np.isfinite(values)
        problems.add(ok & (values < 0), lambda i: f"price {_num(values[i])} is negative")
        problems.add(
            ok & (values > limits.max_price),
            lambda i: f"price {_num(values[i])} is above the limit {_num(limits.max_price)}",
        )
        out["price"] = price.where(present, None)
    else:
        out["price"] = np.nan

    extra = [c for c in frame.columns if c not in CATALOG_REQUIRED + CATALOG_OPTIONAL]
    if "attributes" in frame.columns:
        attrs, bad = _json_objects(frame["attributes"])
        problems.add(bad, lambda i: "attributes is not a JSON object")
        out["attributes"] = attrs
    elif extra:
        out["attributes"] = _rows_as_json(frame[extra])
    else:
        out["attributes"] = None
    problems.raise_if_any(what)
    out.attrs["ignored_columns"] = tuple(extra) if "attributes" in frame.columns else ()
    return out


def _json_objects(series: pd.Series) -> tuple[list[str | None], np.ndarray]:
    """Each value as JSON object text (dicts are dumped; strings must parse to an object)."""
    out: list[str | None] = []
    bad = np.zeros(len(series), dtype=bool)
    for i, value in enumerate(series.tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            out.append(None)
        elif isinstance(value, dict):
            out.append(json.dumps(value, ensure_ascii=False, default=str))
        else:
            try:
                parsed = json.loads(value) if isinstance(value, str) else None
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                out.append(json.dumps(parsed, ensure_ascii=False))
            else:
                bad[i] = True
                out.append(None)
    return out, bad


def _rows_as_json(frame: pd.DataFrame) -> list[str]:
    """Extra columns packed into one JSON object per row (pandas' C writer, not a Python loop)."""
    text = frame.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    return text.strip("\n").split("\n") if len(frame) else []


# --- interactions ------------------------------------------------------------------------------------


def validate_interactions(
    frame: pd.DataFrame,
    *,
    known_items: set[str] | pd.Index | None,
    limits: ImportSettings,
    table: RawTable | None = None,
    what: str = "The interactions file",
) -> pd.DataFrame:
    """Check interaction rows and return a clean frame (shopper_id, item_id, event, ts, quantity).

    ``known_items`` are the item ids that exist (the stored catalogue, plus one being imported at the
    same time); None skips that check (the caller checks inside its transaction).
    """
    problems = _Problems(table, limits.max_problems)
    _check_missing(problems, frame, INTERACTION_REQUIRED, "interactions")
    problems.raise_if_any(what)

    shopper = _text(frame["shopper_id"])
    item = _text(frame["item_id"])
    problems.add(shopper == "", lambda i: "empty shopper id")
    _check_lengths(problems, shopper, limits.max_shopper_id_chars, "shopper id")
    problems.add(item == "", lambda i: "empty item id")
    if known_items is not None:
        items = item.to_numpy()
        unknown = _not_in(items, known_items) & (items != "")
        problems.add(unknown, lambda i: f"item {_short(items[i])!r} is not in the catalogue")

    ts, bad_ts, shown_ts = _parse_timestamps(frame["ts"])
    problems.add(
        bad_ts, lambda i: f"timestamp {_short(shown_ts[i])!r} is not a date and time (e.g. 2024-05-01 14:30)"
    )

    allowed = [e.lower() for e in limits.events]
    if "event" in frame.columns:
        event = _text(frame["event"]).str.lower()
        ev = event.to_numpy()
        problems.add(
            ~event.isin(allowed).to_numpy(),
            lambda i: f"event {_short(ev[i])!r} is not one of {', '.join(allowed)}",
        )
    else:
        event = pd.Series(["purchase"] * len(frame), dtype=object)

    if "quantity" in frame.columns:
        raw = frame["quantity"]
        text = _text(raw)
        q = pd.to_numeric(text.where(text != "", "1"), errors="coerce").to_numpy(dtype="float64")
        shown = text.to_numpy()
        not_int = ~np.isfinite(q) | (q != np.floor(np.nan_to_num(q)))
        problems.add(not_int, lambda i: f"quantity {_short(shown[i])!r} is not a whole number")
        ok = ~not_int
        problems.add(
            ok & (q < 1),
            lambda i: f"quantity {_num(q[i])} is below 1 (returns and cancellations are not imported)",
        )
        problems.add(
            ok & (q > limits.max_quantity),
            lambda i: f"quantity {_num(q[i])} is above the limit {limits.max_quantity:,}",
        )
        quantity = np.where(ok, np.nan_to_num(q), 1).astype(np.int64)
    else:
        quantity = np.ones(len(frame), dtype=np.int64)
    problems.raise_if_any(what)
    return pd.DataFrame(
        {
            "shopper_id": shopper.to_numpy(),
            "item_id": item.to_numpy(),
            "event": event.to_numpy(),
            "ts": ts,
            "quantity": quantity,
        }
    )


def _parse_timestamps(series: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse a timestamp column (ISO 8601 fast path, then mixed formats); tz-aware values become UTC."""
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = series
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        ts = ts.astype("datetime64[us]")
        bad = ts.isna().to_numpy()
        return ts.reset_index(drop=True), bad, series.astype(str).to_numpy()
    text = _text(series)
    shown = text.to_numpy()
    if pd.api.types.is_numeric_dtype(series):  # epoch numbers are ambiguous (s? ms?): refuse them
        bad = np.ones(len(series), dtype=bool)
        return pd.Series(pd.NaT, index=range(len(series)), dtype="datetime64[us]"), bad, shown
    parsed = pd.to_datetime(text.where(text != "", None), errors="coerce", format="ISO8601", utc=True)
    missing = parsed.isna().to_numpy() & (shown != "")
    if missing.any():
        retry = pd.to_datetime(text[missing], errors="coerce", format="mixed", utc=True)
        parsed = parsed.copy()
        parsed[missing] = retry
    # A bare number ("12345") parses as a year-ish date in 'mixed'; refuse it as ambiguous.
    numeric = text.astype("string").str.fullmatch(r"-?\d+(\.\d+)?").fillna(False).to_numpy(dtype=bool)
    bad = parsed.isna().to_numpy() | numeric
    ts = parsed.dt.tz_localize(None).astype("datetime64[us]").reset_index(drop=True)
    return ts, bad, shown


# --- writing -----------------------------------------------------------------------------------------


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
    nothing written). Shoppers named by interactions are created when new. Returns
    (items written, interactions written, shoppers added).
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
                problems.raise_if_any("The catalogue file")
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
            problems.raise_if_any("The interactions file")
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


def import_catalog(
    store: Store,
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    on_stage: StageCallback | None = None,
) -> ImportReport:
    """Import catalogue items from a CSV/Parquet/JSONL file: all rows or none.

    Raises FileRejectedError for unreadable files and ValidationError (``.problems``) for bad rows,
    ids already in the catalogue, or a mapping that names absent columns.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    table = read_table(path)
    frame, problems = apply_mapping(table.frame, mapping, known=CATALOG_REQUIRED + CATALOG_OPTIONAL)
    if problems:
        raise ValidationError(
            f"The column mapping does not fit {Path(path).name}; nothing was imported.", problems
        )
    _stage(on_stage, "validate")
    what = f"{Path(path).name}"
    clean = validate_catalog(frame, limits=settings.imports, table=table, what=what)
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
) -> ImportReport:
    """Import interactions (shopper, item, timestamp, event, quantity) from a file: all rows or none.

    Every item must already be in the catalogue; new shoppers are created. Re-importing rows that are
    already stored is refused rather than doubling them.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    table = read_table(path)
    frame, problems = apply_mapping(
        table.frame, mapping, known=INTERACTION_REQUIRED + INTERACTION_OPTIONAL, aliases=INTERACTION_ALIASES
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
        frame, known_items=known, limits=settings.imports, table=table, what=Path(path).name
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


# --- UCI Online Retail -------------------------------------------------------------------------------

#: Stock codes that are postage, fees, manual adjustments, samples or vouchers, not products (SOURCE.md).
ONLINE_RETAIL_NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "m", "D", "C2", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}
)
ONLINE_RETAIL_NON_PRODUCT_PREFIXES = ("DCGS", "gift_0001_")

#: Coarse categories from title keywords, first match wins; titles matching none are "other".
#: This is a heuristic over the product titles (the data set has no categories), stated as such.
ONLINE_RETAIL_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("christmas", r"CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|SNOWFLAKE|SNOWMAN|BAUBLE|NATIVITY"),
    ("easter", r"EASTER|\bCHICKS?\b|\bBUNNY\b"),
    (
        "jewellery",
        r"NECKLACE|BRACELET|EARRINGS|\bCHARM\b|\bBEADS?\b|DIAMANTE|BROOCH|PENDANT|\bHAIR|\bRING\b(?! OF)",
    ),
    (
        "candles & lighting",
        r"CANDLE|T-LIGHT|T LIGHT|TEALIGHT|LANTERN|\bLIGHTS?\b|\bLAMP|INCENSE|NIGHT ?LIGHT",
    ),
    (
        "party & gift wrap",
        r"\bPARTY\b|BALLOON|BIRTHDAY|\bWRAP\b|GIFT BAG|GIFT TAPE|\bRIBBONS?\b|TISSUE|BUNTING|CONFETTI",
    ),
    (
        "stationery & cards",
        (
            r"\bCARDS?\b|NOTEBOOK|\bPENS?\b|PENCIL|STICKER|\bTAPE\b|ENVELOPE|JOURNAL|ERASER|CRAYON|"
            r"CALENDAR|\bPAPER\b|NOTEPAD|BOOKMARK|\bBOOK\b|STATIONERY|\bCHALK\b"
        ),
    ),
    (
        "kitchen & dining",
        (
            r"\bMUGS?\b|\bCUPS?\b|\bBOWLS?\b|\bPLATES?\b|\bTEA\b|COFFEE|\bCAKE\b|CUTLERY|\bTRAY\b|\bJAR\b|"
            r"KITCHEN|LUNCH|\bDISH\b|TEAPOT|SPOON|APRON|NAPKIN|BAKING|RECIPE|PANTRY|CHOPSTICK|"
            r"\bJUG\b|BEAKER|\bGLASS(?:ES)?\b|TUMBLER|PICNIC|BISCUIT|JAM|CHOPPING|OVEN|DINNER|\bTINS?\b|"
            r"BOTTLE|\bFORK\b|KNIFE|TEA TOWEL|EGG CUP|COASTER|PLACEMAT|STRAW|CASES|PLATTER|BREAD"
        ),
    ),
    (
        "bags & accessories",
        (
            r"\bBAGS?\b|PURSE|HANDBAG|UMBRELLA|PARASOL|WALLET|SHOPPER|\bCASE\b|SCARF|GLOVES|"
            r"\bHAT\b|KEY RING|KEYRING|MIRROR COMPACT|BACKPACK|LUGGAGE"
        ),
    ),
    (
        "toys & games",
        (
            r"\bTOYS?\b|JIGSAW|\bGAMES?\b|DOLL|CHILDRENS|CHILDS|\bKIDS?\b|\bBALL\b|PLAYHOUSE|PUPPET|TEDDY|"
            r"SKITTLES|DOMINO|SPACEBOY|CIRCUS|SOLDIER|POP.?UP|COLOURING|CRAYONS|PAINTING SET|MAGIC"
        ),
    ),
    (
        "garden & outdoor",
        (
            r"GARDEN|\bPLANT|WATERING|BIRD|TRUG|\bPOTS?\b|PLANTER|HERB|SEED|GNOME|OUTDOOR|"
            r"\bFEEDER\b|\bHEN\b|\bDOVE\b"
        ),
    ),
    (
        "bath & body",
        (
            r"\bBATH|SOAP|TOILETRY|COSMETIC|MAKE UP|HOT WATER BOTTLE|SPONGE|WASHBAG|TOWEL|LIP GLOSS|"
            r"NAIL|PERFUME|BALM"
        ),
    ),
    (
        "home decor",
        (
            r"\bSIGN\b|FRAME|MIRROR|CLOCK|CUSHION|DOORMAT|\bHOOKS?\b|DECORATION|GARLAND|WREATH|DRAWER|\bKNOB\b|"
            r"CABINET|\bTILE\b|ORNAMENT|VASE|HANGER|STORAGE|\bBOX(?:ES)?\b|BASKET|SHELF|\bDOOR\b|"
            r"WALL ART|PICTURE|PHOTO|\bHEART\b|\bSTAND\b|\bRACK\b|PLAQUE|\bBELL\b|THROW|QUILT|"
            r"BLANKET|CHANDELIER|\bHOLDER\b|MAGNET|DOORSTOP|COAT|CURTAIN|\bRUG\b|TRINKET|BUNTING|FLAG|"
            r"ART FLOWER|ARTIFICIAL FLOWER|\bBIN\b|BUCKET|LETTERS|\bFAN\b|MOBILE|MEMOBOARD"
        ),
    ),
)


@dataclass(frozen=True)
class OnlineRetailReport:
    """What the UCI Online Retail adapter kept and why it dropped the rest."""

    items: int
    interactions: int
    shoppers: int
    rows_read: int
    dropped: dict[str, int]
    products_dropped: dict[str, int]
    category_counts: dict[str, int]
    seconds: float

    def summary(self) -> str:
        dropped = ", ".join(f"{k}: {v:,}" for k, v in self.dropped.items())
        return (
            f"Imported {self.items:,} products, {self.interactions:,} purchases and {self.shoppers:,} shoppers "
            f"from {self.rows_read:,} invoice lines in {self.seconds:.1f} s (dropped {dropped})."
        )


def online_retail_non_product(codes: pd.Series) -> pd.Series:
    """True where a StockCode is postage, a fee, an adjustment, a sample or a voucher."""
    codes = codes.astype("string").fillna("")
    mask = codes.isin(ONLINE_RETAIL_NON_PRODUCT_CODES)
    for prefix in ONLINE_RETAIL_NON_PRODUCT_PREFIXES:
        mask |= codes.str.startswith(prefix)
    return mask.astype(bool)


def online_retail_note(descriptions: pd.Series) -> pd.Series:
    """True where a Description is a warehouse note rather than a product title.

    Product titles in this data set are written in capitals ("WHITE HANGING HEART T-LIGHT HOLDER");
    the notes are not ("?", "damaged", "check", "Found", "wrongly marked 23343", "Manual",
    "Next Day Carriage"). Rule: empty, or no more capital letters than small ones. A few real products
    written in mixed case ("*Boombox Ipod Classic") are dropped by it too; none has a customer.
    """
    codes, uniques = pd.factorize(descriptions.astype("string").fillna(""), sort=False)
    d = pd.Series(uniques, dtype="string").str.strip()  # each distinct text once: ~4k, not 400k
    upper = d.str.count(r"[A-Z]").fillna(0)
    lower = d.str.count(r"[a-z]").fillna(0)
    is_note = ((d == "") | (upper <= lower)).to_numpy(dtype=bool)
    return pd.Series(is_note[codes], index=descriptions.index)


def online_retail_category(titles: pd.Series) -> pd.Series:
    """A coarse category for each title from ONLINE_RETAIL_CATEGORIES (first matching keyword rule)."""
    upper = titles.astype("string").fillna("").str.upper()
    out = pd.Series("other", index=titles.index, dtype=object)
    unassigned = pd.Series(True, index=titles.index)
    for name, pattern in ONLINE_RETAIL_CATEGORIES:
        hit = unassigned & upper.str.contains(pattern, regex=True).fillna(False).astype(bool)
        out[hit] = name
        unassigned &= ~hit
    return out


def online_retail_frames(
    path_dir: str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read the UCI Online Retail Parquet files and apply the cleaning rules (no store involved).

    Returns (items, interactions, shoppers, stats). Invoice lines are dropped, counted under the first
    rule that applies, in this order: no CustomerID; cancellation (InvoiceNo starts with "C"); non-product
    stock code; Quantity <= 0 (returns); UnitPrice <= 0; warehouse-note Description; product not in the
    cleaned catalogue. Products are dropped when non-product, with a note or no Description, or without a
    positive median price. Items: title = Description, price = median_unit_price, category =
    :func:`online_retail_category`. Interactions: event "purchase", ts = InvoiceDate, quantity.
    """
    folder = Path(path_dir)
    lines_path, products_path = folder / "online_retail.parquet", folder / "products.parquet"
    for p in (lines_path, products_path):
        if not p.is_file():
            raise ImportFileError(
                f"{p} not found: the UCI Online Retail folder must hold online_retail.parquet and products.parquet."
            )
    lines = pd.read_parquet(lines_path)
    products = pd.read_parquet(products_path)
    need = {
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    }
    missing = need - set(lines.columns)
    if missing:
        raise ImportFileError(
            f"{lines_path.name} lacks the columns {', '.join(sorted(missing))}; is it the UCI file?"
        )

    p_codes = products["StockCode"].astype("string")
    p_rules = {
        "non-product code": online_retail_non_product(p_codes),
        "note or no description": online_retail_note(products["Description"]),
        "no positive price": ~(products["median_unit_price"].fillna(0) > 0),
    }
    keep_p = pd.Series(True, index=products.index)
    products_dropped: dict[str, int] = {}
    for name, mask in p_rules.items():
        hit = keep_p & mask
        products_dropped[name] = int(hit.sum())
        keep_p &= ~mask
    kept = products[keep_p]
    titles = kept["Description"].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    items = pd.DataFrame(
        {
            "item_id": kept["StockCode"].astype(str).to_numpy(),
            "title": titles.astype(object).to_numpy(),
            "description": None,
            "category": online_retail_category(titles).to_numpy(),
            "price": kept["median_unit_price"].astype(float).round(2).to_numpy(),
        }
    )
    items["attributes"] = _rows_as_json(
        kept[["n_customers", "total_quantity", "n_distinct_descriptions"]].reset_index(drop=True)
    )

    rules = {
        "no CustomerID": lines["CustomerID"].isna().to_numpy(),
        "cancellation": lines["InvoiceNo"]
        .astype("string")
        .str.startswith("C")
        .fillna(False)
        .to_numpy(dtype=bool),
        "non-product code": online_retail_non_product(lines["StockCode"]).to_numpy(),
        "return (quantity <= 0)": (lines["Quantity"] <= 0).to_numpy(),
        "price <= 0": (lines["UnitPrice"] <= 0).to_numpy(),
        "warehouse note": online_retail_note(lines["Description"]).to_numpy(),
        "product not in catalogue": ~lines["StockCode"].isin(items["item_id"]).to_numpy(),
    }
    keep = np.ones(len(lines), dtype=bool)
    dropped: dict[str, int] = {}
    for name, mask in rules.items():
        dropped[name] = int((keep & mask).sum())
        keep &= ~mask
    sel = lines[keep]
    interactions = pd.DataFrame(
        {
            "shopper_id": sel["CustomerID"].astype("int64").astype(str).to_numpy(),
            "item_id": sel["StockCode"].astype(str).to_numpy(),
            "event": "purchase",
            "ts": sel["InvoiceDate"].astype("datetime64[us]").to_numpy(),
            "quantity": sel["Quantity"].astype("int64").to_numpy(),
        }
    )
    country = (
        pd.DataFrame(
            {"shopper_id": interactions["shopper_id"], "country": sel["Country"].astype(str).to_numpy()}
        )
        .groupby(["shopper_id", "country"])
        .size()
        .reset_index(name="n")
        .sort_values(["shopper_id", "n", "country"], ascending=[True, False, True])
        .drop_duplicates("shopper_id")
    )
    shoppers = pd.DataFrame(
        {"shopper_id": country["shopper_id"].to_numpy(), "segment": country["country"].to_numpy()}
    )
    shoppers["attributes"] = _rows_as_json(country[["country"]].reset_index(drop=True))
    stats = {"rows_read": len(lines), "dropped": dropped, "products_dropped": products_dropped}
    return items, interactions, shoppers, stats


def import_online_retail(
    store: Store,
    path_dir: str | Path,
    *,
    settings: Settings | None = None,
    on_stage: StageCallback | None = None,
) -> OnlineRetailReport:
    """Import the UCI Online Retail data set (products, purchases, shoppers) in one transaction.

    Cleaning rules: :func:`online_retail_frames`. The cleaned frames then pass the same validation as
    any file import, so a second run is refused (the items already exist) and nothing is half-written.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    _stage(on_stage, "read")
    items, interactions, shoppers, stats = online_retail_frames(path_dir)
    _stage(on_stage, "validate")
    clean_items = validate_catalog(items, limits=settings.imports, what="UCI Online Retail products")
    clean_inter = validate_interactions(
        interactions,
        known_items=pd.Index(clean_items["item_id"]),
        limits=settings.imports,
        what="UCI Online Retail invoice lines",
    )
    _stage(on_stage, "write")
    n_items, n_inter, n_shoppers = write_dataset(
        store,
        items=clean_items,
        interactions=clean_inter,
        shoppers=shoppers,
        source="uci_online_retail",
        limits=settings.imports,
    )
    report = OnlineRetailReport(
        items=n_items,
        interactions=n_inter,
        shoppers=n_shoppers,
        rows_read=stats["rows_read"],
        dropped=stats["dropped"],
        products_dropped=stats["products_dropped"],
        category_counts=clean_items["category"].value_counts().to_dict(),
        seconds=time.perf_counter() - started,
    )
    log.info(report.summary())
    return report
