"""Gold pairs: pairs whose right answer a manager knows.

The queue mixes them into every annotator's work unrecognisably (``queue.gold_rate``), and the Agreement page
scores each annotator against them (gold accuracy), as Label Studio's ground truth and Argilla's reviewed
records do. Their labels never train a reward model. A manager gives a pair its answer after reviewing it
(:func:`rlhf.annotation.pair_as_shown`, ``recfeedback pairs show``); a label file can bring answers too
(``import-labels`` with a ``gold`` column).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from storage import Store
from storage import queue as queue_repo
from storage.errors import ValidationError
from storage.records import CHOICES


@dataclass(frozen=True)
class GoldPair:
    """A gold pair: its answer (A, B, tie or both_bad, in the pair's own A/B terms), who gave it and when, and
    how the annotators' current labels on it compare."""

    pair_id: str
    answer: str
    note: str | None
    created_by: str | None
    created_at: datetime | None
    labels: int
    agreeing: int


def label_tally(store: Store, pair_id: str) -> dict[str, int]:
    """Current first labels on the pair per choice (re-shows left out), so a reviewer sees what people said."""
    with store.transaction() as con:
        labels = queue_repo.current_labels(con, pair_ids=[pair_id])
    return dict(Counter(label.choice for label in labels if not label.is_reshow))


def gold_answer(answer: str) -> str:
    """A gold answer as stored (A, B, tie or both_bad), from how a person may type it ('b', 'Both bad')."""
    said = " ".join(answer.split()).replace(" ", "_").lower()
    for choice in CHOICES:
        if said == choice.lower():
            return choice
    raise ValidationError(f"A gold answer is one of {', '.join(CHOICES)}, not {answer!r}.")


def gold_of(store: Store, pair_id: str) -> GoldPair | None:
    """The pair's gold answer and its record, or None when the pair is not gold."""
    found = gold_pairs(store, pair_id=pair_id)
    return found[0] if found else None


def mark_gold(store: Store, pair_id: str, answer: str, *, by: str, note: str | None = None) -> str | None:
    """Give a pair its gold answer (or a new one): from now on the queue serves it as a gold pair. Returns the
    answer it replaced, if the pair was gold already, so that the caller can say so.

    Raises ValidationError for an answer that is none of the choices or a pair without two lists, and
    NotFoundError for an unknown pair.
    """
    answer = gold_answer(answer)
    with store.transaction() as con:
        shown = queue_repo.pair_for_display(con, pair_id)  # NotFoundError names an unknown pair
        if not shown["gen_a"] or not shown["gen_b"]:
            raise ValidationError(f"Pair {pair_id} has no two lists for annotators to compare (an imported pair).")
        before = queue_repo.gold_answers(con).get(pair_id)
        queue_repo.set_gold(con, pair_id, answer, note=(note or "").strip() or None, created_by=by)
    return before


def gold_pairs(store: Store, *, pair_id: str | None = None) -> list[GoldPair]:
    """Every gold pair (or only ``pair_id``, if gold) with its answer and how many current first labels on it
    agree, newest first."""
    with store.transaction() as con:
        rows = queue_repo.gold_rows(con, pair_id)
        labels = queue_repo.current_labels(con, pair_ids=[r["pair_id"] for r in rows]) if rows else []
    by_pair: dict[str, list[str]] = {}
    for label in labels:
        if not label.is_reshow:
            by_pair.setdefault(label.pair_id, []).append(label.choice)
    return [GoldPair(pair_id=r["pair_id"], answer=r["expected_choice"], note=r["note"], created_by=r["created_by"],
                     created_at=r["created_at"], labels=len(by_pair.get(r["pair_id"], [])),
                     agreeing=sum(c == r["expected_choice"] for c in by_pair.get(r["pair_id"], [])))
            for r in rows]
