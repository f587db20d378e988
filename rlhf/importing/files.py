"""Reading an import file and naming its columns: the first two steps of every import."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf.errors import ImportFileError
from storage.errors import ValidationError

#: File name endings we can read, and the reader used for each.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass(frozen=True)
class MappingWording:
    """How a front end tells the user to map columns: the CLI has a ``--map`` option, the app a text box.

    The importing functions phrase their mapping hints through this, so each front end's messages point
    at the control its user actually has. ``entry`` names one mapping entry (``{pair}`` is filled in);
    ``remedy`` says how to fix a missing column (``{column}`` is filled in).
    """

    entry: str = "--map {pair}"
    remedy: str = "rename it or map one with --map {column}=YOUR_COLUMN"

    def name_entry(self, pair: str) -> str:
        """How the user wrote one mapping entry, e.g. ``--map title=name``."""
        return self.entry.format(pair=pair)

    def fix_missing(self, column: str) -> str:
        """What to do about a missing column, e.g. ``rename it or map one with --map title=YOUR_COLUMN``."""
        return self.remedy.format(column=column)


#: The command line's wording (the default everywhere).
CLI_WORDING = MappingWording()

#: Delimiters a ".csv" file may use instead of commas; see :func:`_csv_delimiter`.
OTHER_DELIMITERS = (";", "\t", "|")


class FileRejectedError(ImportFileError, ValidationError):
    """The file cannot be read at all: unknown format, not UTF-8, malformed CSV/JSON, unreadable Parquet.

    It is both an :class:`~rlhf.errors.ImportFileError` and a :class:`~storage.errors.ValidationError`
    (with ``problems``), so callers may catch either.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        ValidationError.__init__(self, message, problems)


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
        table = _read_parquet(p)
    else:
        text = _decode_utf8(p)
        if kind == "jsonl":
            table = _parse_jsonl(text, p)
        else:
            table = _parse_csv(text, p, "\t" if kind == "tsv" else _csv_delimiter(text))
    if len(table.frame) == 0:
        what = "columns" if kind == "parquet" else "a header"
        raise FileRejectedError(f"{p.name} has {what} but no rows; nothing was imported.")
    return table


def _read_parquet(p: Path) -> RawTable:
    """Read a Parquet file from its bytes, so that a reader's error cannot show where the file lies.

    (The app saves an upload in a temporary folder; its path means nothing to the user.)
    """
    try:
        frame = pd.read_parquet(io.BytesIO(p.read_bytes()))
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise FileRejectedError(f"{p.name} is not a readable Parquet file: {exc}") from exc
    return RawTable(frame.reset_index(drop=True), str(p), "row", np.arange(1, len(frame) + 1))


def _csv_delimiter(text: str) -> str:
    """The delimiter of a ".csv" file: a comma, unless its header has none and exactly one of ; TAB |.

    Spreadsheets in many locales save "CSV" with semicolons. A header without a comma cannot be a
    valid comma-separated header of ours (every import needs at least two columns), so reading it with
    the one other delimiter it contains is safe; anything ambiguous stays with commas.
    """
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    found = [d for d in OTHER_DELIMITERS if d in header]
    return found[0] if len(found) == 1 else ","


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


def parse_mapping(
    pairs: list[str] | tuple[str, ...] | None, *, wording: MappingWording = CLI_WORDING
) -> dict[str, str]:
    """``["title=name", "item_id=sku"]`` -> ``{"title": "name", "item_id": "sku"}`` (ours = theirs).

    A malformed entry raises ImportFileError phrased with ``wording`` (the CLI's ``--map`` by default).
    """
    mapping: dict[str, str] = {}
    for pair in pairs or ():
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ImportFileError(
                f"{wording.name_entry(repr(pair))} should look like OUR_COLUMN=FILE_COLUMN, e.g. title=name."
            )
        mapping[ours.strip()] = theirs.strip()
    return mapping


def apply_mapping(
    frame: pd.DataFrame,
    mapping: Mapping[str, str] | None,
    *,
    known: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]] | None = None,
    wording: MappingWording = CLI_WORDING,
) -> tuple[pd.DataFrame, list[str]]:
    """Rename file columns to our names. Returns the frame and problems (a mapped column that is absent).

    Canonical names match case-insensitively; ``aliases`` supply other accepted names. Problems name
    the mapping entry with ``wording``.
    """
    problems: list[str] = []
    columns = list(frame.columns)
    rename: dict[str, str] = {}
    for ours, theirs in (mapping or {}).items():
        entry = wording.name_entry(f"{ours}={theirs}")
        if ours not in known:
            problems.append(
                f"{entry}: {ours!r} is not a column we use (we use {', '.join(known)})"
            )
            continue
        match = theirs if theirs in columns else _casefold_match(theirs, columns)
        if match is None:
            problems.append(
                f"{entry}: the file has no column {theirs!r} (it has {', '.join(map(str, columns))})"
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
