"""Validating a catalogue or an interactions frame: every problem, with the row it is on, before anything is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from rlhf.importing.files import CLI_WORDING, MappingWording, RawTable
from rlhf.settings import ImportSettings
from rlhf.wording import counted
from storage.errors import ValidationError

CATALOG_REQUIRED = ("item_id", "title")
CATALOG_OPTIONAL = ("description", "category", "price", "attributes")
INTERACTION_REQUIRED = ("shopper_id", "item_id", "ts")
INTERACTION_OPTIONAL = ("event", "quantity")
#: What makes two interactions the same one (the store's duplicate check compares the same columns).
INTERACTION_KEY = ("shopper_id", "item_id", "event", "ts")
#: How far past the time of import a timestamp may lie: naive times may be local, up to a day ahead of UTC.
FUTURE_SLACK = timedelta(days=1)
#: Other names accepted for canonical interaction columns when the canonical one is absent.
INTERACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("timestamp", "time", "datetime"),
    "shopper_id": ("shopper", "customer_id", "user_id"),
    "item_id": ("item",),
}


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
        place = f" in {rows:,}+ rows" if self.extra else f" in {counted(rows, 'row')}" if rows else ""
        raise ValidationError(f"{what} has {counted(n, 'problem')}{place}; nothing was imported.", self.messages())


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
    """2000000.0 -> '2,000,000'; 3.5 -> '3.5'; 1e308 -> '1e+308' (for messages: no 300-digit numbers)."""
    if abs(x) >= 1e15:
        return f"{x:.3g}"
    return f"{x:,.2f}".rstrip("0").rstrip(".")


def _short(value: Any, n: int = 40) -> str:
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def _check_lengths(problems: _Problems, values: pd.Series, limit: int, label: str) -> None:
    lengths = values.str.len().to_numpy()
    problems.add(lengths > limit, lambda i: f"{label} is {lengths[i]:,} characters (limit {limit:,})")


def _check_missing(
    problems: _Problems,
    frame: pd.DataFrame,
    required: tuple[str, ...],
    what: str,
    wording: MappingWording = CLI_WORDING,
) -> None:
    """One general problem per required column the frame lacks, saying how to map one (in ``wording``)."""
    have = ", ".join(map(str, frame.columns)) or "none"
    for column in required:
        if column not in frame.columns:
            hint = wording.fix_missing(column)
            problems.add_general(f"missing column {column!r} in the {what} file (it has: {have}); {hint}")


def _same_places(
    groups: np.ndarray, repeated: np.ndarray, table: RawTable | None, cap: int
) -> Callable[[int], str]:
    """For rows that share a group with another row: a function giving where that group's rows are.

    ``groups`` holds one code per row (equal codes: the same value); only the first ``cap`` repeated
    rows' groups are described (the problem list stops there) and each with its first 5 places.
    """
    where = table.where if table is not None else (lambda i: f"row {i + 1}")
    positions = np.flatnonzero(repeated)
    shown = np.unique(groups[positions[:cap]])
    places: dict[int, list[str]] = {}
    for i in positions[np.isin(groups[positions], shown)]:
        code = int(groups[i])
        if len(places.setdefault(code, [])) < 5:
            places[code].append(where(int(i)))
    return lambda i: ", ".join(places.get(int(groups[i]), []))


def validate_catalog(
    frame: pd.DataFrame,
    *,
    limits: ImportSettings,
    table: RawTable | None = None,
    what: str = "The catalogue file",
    wording: MappingWording = CLI_WORDING,
) -> pd.DataFrame:
    """Check catalogue rows and return a clean frame with the catalog_items columns.

    Rules: required columns present; item id not empty, within the length limit, unique in the file;
    title not empty; text within the limits; price empty or a number in [0, max_price]; attributes a
    JSON object. Raises ValidationError listing every problem (first ``limits.max_problems``).
    Duplicates against the stored catalogue are checked at write time, inside the transaction.
    ``wording`` phrases the hint for a missing column (the CLI's ``--map`` by default).
    """
    problems = _Problems(table, limits.max_problems)
    _check_missing(problems, frame, CATALOG_REQUIRED, "catalogue", wording)
    problems.raise_if_any(what)

    item_id = _text(frame["item_id"])
    title = _text(frame["title"])
    problems.add(item_id == "", lambda i: "empty item id")
    _check_lengths(problems, item_id, limits.max_item_id_chars, "item id")
    problems.add(title == "", lambda i: "empty title")
    _check_lengths(problems, title, limits.max_title_chars, "title")

    dup = (item_id.duplicated(keep=False) & (item_id != "")).to_numpy()
    if dup.any():
        ids = item_id.to_numpy()
        places = _same_places(pd.factorize(item_id)[0], dup, table, limits.max_problems)
        problems.add(dup, lambda i: f"duplicate item id {_short(ids[i])!r} (appears at {places(i)})")

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
        if text is not None:  # "3,50": a decimal comma (spreadsheets' semicolon CSV); "1,000" stays refused
            text = text.str.replace(r"^(-?\d+),(\d{1,2})$", r"\1.\2", regex=True)
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


def validate_interactions(
    frame: pd.DataFrame,
    *,
    known_items: set[str] | pd.Index | None,
    limits: ImportSettings,
    table: RawTable | None = None,
    what: str = "The interactions file",
    wording: MappingWording = CLI_WORDING,
    allow_repeats: bool = False,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Check interaction rows and return a clean frame (shopper_id, item_id, event, ts, quantity).

    ``known_items`` are the item ids that exist (the stored catalogue, plus one being imported at the
    same time); None skips that check (the caller checks inside its transaction). Timestamps later than
    ``now`` (default: the time of import, UTC) plus :data:`FUTURE_SLACK` are refused, and so are rows
    repeating another row's shopper, item, event and time, since importing them twice would double them
    (``allow_repeats`` keeps them, for sources whose repeated lines are real, like UCI invoices).
    ``wording`` phrases the hint for a missing column.
    """
    problems = _Problems(table, limits.max_problems)
    _check_missing(problems, frame, INTERACTION_REQUIRED, "interactions", wording)
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

    ts, bad_ts, shown_ts, unordered, why = _parse_timestamps(frame["ts"])
    problems.add(
        bad_ts, lambda i: f"timestamp {_short(shown_ts[i])!r} is not a date and time (e.g. 2024-05-01 14:30)"
    )
    problems.add(
        unordered, lambda i: f"timestamp {_short(shown_ts[i])!r} {why}: write it as YYYY-MM-DD"
    )
    bad_ts = bad_ts | unordered
    _check_future(problems, ts, shown_ts, now or datetime.now(timezone.utc))

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
    clean = pd.DataFrame(
        {
            "shopper_id": shopper.to_numpy(),
            "item_id": item.to_numpy(),
            "event": event.to_numpy(),
            "ts": ts,
            "quantity": quantity,
        }
    )
    if not allow_repeats:
        usable = (shopper != "").to_numpy() & (item != "").to_numpy() & ~bad_ts
        _check_repeats(problems, clean, usable, table, limits.max_problems)
    problems.raise_if_any(what)
    return clean


def _check_future(problems: _Problems, ts: pd.Series, shown: np.ndarray, now: datetime) -> None:
    """Refuse timestamps after ``now`` + FUTURE_SLACK: a purchase cannot happen after its import.

    ``ts`` is naive UTC (zoned times were converted); times without a zone may be local, hence the slack.
    A naive ``now`` is taken as UTC.
    """
    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    future = (ts > stamp.tz_localize(None) + FUTURE_SLACK).to_numpy(dtype=bool)  # NaT compares False
    problems.add(
        future,
        lambda i: f"timestamp {_short(shown[i])!r} is in the future "
        f"(the import runs at {stamp:%Y-%m-%d %H:%M} UTC; a day of slack is allowed for time zones)",
    )


def _check_repeats(
    problems: _Problems, clean: pd.DataFrame, usable: np.ndarray, table: RawTable | None, cap: int
) -> None:
    """Refuse rows with the same shopper, item, event and time as another row of the same file.

    The store refuses such a row when it is already stored (a file imported twice); within one file it
    would be written twice all the same, so it is named here, with every line it is on.
    """
    groups = clean[list(INTERACTION_KEY)].groupby(list(INTERACTION_KEY), sort=False, dropna=False).ngroup()
    repeated = groups.duplicated(keep=False).to_numpy() & usable
    if not repeated.any():
        return
    codes = groups.to_numpy()
    places = _same_places(codes, repeated, table, cap)
    problems.add(
        repeated,
        lambda i: f"this interaction appears more than once in the file (same shopper, item, event and time "
        f"at {places(i)})",
    )


#: A date written with numbers only, day and month in an order the text does not say: 03/04/2025, 3.4.25 ...
_NUMERIC_DATE = r"\s*(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4}(?:\D.*)?"


_UNSAID_ORDER = "does not say whether the day or the month comes first, and no row of the file shows it"
_BOTH_ORDERS = "is one of dates the file writes both day first and month first"


def _day_month_order(text: pd.Series) -> tuple[bool | None, np.ndarray, str]:
    """How the file orders day and month in dates like 03/04/2025, from the rows that show it (a first number
    above 12 is a day, a second one a month), and the rows it leaves unreadable, with why.

    Returns (dayfirst: True, False, or None when no row says), a mask of rows that cannot be read safely, and
    the reason: every such date whose day and month differ when no row says (3 April or 4 March?), or all of
    them when rows say both orders. pandas would read them month first without a word.
    """
    parts = text.astype("string").str.extract(_NUMERIC_DATE)
    first, second = (pd.to_numeric(parts[k], errors="coerce").to_numpy() for k in (0, 1))
    dated = ~np.isnan(first)
    day_first, month_first = bool((first[dated] > 12).any()), bool((second[dated] > 12).any())
    if day_first and month_first:
        return None, dated, _BOTH_ORDERS
    if day_first or month_first:
        return day_first, np.zeros(len(text), dtype=bool), ""
    return None, dated & (first != second), _UNSAID_ORDER


def _parse_timestamps(series: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray, str]:
    """Parse a timestamp column (ISO 8601 fast path, then mixed formats); tz-aware values become UTC.

    Returns (timestamps, unreadable rows, the values as written, rows whose day and month order is unknown,
    and why it is unknown).
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = series
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        ts = ts.astype("datetime64[us]")
        bad = ts.isna().to_numpy()
        return ts.reset_index(drop=True), bad, series.astype(str).to_numpy(), np.zeros(len(series), dtype=bool), ""
    text = _text(series)
    shown = text.to_numpy()
    unordered, why = np.zeros(len(series), dtype=bool), ""
    if pd.api.types.is_numeric_dtype(series):  # epoch numbers are ambiguous (s? ms?): refuse them
        bad = np.ones(len(series), dtype=bool)
        return pd.Series(pd.NaT, index=range(len(series)), dtype="datetime64[us]"), bad, shown, unordered, why
    parsed = pd.to_datetime(text.where(text != "", None), errors="coerce", format="ISO8601", utc=True)
    missing = parsed.isna().to_numpy() & (shown != "")
    if missing.any():
        dayfirst, unordered, why = _day_month_order(text.where(missing, ""))
        retry = pd.to_datetime(text[missing], errors="coerce", format="mixed", dayfirst=bool(dayfirst), utc=True)
        parsed = parsed.copy()
        parsed[missing] = retry
    # A bare number ("12345") parses as a year-ish date in 'mixed'; refuse it as ambiguous.
    numeric = text.astype("string").str.fullmatch(r"-?\d+(\.\d+)?").fillna(False).to_numpy(dtype=bool)
    bad = parsed.isna().to_numpy() | numeric
    ts = parsed.dt.tz_localize(None).astype("datetime64[us]").reset_index(drop=True)
    return ts, bad & ~unordered, shown, unordered, why
