"""Exports of labels for other tools: Parquet (every current label) and TRL-ready JSONL.

TRL JSONL has one line per A/B label (ties, 'both bad' and re-shows left out) with
``prompt``, ``chosen``, ``rejected`` and ``margin``, which is what ``trl.RewardTrainer`` reads (``margin``
feeds its margin loss, -log sigmoid(r_chosen - r_rejected - margin)). The margin is the one RecFeedback's own
reward model trains with: ``settings.reward_model.margin_by_strength`` for the label's strength (1 slightly,
2 clearly, 3 much better; none: the smallest), so a model trained on the export with TRL and the product's
own learn the same target. The raw ``strength`` is written beside it. The default
style is *conversational*: ``prompt`` is the chat messages the policy saw (system + user, built by
:func:`rlhf.prompts.build_messages`), ``chosen``/``rejected`` are one assistant message each; TRL
applies the reward model's chat template. ``style="text"`` writes plain strings instead.

TRL JSONL leaves out labels on held-out shoppers' contexts unless asked (``include_heldout``), as
RecFeedback's own reward model does (:mod:`rlhf.reward.dataset`): those shoppers are the ones offline
evaluation scores policies on. The Parquet export keeps every label and says each one's ``context_split``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rlhf.errors import RecFeedbackError
from rlhf.settings import Settings, get_settings
from rlhf.wording import counted
from storage import Store
from storage import exports as exports_repo
from storage.contexts import get_contexts

Style = Literal["conversational", "text"]


class ExportError(RecFeedbackError):
    """An export cannot be written (nothing to export, bad path)."""


@dataclass(frozen=True)
class ExportSummary:
    path: str
    rows: int
    format: str
    heldout_left_out: int = 0
    gold_left_out: int = 0

    def sentence(self) -> str:
        said = f"Wrote {self.rows:,} rows as {self.format} to {self.path}."
        if self.heldout_left_out:
            said += (f" Left out {counted(self.heldout_left_out, 'label')} on "
                     "held-out shoppers, who are for evaluation (--include-heldout keeps them).")
        if self.gold_left_out:
            said += (f" Left out {counted(self.gold_left_out, 'label')} on gold pairs, which measure annotators "
                     "(--include-gold keeps them).")
        return said


def labels_table(store: Store, *, include_reshow: bool = True) -> pd.DataFrame:
    """Every current label with its pair, gold answer and policies (one short read)."""
    with store.transaction() as con:
        return exports_repo.labels_frame(con, include_reshow=include_reshow)


def parquet_bytes(store: Store) -> bytes:
    """The labels table as Parquet bytes (for the Data page's download button)."""
    buf = io.BytesIO()
    labels_table(store).to_parquet(buf, index=False)
    return buf.getvalue()


def csv_bytes(store: Store) -> bytes:
    """The labels table as CSV bytes, for a spreadsheet (see :func:`_csv`)."""
    return _csv(labels_table(store))


#: What a spreadsheet reads as the start of a formula (OWASP's list for CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv(frame: pd.DataFrame) -> bytes:
    """CSV for a spreadsheet: UTF-8 with a byte-order mark (so accents read right), and every text cell that a
    spreadsheet would run as a formula (a rationale typed as ``=HYPERLINK(...)``) prefixed with an apostrophe."""
    safe = frame.copy()
    for column in safe.select_dtypes(include=["object", "string"]).columns:
        safe[column] = [f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v for v in safe[column]]
    return safe.to_csv(index=False).encode("utf-8-sig")


def trl_records(
    store: Store, *, style: Style = "conversational", include_gold: bool = False, with_ids: bool = False,
    include_heldout: bool = False, settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Preference records for TRL (see the module docstring)."""
    return _trl_records(store, style=style, include_gold=include_gold, with_ids=with_ids,
                        include_heldout=include_heldout, settings=settings)[0]


def _trl_records(
    store: Store, *, style: Style = "conversational", include_gold: bool = False, with_ids: bool = False,
    include_heldout: bool = False, settings: Settings | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """The records, and how many labels on held-out shoppers and on gold pairs were left out. Both are left
    out by default, as RecFeedback's own reward model leaves them out: held-out shoppers are for evaluation,
    gold pairs for measuring annotators."""
    from rlhf.prompts import build_context_views, build_messages
    from rlhf.reward.dataset import strength_margin

    settings = settings or get_settings()
    with store.transaction() as con:
        rows = exports_repo.preference_rows(con)
        gold = rows["is_gold"].astype(bool)
        gold_left_out = 0 if include_gold else int(gold.sum())
        rows = rows if include_gold else rows[~gold]
        heldout = rows["context_split"] == "heldout"
        left_out = 0 if include_heldout else int(heldout.sum())
        rows = rows if include_heldout else rows[~heldout]
        contexts = get_contexts(con, sorted(set(rows["context_id"].dropna())))
    views = {v.context_id: v for v in build_context_views(
        store, list(contexts.values()), attributes=settings.contexts.item_attributes)} if contexts else {}
    n_items = settings.generation.list_length
    out: list[dict[str, Any]] = []
    for r in rows.itertuples(index=False):
        view = views.get(r.context_id)
        if view is None:
            continue
        messages = build_messages(view, n_items)
        chosen, rejected = (r.text_a, r.text_b) if r.choice == "A" else (r.text_b, r.text_a)
        if style == "conversational":
            record: dict[str, Any] = {
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        else:
            record = {"prompt": "\n\n".join(m["content"] for m in messages), "chosen": chosen, "rejected": rejected}
        record["margin"] = strength_margin(r.strength, settings.reward_model.margin_by_strength)
        record["strength"] = None if pd.isna(r.strength) else int(r.strength)
        if with_ids:
            record.update(label_id=r.label_id, pair_id=r.pair_id, annotator_id=r.annotator_id)
        out.append(record)
    return out, left_out, gold_left_out


def trl_jsonl_bytes(store: Store, **kwargs: Any) -> bytes:
    """TRL records as JSONL bytes (for the Data page's download button)."""
    lines = (json.dumps(r, ensure_ascii=False) for r in trl_records(store, **kwargs))
    return ("\n".join(lines) + "\n").encode("utf-8")


def export_labels(store: Store, out: str | Path, *, fmt: Literal["parquet", "csv", "trl"],
                  **kwargs: Any) -> ExportSummary:
    """Write labels to ``out`` as Parquet, CSV (the same table, for a spreadsheet) or TRL JSONL (atomically:
    a temp file, then rename)."""
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    left_out = gold_left_out = 0
    if fmt in ("parquet", "csv"):
        frame = labels_table(store)
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_bytes(_csv(frame))
        rows = len(frame)
    elif fmt == "trl":
        records, left_out, gold_left_out = _trl_records(store, **kwargs)
        with tmp.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        rows = len(records)
    else:
        raise ExportError(f"Unknown export format {fmt!r}; use parquet, csv or trl.")
    tmp.replace(out)
    return ExportSummary(str(out), rows, fmt, heldout_left_out=left_out, gold_left_out=gold_left_out)
