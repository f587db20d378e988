"""Import pairwise labels collected elsewhere, so a team can analyse them on the Agreement page.

Input: a CSV, Parquet or JSONL file with one row per label. Required fields are ``pair_id``,
``annotator_id`` and ``choice``; optional fields are ``strength`` (1-3), ``gold`` (the pair's known
answer), ``created_at``, ``time_ms`` or ``seconds``, ``rationale`` and ``left_side`` (A/B shown on the
left). A :class:`LabelMapping` renames the file's columns to these fields and translates its choice
values (e.g. ``a1 -> A, a2 -> B, equal -> tie``).

As with every import: the whole file is validated first and every problem is listed by row; a file
with any problem imports nothing. A clean file is written in ONE transaction: new pairs (source
'external', never served by the queue), new annotators (kind 'external', no password), gold answers,
and the labels (source 'import').
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.errors import ImportFileError
from rlhf.wording import counted
from storage import Store, analytics
from storage import queue as queue_repo
from storage.errors import ValidationError
from storage.ids import looks_like_id, new_ids
from storage.records import CHOICES, Label

log = logging.getLogger(__name__)

REQUIRED_FIELDS: tuple[str, ...] = ("pair_id", "annotator_id", "choice")
OPTIONAL_FIELDS: tuple[str, ...] = ("strength", "gold", "created_at", "time_ms", "seconds", "rationale", "left_side")
_ALIASES = {"a": "A", "b": "B", "tie": "tie", "both_bad": "both_bad", "both bad": "both_bad", "both-bad": "both_bad"}
_MAX_PROBLEMS = 200


@dataclass(frozen=True)
class LabelMapping:
    """How a file's columns and values map to RecFeedback's label fields.

    ``columns`` maps OUR field name to the file's column name (fields not named keep their own name);
    ``choice_values`` maps the file's choice (and gold) values to A / B / tie / both_bad;
    ``annotator_prefix`` namespaces external annotator ids (e.g. 'ukp:') so they cannot collide with
    app accounts.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    choice_values: Mapping[str, str] = field(default_factory=dict)
    annotator_prefix: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.columns) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValidationError(
                f"Unknown field(s) in the column mapping: {', '.join(sorted(unknown))}. "
                f"Known fields: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}."
            )
        bad = {k: v for k, v in self.choice_values.items() if v not in CHOICES}
        if bad:
            raise ValidationError(f"Choice mapping targets must be one of {', '.join(CHOICES)}; got {bad}.")


@dataclass(frozen=True)
class ImportReport:
    """What an import stored."""

    labels: int
    pairs_created: int
    pairs_existing: int
    annotators_created: int
    gold_answers: int
    seconds: float


def read_label_file(path: str | Path) -> pd.DataFrame:
    """The file as a frame of strings/numbers; CSV, Parquet and JSON Lines are recognised by suffix. A file
    without a single label is refused, like a catalogue without rows ("Imported 0 labels" was no answer)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                                na_values=[""], encoding="utf-8")
        else:
            raise ImportFileError(f"{path.name}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet or "
                                  ".jsonl.")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except (ValueError, OSError) as exc:
        raise ImportFileError(f"{path.name} cannot be read as {suffix[1:]}: {exc}") from exc
    if frame.empty:
        raise ImportFileError(f"{path.name} has no labels in it; nothing was imported.")
    return frame


def prepare_labels(raw: pd.DataFrame, mapping: LabelMapping | None = None) -> pd.DataFrame:
    """Rename, normalise and validate a raw label table; raise ValidationError listing every problem.

    Returns a clean frame with columns pair_id, annotator_id, choice, strength (Int64), gold,
    created_at (naive UTC), time_ms (Int64), rationale, left_side, row (1-based row in the file).
    """
    mapping = mapping or LabelMapping()
    renamed = {source: ours for ours, source in mapping.columns.items()}
    missing_sources = [s for s in renamed if s not in raw.columns]
    frame = raw.rename(columns=renamed)
    missing = [f for f in REQUIRED_FIELDS if f not in frame.columns]
    if missing or missing_sources:
        problems = [f"missing column {f!r}" + (f" (mapped from {mapping.columns[f]!r})" if f in mapping.columns else "")
                    for f in missing]
        problems += [f"the mapping names column {s!r}, which the file does not have" for s in missing_sources
                     if renamed[s] not in missing]
        raise ValidationError(
            f"The label file lacks required columns (it has: {', '.join(map(str, raw.columns))}).", problems)

    problems: list[str] = []
    n = len(frame)
    out = pd.DataFrame({"row": np.arange(1, n + 1)})

    def text(col: str) -> pd.Series:
        s = frame[col].astype("string").str.strip()
        return s.mask(s == "")

    for col in ("pair_id", "annotator_id"):
        values = text(col)
        for r in out.row[values.isna().to_numpy()].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: empty {col}")
        out[col] = values.to_numpy()
    out["annotator_id"] = mapping.annotator_prefix + out["annotator_id"].astype("string")

    out["choice"] = _normalise_choice(text("choice"), mapping).to_numpy()
    raw_choice = text("choice").to_numpy()
    bad = out["choice"].isna().to_numpy()
    for r, v in zip(out.row[bad].head(_MAX_PROBLEMS), raw_choice[bad][:_MAX_PROBLEMS]):
        problems.append(f"row {r}: unknown choice {v!r} (expected one of {', '.join(CHOICES)}"
                        + (" or a value in the choice mapping)" if mapping.choice_values else ")"))

    if "strength" in frame.columns:
        strength = pd.to_numeric(text("strength"), errors="coerce")
        given = text("strength").notna().to_numpy()
        invalid = given & ~strength.isin([1, 2, 3]).to_numpy()
        for r in out.row[invalid].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: strength must be 1, 2 or 3")
        no_side = given & out["choice"].isin(["tie", "both_bad"]).to_numpy()
        for r in out.row[no_side].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: a strength is given for a tie or 'both bad'")
        out["strength"] = pd.array(strength.where(~invalid & ~no_side).to_numpy(), dtype="Float64").astype("Int64")
    else:
        out["strength"] = pd.array([pd.NA] * n, dtype="Int64")

    if "gold" in frame.columns:
        gold_text = text("gold")
        out["gold"] = _normalise_choice(gold_text, mapping).to_numpy()
        bad_gold = gold_text.notna().to_numpy() & out["gold"].isna().to_numpy()
        for r in out.row[bad_gold].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: unknown gold answer {gold_text.iloc[r - 1]!r}")
        per_pair = out.dropna(subset=["gold"]).groupby("pair_id")["gold"].nunique()
        for pid in per_pair[per_pair > 1].index[:_MAX_PROBLEMS]:
            problems.append(f"pair {pid!r}: rows give different gold answers")
    else:
        out["gold"] = None

    if "created_at" in frame.columns:
        stamps = pd.to_datetime(frame["created_at"], errors="coerce", utc=True)
        bad_ts = frame["created_at"].notna().to_numpy() & stamps.isna().to_numpy()
        for r in out.row[bad_ts].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: created_at is not a date/time")
        out["created_at"] = stamps.dt.tz_convert(None).to_numpy()
    else:
        out["created_at"] = pd.NaT

    if "time_ms" in frame.columns or "seconds" in frame.columns:
        col = "time_ms" if "time_ms" in frame.columns else "seconds"
        values = pd.to_numeric(frame[col], errors="coerce")
        factor = 1.0 if col == "time_ms" else 1000.0
        bad_t = (frame[col].notna() & (values.isna() | (values < 0))).to_numpy()
        for r in out.row[bad_t].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: {col} must be a non-negative number")
        out["time_ms"] = pd.array((values.where(~bad_t) * factor).round().to_numpy(), dtype="Float64").astype("Int64")
    else:
        out["time_ms"] = pd.array([pd.NA] * n, dtype="Int64")

    out["rationale"] = text("rationale").to_numpy() if "rationale" in frame.columns else None
    if "left_side" in frame.columns:
        left = text("left_side").str.upper()
        bad_left = left.notna().to_numpy() & ~left.isin(["A", "B"]).to_numpy()
        for r in out.row[bad_left].head(_MAX_PROBLEMS):
            problems.append(f"row {r}: left_side must be A or B")
        out["left_side"] = left.where(~bad_left).to_numpy()
    else:
        out["left_side"] = None

    keyed = out.dropna(subset=["pair_id", "annotator_id"])
    dup = keyed.duplicated(["pair_id", "annotator_id"], keep=False)
    for (pid, who), rows in keyed[dup].groupby(["pair_id", "annotator_id"])["row"]:
        if len(problems) >= _MAX_PROBLEMS * 4:
            break
        problems.append(f"rows {', '.join(map(str, rows.tolist()))}: duplicate label for pair {pid!r} "
                        f"by annotator {who!r}")
    if problems:
        raise ValidationError(f"The label file has {len(problems)} problem(s); nothing was imported.", problems)
    return out


def _normalise_choice(values: pd.Series, mapping: LabelMapping) -> pd.Series:
    """Map raw choice values to A/B/tie/both_bad: the explicit mapping first, then case-insensitive names."""
    explicit = values.map(dict(mapping.choice_values)) if mapping.choice_values else pd.Series(pd.NA, index=values.index)
    lowered = values.str.lower().map(_ALIASES)
    return explicit.fillna(lowered).astype("object").where(lambda s: s.notna(), None)


def import_labels(store: Store, path: str | Path, mapping: LabelMapping | None = None) -> ImportReport:
    """Validate a label file, then store it in one transaction; nothing is stored if anything is wrong.

    Labels that name a pair already in the store attach to it; other tools' pair ids become external pairs,
    but an id shaped like this store's that it does not hold is refused (a typo, or another store's).
    A (pair, annotator) that already has a current label in the store is a problem, so importing the
    same file twice is refused rather than doubling the labels.
    """
    started = time.perf_counter()
    labels = prepare_labels(read_label_file(path), mapping)
    return _store_labels(store, labels, started=started, origin=str(path))


def _refuse_missing_store_pairs(unknown: list[str]) -> None:
    """Refuse pair ids shaped like this store's (``pair_<hex>``) that it does not hold: a typo or another
    store's export would otherwise become an external pair with no lists. Other tools' ids stay external."""
    ours = [p for p in unknown if looks_like_id(str(p), "pair")]
    if ours:
        raise ValidationError(
            f"The file names {counted(len(ours), 'pair id')} shaped like this store's that it does not hold (a typo, "
            "or labels exported from another store?); nothing was imported.",
            [f"pair {p!r} is not in this store" for p in ours[:_MAX_PROBLEMS]])


def _store_labels(store: Store, labels: pd.DataFrame, *, started: float, origin: str) -> ImportReport:
    now = queue_repo.utcnow()
    pair_ids = labels["pair_id"].unique().tolist()
    annotator_ids = labels["annotator_id"].unique().tolist()
    with store.transaction() as con:
        known_pairs = analytics.existing_ids(con, "pairs", "pair_id", pair_ids)
        known_annotators = analytics.existing_ids(con, "annotators", "annotator_id", annotator_ids)
        gold_rows = labels.dropna(subset=["gold"]).drop_duplicates("pair_id")[["pair_id", "gold"]]
        known_gold = analytics.existing_ids(con, "gold", "pair_id", gold_rows["pair_id"].tolist())
        _refuse_missing_store_pairs([p for p in pair_ids if p not in known_pairs])
        clashes = analytics.existing_label_keys(con, labels)
        problems = [f"pair {r.pair_id!r} already has a label by {r.annotator_id!r} in the store"
                    for r in clashes.head(_MAX_PROBLEMS).itertuples()]
        if problems:
            raise ValidationError(
                f"{len(clashes)} label(s) in the file are already in the store (was this file imported "
                "before?); nothing was imported.", problems)

        new_pairs = labels[~labels["pair_id"].isin(known_pairs)]
        pair_rows = new_pairs.groupby("pair_id", sort=False).agg(overlap_target=("annotator_id", "nunique")).reset_index()
        pair_rows["is_gold"] = pair_rows["pair_id"].isin(set(gold_rows["pair_id"]))
        analytics.insert_external_pairs(con, pair_rows)
        created_annotators = [a for a in annotator_ids if a not in known_annotators]
        analytics.insert_external_annotators(con, created_annotators)
        gold_new = gold_rows[~gold_rows["pair_id"].isin(known_gold)].rename(columns={"gold": "expected_choice"})
        analytics.insert_gold_answers(con, gold_new, created_by=f"import:{Path(origin).name}")

        records = [
            Label(
                label_id=label_id, pair_id=pid, annotator_id=who, choice=choice,
                strength=None if pd.isna(strength) else int(strength),
                left_side=left if isinstance(left, str) else None,
                rationale=rationale if isinstance(rationale, str) else None,
                time_ms=None if pd.isna(tms) else int(tms), is_reshow=False, source="import",
                created_at=now if pd.isna(ts) else pd.Timestamp(ts).to_pydatetime(),
            )
            for label_id, pid, who, choice, strength, left, rationale, tms, ts in zip(
                new_ids("lbl", len(labels)), labels["pair_id"].tolist(), labels["annotator_id"].tolist(),
                labels["choice"].tolist(), labels["strength"].tolist(), labels["left_side"].tolist(),
                labels["rationale"].tolist(), labels["time_ms"].tolist(), labels["created_at"].tolist())
        ]
        stored = queue_repo.import_labels(con, records)
    report = ImportReport(
        labels=stored, pairs_created=len(pair_rows), pairs_existing=len(known_pairs),
        annotators_created=len(created_annotators), gold_answers=len(gold_new),
        seconds=time.perf_counter() - started,
    )
    log.info("imported %s from %s", report, origin)
    return report
