"""The labelling queue: who gets which pair next, and recording what they said.

Two functions own the queue's state, and nothing else changes it:

* :func:`next_assignment` -- "give this annotator the next pair". One documented pipeline of named
  steps; the step that produced the pair is stored on the assignment as its ``reason``:

  1. ``lease``    -- the annotator already holds a live lease: return it again (idempotent; a page
                     reload or a double click never hands out a second pair). The most recent lease
                     wins, so a pair re-opened by *undo* comes first.
  2. ``reshow``   -- with probability ``reshow_rate``: a pair this annotator labelled at least
                     ``reshow_min_gap`` labels ago, shown again with the sides swapped, to measure
                     self-consistency. Re-shows never count towards a pair's overlap.
  3. ``gold``     -- with probability ``gold_rate``: a gold pair (known answer) this annotator has not
                     seen. Gold pairs look exactly like other pairs and are served only by this step,
                     once per annotator, without an overlap cap (every annotator should meet them).
  4. ``priority`` -- an open, non-gold pair that this annotator has never labelled or skipped and whose
                     current labels plus live leases are below its overlap target: with
                     ``breadth_first`` (default) the one with the most labels already, as Label Studio
                     does, so that a started pair gets its majority and its agreement before new pairs
                     are opened; among those (or always, without it) the highest priority.

  Leases are rows in ``assignments`` with an expiry: an abandoned pair returns to the queue when its
  lease runs out, even across restarts and processes. The left/right order is drawn per assignment and
  recorded (``assignments.left_gen``).

* :func:`record_label` -- "record this label". Choices arrive in display terms (left / right) and are
  stored in the pair's canonical terms (A = ``gen_a``, B = ``gen_b``) with ``left_side`` saying which
  canonical list was on the left. Submitting twice for one assignment stores one label.

Labels are facts: an undo (:func:`undo_last`) inserts a row in ``label_retractions`` and re-opens the
pair for the same annotator; a manager's exclusion of an annotator (:func:`exclude_labels_of`) retracts all
their labels the same way, and only lifting it (:func:`restore_labels_of`) deletes retractions, its own.
Nothing is updated in place except the derived ``pairs.status`` flag
('open' / 'complete'), which is only a fast filter -- the overlap rule itself is always checked from
labels and leases.

Every function here runs inside the caller's transaction (``with store.transaction() as con``). The
store serialises units of work per process and DuckDB's file lock serialises processes, so the
check-then-insert in :func:`next_assignment` and :func:`record_label` cannot interleave.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from storage._rows import as_json, fetch_dicts, from_json
from storage.errors import ConflictError, NotFoundError, ValidationError
from storage.ids import new_id
from storage.records import CHOICES, ITEM_FLAGS, Assignment, CatalogItem, ExcludedAnnotator, Label

#: Why a pair was served; stored in ``assignments.reason``.
REASONS: tuple[str, ...] = ("lease", "reshow", "gold", "priority", "undo")
SHOWN_CHOICES: tuple[str, ...] = ("left", "right", "tie", "both_bad")

_ASSIGNMENT_COLUMNS = (
    "assignment_id, pair_id, annotator_id, left_gen, is_reshow, reason, status, assigned_at, expires_at"
)
_LABEL_COLUMNS = (
    "label_id, pair_id, annotator_id, choice, strength, left_side, item_flags, rationale, time_ms, is_reshow, "
    "source, assignment_id, created_at"
)
#: Time on task is capped at a day (a tab left open over a weekend is not a measurement).
_MAX_TIME_MS = 86_400_000
# Labels that count: not retracted. (Re-show labels are excluded separately where it matters.)
_CURRENT = "NOT EXISTS (SELECT 1 FROM label_retractions r WHERE r.label_id = {alias}.label_id)"


@dataclass(frozen=True)
class QueuePolicy:
    """The queue's knobs (taken from ``settings.queue`` by the service layer)."""

    lease_minutes: float = 10.0
    gold_rate: float = 0.05
    reshow_rate: float = 0.03
    reshow_min_gap: int = 5
    undo_window_s: float = 60.0
    max_rationale_chars: int = 1000
    breadth_first: bool = True


@dataclass(frozen=True)
class Progress:
    """An annotator's counts: current labels today (UTC) and in total, and pairs still open to them."""

    today: int
    total: int
    queue_left: int


def utcnow() -> datetime:
    """Naive UTC now: every queue timestamp is stored in UTC without a zone."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------------
# "Give this annotator the next pair"
# --------------------------------------------------------------------------------------------------


def next_assignment(
    con: Any,
    annotator_id: str,
    policy: QueuePolicy,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """The annotator's current assignment, creating one from the pipeline above; None when no work is left."""
    now = now or utcnow()
    rng = rng or random.Random()
    held = _live_lease(con, annotator_id, now)
    if held is not None:
        return held
    if policy.reshow_rate > 0 and rng.random() < policy.reshow_rate:
        picked = _pick_reshow(con, annotator_id, policy.reshow_min_gap, rng)
        if picked is not None:
            pair_id, left_gen = picked
            return _insert_assignment(con, pair_id, annotator_id, left_gen, True, "reshow", now, policy)
    if policy.gold_rate > 0 and rng.random() < policy.gold_rate:
        gold = _pick_gold(con, annotator_id, now, rng)
        if gold is not None:
            pair_id, gen_a, gen_b = gold
            left = gen_a if rng.random() < 0.5 else gen_b
            return _insert_assignment(con, pair_id, annotator_id, left, False, "gold", now, policy)
    row = _pick_priority(con, annotator_id, now, breadth_first=policy.breadth_first)
    if row is None:
        return None
    pair_id, gen_a, gen_b = row
    left = gen_a if rng.random() < 0.5 else gen_b
    return _insert_assignment(con, pair_id, annotator_id, left, False, "priority", now, policy)


def _live_lease(con: Any, annotator_id: str, now: datetime) -> Assignment | None:
    rows = fetch_dicts(
        con,
        f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE annotator_id = ? AND status = 'active' "
        "AND expires_at > ? ORDER BY assigned_at DESC, assignment_id DESC LIMIT 1",
        [annotator_id, now],
    )
    return Assignment(**rows[0]) if rows else None


def _insert_assignment(
    con: Any, pair_id: str, annotator_id: str, left_gen: str, is_reshow: bool, reason: str, now: datetime,
    policy: QueuePolicy,
) -> Assignment:
    assignment = Assignment(
        assignment_id=new_id("asg"), pair_id=pair_id, annotator_id=annotator_id, left_gen=left_gen,
        is_reshow=is_reshow, reason=reason, status="active", assigned_at=now,
        expires_at=now + timedelta(minutes=policy.lease_minutes),
    )
    con.execute(
        f"INSERT INTO assignments ({_ASSIGNMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [assignment.assignment_id, assignment.pair_id, assignment.annotator_id, assignment.left_gen,
         assignment.is_reshow, assignment.reason, assignment.status, assignment.assigned_at,
         assignment.expires_at],
    )
    return assignment


# Pairs this annotator must not get again: labelled (current, not a re-show), skipped, or held right now.
_SEEN_BY_ME = f"""
    SELECT l.pair_id FROM labels l WHERE l.annotator_id = $who AND NOT l.is_reshow AND {_CURRENT.format(alias='l')}
    UNION
    SELECT a.pair_id FROM assignments a WHERE a.annotator_id = $who
        AND (a.status = 'skipped' OR (a.status = 'active' AND a.expires_at > $now))
"""

# Open, non-gold pairs with room (current labels + live leases < overlap target) that this annotator
# has not seen. One pass over labels and one over assignments, both restricted to open pairs.
_ELIGIBLE = f"""
    WITH open_pairs AS (
        SELECT pair_id, gen_a, gen_b, priority, overlap_target, created_at FROM pairs
        WHERE status = 'open' AND NOT is_gold AND gen_a IS NOT NULL AND gen_b IS NOT NULL
    ),
    lab AS (
        SELECT l.pair_id, count(*) AS n, bool_or(l.annotator_id = $who) AS mine
        FROM labels l SEMI JOIN open_pairs o ON o.pair_id = l.pair_id
        WHERE NOT l.is_reshow AND {_CURRENT.format(alias='l')} GROUP BY l.pair_id
    ),
    asg AS (
        SELECT a.pair_id,
               count(*) FILTER (WHERE a.status = 'active' AND a.expires_at > $now AND NOT a.is_reshow) AS n,
               bool_or(a.annotator_id = $who
                       AND (a.status = 'skipped' OR (a.status = 'active' AND a.expires_at > $now))) AS mine
        FROM assignments a SEMI JOIN open_pairs o ON o.pair_id = a.pair_id
        WHERE a.status IN ('active', 'skipped') GROUP BY a.pair_id
    )
    SELECT o.pair_id, o.gen_a, o.gen_b, o.priority, o.created_at, coalesce(lab.n, 0) AS labels
    FROM open_pairs o
    LEFT JOIN lab ON lab.pair_id = o.pair_id
    LEFT JOIN asg ON asg.pair_id = o.pair_id
    WHERE coalesce(lab.n, 0) + coalesce(asg.n, 0) < o.overlap_target
      AND NOT coalesce(lab.mine, false) AND NOT coalesce(asg.mine, false)
"""


def _pick_priority(
    con: Any, annotator_id: str, now: datetime, *, breadth_first: bool = True
) -> tuple[str, str, str] | None:
    order = ("labels DESC, " if breadth_first else "") + "o.priority DESC, o.created_at, o.pair_id"
    row = con.execute(
        _ELIGIBLE + f" ORDER BY {order} LIMIT 1",
        {"who": annotator_id, "now": now},
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _pick_gold(con: Any, annotator_id: str, now: datetime, rng: random.Random) -> tuple[str, str, str] | None:
    rows = con.execute(
        f"""SELECT p.pair_id, p.gen_a, p.gen_b FROM pairs p
            WHERE p.is_gold AND p.status IN ('open', 'complete') AND p.gen_a IS NOT NULL AND p.gen_b IS NOT NULL
              AND p.pair_id NOT IN ({_SEEN_BY_ME})
            ORDER BY p.priority DESC, p.pair_id LIMIT 50""",
        {"who": annotator_id, "now": now},
    ).fetchall()
    return tuple(rng.choice(rows)) if rows else None  # type: ignore[return-value]


def _pick_reshow(con: Any, annotator_id: str, min_gap: int, rng: random.Random) -> tuple[str, str] | None:
    """A pair labelled by this annotator at least ``min_gap`` labels ago, never re-shown to them."""
    rows = con.execute(
        f"""WITH mine AS (
                SELECT l.label_id, l.pair_id, l.left_side, l.is_reshow,
                       row_number() OVER (ORDER BY l.created_at DESC, l.label_id DESC) AS rn
                FROM labels l WHERE l.annotator_id = $who AND {_CURRENT.format(alias='l')}
            )
            SELECT m.pair_id, m.left_side, p.gen_a, p.gen_b FROM mine m JOIN pairs p ON p.pair_id = m.pair_id
            WHERE NOT m.is_reshow AND m.rn > $gap AND p.gen_a IS NOT NULL AND p.gen_b IS NOT NULL
              AND m.pair_id NOT IN (SELECT pair_id FROM assignments WHERE annotator_id = $who AND is_reshow)
            ORDER BY m.rn DESC LIMIT 50""",
        {"who": annotator_id, "gap": int(min_gap)},
    ).fetchall()
    if not rows:
        return None
    pair_id, left_side, gen_a, gen_b = rng.choice(rows)
    # Swap: what was on the left goes to the right.
    return pair_id, (gen_b if left_side == "A" else gen_a)


# --------------------------------------------------------------------------------------------------
# "Record this label"
# --------------------------------------------------------------------------------------------------


def record_label(
    con: Any,
    *,
    assignment_id: str,
    annotator_id: str,
    shown_choice: str,
    strength: int | None = None,
    item_flags: dict[str, dict[str, Sequence[str]]] | None = None,
    rationale: str | None = None,
    time_ms: int | None = None,
    policy: QueuePolicy = QueuePolicy(),
    now: datetime | None = None,
    source: str = "app",
) -> tuple[Label, bool]:
    """Store one label for an assignment; returns (label, created).

    ``shown_choice`` is 'left', 'right', 'tie' or 'both_bad' as the annotator saw the pair;
    ``item_flags`` maps a shown side ('left'/'right') to {item_id: [flags]}. Both are converted to the
    pair's canonical A/B terms. A second submit of the same answer for the same assignment (a double click)
    returns the first label with ``created=False`` (no double counting); a different answer (the same account
    in a second window) is a :class:`ConflictError` that says the first one was kept. A lease that expired is
    still honoured when the pair has room; otherwise :class:`ConflictError` says the pair went to someone else.
    ``source`` says who answered: ``app`` (a person in the browser) or ``simulated`` (rlhf.simulate).
    """
    now = now or utcnow()
    assignment, pair = _assignment_with_pair(con, assignment_id)
    if assignment.annotator_id != annotator_id:
        raise ConflictError("This pair is assigned to someone else.")
    choice, canonical_strength = _canonical_choice(shown_choice, strength, assignment.left_gen, pair)
    if assignment.status == "done":
        existing = fetch_dicts(con, f"SELECT {_LABEL_COLUMNS} FROM labels WHERE assignment_id = ?", [assignment_id])
        if existing:
            first = _label(existing[0])
            if (first.choice, first.strength) != (choice, canonical_strength):
                raise ConflictError("You answered this pair already, perhaps in another window; that first answer "
                                    "was kept and this one was not stored.")
            return first, False
    if assignment.status != "active":
        raise ConflictError(f"This pair is no longer yours to label: {_GONE.get(assignment.status, assignment.status)}.")
    flags = _canonical_flags(item_flags, assignment.left_gen, pair)
    rationale = _plain(rationale or "").strip() or None
    if rationale and len(rationale) > policy.max_rationale_chars:
        raise ValidationError(f"The rationale is longer than {policy.max_rationale_chars} characters.")
    if assignment.expires_at <= now and not assignment.is_reshow and not pair["is_gold"]:
        taken = _current_count(con, assignment.pair_id, now, exclude_assignment=assignment_id)
        if taken >= pair["overlap_target"]:
            raise ConflictError("Your time on this pair ran out and it was given to someone else.")
    if time_ms is None:
        time_ms = int((now - assignment.assigned_at).total_seconds() * 1000)
    label = Label(
        label_id=new_id("lab"), pair_id=assignment.pair_id, annotator_id=annotator_id, choice=choice,
        strength=canonical_strength, left_side="A" if assignment.left_gen == pair["gen_a"] else "B",
        item_flags=flags, rationale=rationale, time_ms=min(max(0, int(time_ms)), _MAX_TIME_MS), is_reshow=assignment.is_reshow,
        source=source, assignment_id=assignment_id, created_at=now,
    )
    _insert_labels(con, [label])
    con.execute(
        "UPDATE assignments SET status = 'done', closed_at = ? WHERE assignment_id = ?", [now, assignment_id]
    )
    if not label.is_reshow and not pair["is_gold"]:
        _close_if_complete(con, assignment.pair_id)
    return label, True


def _close_if_complete(con: Any, pair_id: str) -> None:
    """Mark one open pair complete when its current labels reach the target (one statement)."""
    con.execute(
        f"""UPDATE pairs SET status = 'complete'
            WHERE pair_id = $p AND status = 'open' AND NOT is_gold
              AND overlap_target <= (SELECT count(*) FROM labels l WHERE l.pair_id = $p AND NOT l.is_reshow
                                     AND {_CURRENT.format(alias='l')})""",
        {"p": pair_id},
    )


def _canonical_choice(shown: str, strength: int | None, left_gen: str | None, pair: dict) -> tuple[str, int | None]:
    if shown not in SHOWN_CHOICES:
        raise ValidationError(f"Unknown choice {shown!r}; expected one of {', '.join(SHOWN_CHOICES)}.")
    if shown in ("tie", "both_bad"):
        return shown, None
    if strength not in (1, 2, 3):
        raise ValidationError("Say how much better the chosen list is (1 slightly, 2 clearly, 3 much).")
    left_is_a = left_gen == pair["gen_a"]
    choice = "A" if (shown == "left") == left_is_a else "B"
    assert choice in CHOICES
    return choice, int(strength)


def _canonical_flags(
    item_flags: dict[str, dict[str, Sequence[str]]] | None, left_gen: str | None, pair: dict
) -> dict[str, list[str]]:
    """{'left': {item: [flags]}} -> {'A:item': [flags]} in canonical sides."""
    out: dict[str, list[str]] = {}
    left_is_a = left_gen == pair["gen_a"]
    for shown_side, per_item in (item_flags or {}).items():
        if shown_side not in ("left", "right"):
            raise ValidationError(f"Item flags name an unknown side {shown_side!r}.")
        side = "A" if (shown_side == "left") == left_is_a else "B"
        for item_id, flags in (per_item or {}).items():
            bad = [f for f in flags if f not in ITEM_FLAGS]
            if bad:
                raise ValidationError(f"Unknown item flag(s) {', '.join(map(str, bad))}.")
            if flags:
                out[f"{side}:{item_id}"] = sorted(set(flags))
    return out


def _current_count(con: Any, pair_id: str, now: datetime, *, exclude_assignment: str | None = None) -> int:
    """Current (not retracted, not re-show) labels plus other live leases on a pair."""
    row = con.execute(
        f"""SELECT
              (SELECT count(*) FROM labels l WHERE l.pair_id = $p AND NOT l.is_reshow AND {_CURRENT.format(alias='l')})
            + (SELECT count(*) FROM assignments a WHERE a.pair_id = $p AND a.status = 'active'
                 AND a.expires_at > $now AND NOT a.is_reshow AND a.assignment_id <> $x)""",
        {"p": pair_id, "now": now, "x": exclude_assignment or ""},
    ).fetchone()
    return int(row[0])


def refresh_pair_status(con: Any, pair_ids: Sequence[str] | None = None) -> None:
    """Re-derive 'open'/'complete' for pairs (all when None) from their current labels.

    Only these two statuses move; a pair set to anything else (e.g. 'retired') keeps it. Gold pairs
    stay open: every annotator should meet them.
    """
    if pair_ids is not None and not pair_ids:
        return
    sql = f"""SELECT p.pair_id, p.status,
                CASE WHEN NOT p.is_gold AND coalesce(c.n, 0) >= p.overlap_target THEN 'complete' ELSE 'open' END
              FROM pairs p LEFT JOIN (
                SELECT l.pair_id, count(*) AS n FROM labels l
                WHERE NOT l.is_reshow AND {_CURRENT.format(alias='l')} {{label_filter}} GROUP BY l.pair_id
              ) c ON c.pair_id = p.pair_id
              WHERE p.status IN ('open', 'complete') {{pair_filter}}"""
    params: list[Any] = []
    if pair_ids is None:
        sql = sql.format(label_filter="", pair_filter="")
    else:
        marks = ",".join("?" * len(pair_ids))
        sql = sql.format(label_filter=f"AND l.pair_id IN ({marks})", pair_filter=f"AND p.pair_id IN ({marks})")
        params = [*pair_ids, *pair_ids]
    changes: dict[str, list[str]] = {"open": [], "complete": []}
    for pair_id, old, new in con.execute(sql, params).fetchall():
        if old != new:
            changes[new].append(pair_id)
    for status, ids in changes.items():
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            con.execute(
                f"UPDATE pairs SET status = ? WHERE pair_id IN ({','.join('?' * len(chunk))})", [status, *chunk]
            )


# --------------------------------------------------------------------------------------------------
# Skip, undo, release
# --------------------------------------------------------------------------------------------------


def skip(con: Any, *, assignment_id: str, annotator_id: str, reason: str, now: datetime | None = None) -> None:
    """Close an assignment as skipped with a reason; the pair is never served to this annotator again."""
    now = now or utcnow()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why you skip this pair.")
    assignment = get_assignment(con, assignment_id)
    if assignment.annotator_id != annotator_id:
        raise ConflictError("This pair is assigned to someone else.")
    if assignment.status == "skipped":
        return
    if assignment.status != "active":
        raise ConflictError(f"This pair cannot be skipped any more (it was {assignment.status}).")
    con.execute(
        "UPDATE assignments SET status = 'skipped', skip_reason = ?, closed_at = ? WHERE assignment_id = ?",
        [_plain(reason)[:500], now, assignment_id],
    )


#: Unicode's direction overrides and isolates: invisible, they make a rationale read backwards wherever it is
#: shown (a manager's drill-down, an export), so free text is stored without them.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _plain(text: str) -> str:
    return text.translate(_BIDI_CONTROLS)


#: Why an assignment can no longer be answered, in an annotator's words (by its status).
_GONE = {"released": "it went back to the queue (an undo or a log-out, perhaps in another window)",
         "skipped": "you skipped it"}


def undo_last(
    con: Any, annotator_id: str, policy: QueuePolicy, *, now: datetime | None = None, label_id: str | None = None
) -> tuple[Label, Assignment]:
    """Retract the annotator's most recent label (within the undo window) and serve its pair again.

    Only the latest label can be undone, once: the retraction is a new row, the label stays as a fact.
    ``label_id`` is the label the caller means (the one its window gave): when the annotator has labelled
    since, perhaps in another window, the undo is refused rather than retract a label the caller never showed.
    The returned assignment shows the pair with the same sides as before. The pair the annotator was shown
    after that label is given back (they are on the undone one now), so that they hold one lease and
    "pairs left" counts it as open again.
    """
    now = now or utcnow()
    rows = fetch_dicts(
        con,
        f"SELECT {_LABEL_COLUMNS} FROM labels WHERE annotator_id = ? "
        "ORDER BY created_at DESC, label_id DESC LIMIT 1",
        [annotator_id],
    )
    if not rows:
        raise ConflictError("There is no label to undo.")
    label = _label(rows[0])
    if label_id is not None and label.label_id != label_id:
        raise ConflictError("You have labelled another pair since, perhaps in another window: only your latest "
                            "label can be undone, in the window where you gave it.")
    retracted = con.execute("SELECT reason FROM label_retractions WHERE label_id = ?", [label.label_id]).fetchone()
    if retracted:
        raise ConflictError("Your labels were excluded by a manager; there is nothing to undo."
                            if retracted[0] == EXCLUDED else "Your last label was already undone.")
    age = (now - label.created_at).total_seconds() if label.created_at else float("inf")
    if age > policy.undo_window_s:
        raise ConflictError(f"Labels can only be undone within {policy.undo_window_s:.0f} seconds.")
    con.execute(
        "INSERT INTO label_retractions (label_id, retracted_by, reason, retracted_at) VALUES (?, ?, 'undo', ?)",
        [label.label_id, annotator_id, now],
    )
    refresh_pair_status(con, [label.pair_id])
    release_leases(con, annotator_id, now=now)
    pair = _pair_row(con, label.pair_id)
    left_gen = pair["gen_a"] if label.left_side == "A" else pair["gen_b"]
    assignment = _insert_assignment(con, label.pair_id, annotator_id, left_gen, label.is_reshow, "undo", now, policy)
    return label, assignment


#: The ``reason`` of retractions a manager made by excluding an annotator (lifted again by :func:`restore_labels_of`).
EXCLUDED = "excluded"


def exclude_labels_of(con: Any, annotator_id: str, *, by: str, now: datetime | None = None) -> int:
    """Retract every current label of one annotator (a manager's decision about a spammer); return how many.

    The labels stay as facts; their retractions say who excluded them and when. Their pairs re-open where
    they fall below their overlap target, so others label them again.
    """
    now = now or utcnow()
    rows = con.execute(
        f"SELECT l.label_id, l.pair_id FROM labels l WHERE l.annotator_id = ? AND {_CURRENT.format(alias='l')}",
        [annotator_id],
    ).fetchall()
    if rows:
        con.executemany(
            "INSERT INTO label_retractions (label_id, retracted_by, reason, retracted_at) VALUES (?, ?, ?, ?)",
            [[label_id, by, EXCLUDED, now] for label_id, _ in rows],
        )
        refresh_pair_status(con, sorted({pair_id for _, pair_id in rows}))
    return len(rows)


def restore_labels_of(con: Any, annotator_id: str) -> int:
    """Lift an exclusion (:func:`exclude_labels_of`): the annotator's excluded labels count again; undone ones
    stay undone. Returns how many came back."""
    rows = con.execute(
        "SELECT r.label_id, l.pair_id FROM label_retractions r JOIN labels l USING (label_id) "
        "WHERE l.annotator_id = ? AND r.reason = ?",
        [annotator_id, EXCLUDED],
    ).fetchall()
    if rows:
        con.execute(
            "DELETE FROM label_retractions WHERE reason = ? AND label_id IN "
            "(SELECT label_id FROM labels WHERE annotator_id = ?)",
            [EXCLUDED, annotator_id],
        )
        refresh_pair_status(con, sorted({pair_id for _, pair_id in rows}))
    return len(rows)


def excluded_annotators(con: Any) -> list[ExcludedAnnotator]:
    """Annotators with excluded labels: how many, and who excluded them when (the latest exclusion); the most
    recently excluded first."""
    rows = con.execute(
        "SELECT l.annotator_id, count(*), arg_max(r.retracted_by, r.retracted_at), max(r.retracted_at) "
        "FROM label_retractions r JOIN labels l USING (label_id) "
        "WHERE r.reason = ? GROUP BY l.annotator_id ORDER BY max(r.retracted_at) DESC, l.annotator_id",
        [EXCLUDED],
    ).fetchall()
    return [ExcludedAnnotator(who, int(n), by, at) for who, n, by, at in rows]


def release_leases(con: Any, annotator_id: str, *, now: datetime | None = None) -> int:
    """Give back every live lease of an annotator (on log-out), so others can take the pairs at once."""
    now = now or utcnow()
    n = con.execute(
        "SELECT count(*) FROM assignments WHERE annotator_id = ? AND status = 'active' AND expires_at > ?",
        [annotator_id, now],
    ).fetchone()[0]
    con.execute(
        "UPDATE assignments SET status = 'released', closed_at = ? "
        "WHERE annotator_id = ? AND status = 'active' AND expires_at > ?",
        [now, annotator_id, now],
    )
    return int(n)


# --------------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------------


def get_assignment(con: Any, assignment_id: str) -> Assignment:
    rows = fetch_dicts(con, f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE assignment_id = ?", [assignment_id])
    if not rows:
        raise NotFoundError(f"No assignment with id {assignment_id!r}.")
    return Assignment(**rows[0])


def count_assignments(con: Any, annotator_id: str) -> int:
    """How many assignments an annotator has ever had (seeds reproducible queue randomness)."""
    return int(con.execute("SELECT count(*) FROM assignments WHERE annotator_id = ?", [annotator_id]).fetchone()[0])


def pair_for_display(con: Any, pair_id: str) -> dict[str, Any]:
    """What the Label page needs of a pair, in one query: ids, the context (history, candidates) and
    both generations (items, problems) with JSON decoded. Keys: pair_id, context_id, gen_a, gen_b,
    shopper_id, history, candidates, and per generation id ``{"items": [...], "problems": [...]}``
    under ``generations``."""
    rows = con.execute(
        """SELECT p.pair_id, coalesce(p.context_id, g.context_id), p.gen_a, p.gen_b, c.shopper_id, c.history,
                  c.candidates, g.generation_id, g.items, g.problems
           FROM pairs p JOIN generations g ON g.generation_id IN (p.gen_a, p.gen_b)
           LEFT JOIN contexts c ON c.context_id = coalesce(p.context_id, g.context_id)
           WHERE p.pair_id = ?""",
        [pair_id],
    ).fetchall()
    if not rows:
        raise NotFoundError(f"No pair with id {pair_id!r} (or its generations are missing).")
    first = rows[0]
    return {
        "pair_id": first[0], "context_id": first[1], "gen_a": first[2], "gen_b": first[3], "shopper_id": first[4],
        "history": list(from_json(first[5]) or []), "candidates": list(from_json(first[6]) or []),
        "generations": {r[7]: {"items": from_json(r[8]) or [], "problems": from_json(r[9]) or []} for r in rows},
    }


def items_for_display(con: Any, ids: Sequence[str]) -> dict[str, CatalogItem]:
    """Catalogue items by id, without their descriptions (the page does not show them); unknown ids are
    absent."""
    unique = list(dict.fromkeys(ids))
    if not unique:
        return {}
    rows = con.execute(
        "SELECT item_id, title, category, price, attributes FROM catalog_items "
        f"WHERE item_id IN ({','.join('?' * len(unique))})",
        unique,
    ).fetchall()
    return {r[0]: CatalogItem(item_id=r[0], title=r[1], category=r[2], price=r[3], attributes=from_json(r[4]))
            for r in rows}


def progress(con: Any, annotator_id: str, *, now: datetime | None = None) -> Progress:
    """Current labels by this annotator today (UTC) and in total, and pairs the queue could still give them."""
    now = now or utcnow()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    total, today = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE created_at >= ?) FROM labels l "
        f"WHERE annotator_id = ? AND {_CURRENT.format(alias='l')}",
        [start, annotator_id],
    ).fetchone()
    left = con.execute(f"SELECT count(*) FROM ({_ELIGIBLE})", {"who": annotator_id, "now": now}).fetchone()[0]
    held = _live_lease(con, annotator_id, now)
    return Progress(today=int(today), total=int(total), queue_left=int(left) + (1 if held else 0))


def queue_summary(con: Any, *, now: datetime | None = None) -> dict[str, int]:
    """Counts for dashboards: pairs open/complete/gold, live leases, current and retracted labels."""
    now = now or utcnow()
    row = con.execute(
        f"""SELECT
              (SELECT count(*) FROM pairs WHERE status = 'open' AND NOT is_gold),
              (SELECT count(*) FROM pairs WHERE status = 'complete'),
              (SELECT count(*) FROM pairs WHERE is_gold),
              (SELECT count(*) FROM assignments WHERE status = 'active' AND expires_at > $now),
              (SELECT count(*) FROM labels l WHERE {_CURRENT.format(alias='l')}),
              (SELECT count(*) FROM label_retractions)""",
        {"now": now},
    ).fetchone()
    keys = ("open_pairs", "complete_pairs", "gold_pairs", "live_leases", "labels", "retracted_labels")
    return dict(zip(keys, (int(v) for v in row)))


def current_labels(con: Any, *, pair_ids: Sequence[str] | None = None, annotator_id: str | None = None) -> list[Label]:
    """Labels without a retraction (re-shows included; filter on ``is_reshow``), oldest first."""
    sql = f"SELECT {_LABEL_COLUMNS} FROM labels l WHERE {_CURRENT.format(alias='l')}"
    params: list[Any] = []
    if pair_ids is not None:
        if not pair_ids:
            return []
        sql += " AND pair_id IN (" + ",".join("?" * len(pair_ids)) + ")"
        params.extend(pair_ids)
    if annotator_id is not None:
        sql += " AND annotator_id = ?"
        params.append(annotator_id)
    return [_label(r) for r in fetch_dicts(con, sql + " ORDER BY created_at, label_id", params)]


def label_counts(con: Any) -> dict[str, int]:
    """Current, non-re-show labels per pair."""
    rows = con.execute(
        f"SELECT pair_id, count(*) FROM labels l WHERE NOT is_reshow AND {_CURRENT.format(alias='l')} "
        "GROUP BY pair_id"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def count_trainable_labels(con: Any) -> int:
    """Current, non-re-show A/B labels on pairs a reward model may learn from: not gold, and not on a context
    of the held-out split (those shoppers are for evaluation only). One aggregate query: the Training page
    asks on every run, and reading 100k labels into records to count them took seconds (BENCHMARKS.md)."""
    row = con.execute(
        f"SELECT count(*) FROM labels l JOIN pairs p ON p.pair_id = l.pair_id "
        f"LEFT JOIN contexts c ON c.context_id = p.context_id "
        f"WHERE {_CURRENT.format(alias='l')} AND NOT l.is_reshow AND l.choice IN ('A', 'B') AND NOT p.is_gold "
        f"AND NOT EXISTS (SELECT 1 FROM gold g WHERE g.pair_id = l.pair_id) AND coalesce(c.split, '') <> 'heldout'"
    ).fetchone()
    return int(row[0])


def get_label(con: Any, label_id: str) -> Label:
    rows = fetch_dicts(con, f"SELECT {_LABEL_COLUMNS} FROM labels WHERE label_id = ?", [label_id])
    if not rows:
        raise NotFoundError(f"No label with id {label_id!r}.")
    return _label(rows[0])


def gold_answers(con: Any) -> dict[str, str]:
    """Expected canonical choice per gold pair."""
    return {r[0]: r[1] for r in con.execute("SELECT pair_id, expected_choice FROM gold").fetchall()}


def gold_rows(con: Any, pair_id: str | None = None) -> list[dict[str, Any]]:
    """Every gold answer (or one pair's) with its note, author and time, newest first."""
    where, params = ("WHERE pair_id = ?", [pair_id]) if pair_id is not None else ("", [])
    return fetch_dicts(con, f"SELECT pair_id, expected_choice, note, created_by, created_at FROM gold {where} "
                            "ORDER BY created_at DESC, pair_id", params)


def set_gold(con: Any, pair_id: str, expected_choice: str, *, note: str | None = None, created_by: str | None = None) -> None:
    """Mark a pair as gold with its expected canonical choice (A, B, tie or both_bad)."""
    if expected_choice not in CHOICES:
        raise ValidationError(f"A gold answer is one of {', '.join(CHOICES)}, not {expected_choice!r}.")
    _pair_row(con, pair_id)
    con.execute(
        "INSERT OR REPLACE INTO gold (pair_id, expected_choice, note, created_by) VALUES (?, ?, ?, ?)",
        [pair_id, expected_choice, note, created_by],
    )
    con.execute("UPDATE pairs SET is_gold = true, status = 'open' WHERE pair_id = ?", [pair_id])


def import_labels(con: Any, labels: Iterable[Label]) -> int:
    """Bulk-load labels that did not come through the queue (simulated annotators, imports, benchmarks).

    The queue's rules are not applied -- these are facts from elsewhere -- but pair statuses are
    refreshed so the queue stops serving pairs that are now complete.
    """
    rows = list(labels)
    if not rows:
        return 0
    _insert_labels(con, rows)
    refresh_pair_status(con, sorted({r.pair_id for r in rows}))
    return len(rows)


def _insert_labels(con: Any, labels: Sequence[Label]) -> None:
    bad = sorted({x.choice for x in labels} - set(CHOICES))
    if bad:
        raise ValidationError(f"Unknown label choice(s): {', '.join(bad)}.")
    columns = ("label_id, pair_id, annotator_id, assignment_id, choice, strength, left_side, item_flags, rationale, "
               "time_ms, is_reshow, source, created_at")
    values = [
        (x.label_id, x.pair_id, x.annotator_id, x.assignment_id, x.choice, x.strength, x.left_side,
         as_json(x.item_flags or {}), x.rationale, x.time_ms, bool(x.is_reshow), x.source, x.created_at or utcnow())
        for x in labels
    ]
    if len(values) == 1:
        con.execute(f"INSERT INTO labels ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(values[0]))
        return
    frame = pd.DataFrame(values, columns=[c.strip() for c in columns.split(",")])
    frame["strength"] = frame["strength"].astype("Int64")
    frame["time_ms"] = frame["time_ms"].astype("Int64")
    con.register("_labels_in", frame)
    try:
        con.execute(f"INSERT INTO labels ({columns}) SELECT {columns} FROM _labels_in")
    finally:
        con.unregister("_labels_in")


def _assignment_with_pair(con: Any, assignment_id: str) -> tuple[Assignment, dict[str, Any]]:
    rows = fetch_dicts(
        con,
        "SELECT a.assignment_id, a.pair_id, a.annotator_id, a.left_gen, a.is_reshow, a.reason, a.status, "
        "a.assigned_at, a.expires_at, p.gen_a, p.gen_b, p.is_gold, p.overlap_target "
        "FROM assignments a JOIN pairs p ON p.pair_id = a.pair_id WHERE a.assignment_id = ?",
        [assignment_id],
    )
    if not rows:
        raise NotFoundError(f"No assignment with id {assignment_id!r}.")
    r = rows[0]
    pair = {k: r.pop(k) for k in ("gen_a", "gen_b", "is_gold", "overlap_target")}
    pair["pair_id"] = r["pair_id"]
    return Assignment(**r), pair


def _pair_row(con: Any, pair_id: str) -> dict[str, Any]:
    rows = fetch_dicts(
        con, "SELECT pair_id, gen_a, gen_b, is_gold, overlap_target, status FROM pairs WHERE pair_id = ?", [pair_id]
    )
    if not rows:
        raise NotFoundError(f"No pair with id {pair_id!r}.")
    return rows[0]


def _label(r: dict[str, Any]) -> Label:
    return Label(
        label_id=r["label_id"], pair_id=r["pair_id"], annotator_id=r["annotator_id"], choice=r["choice"],
        strength=r["strength"], left_side=r["left_side"], item_flags=from_json(r["item_flags"]) or {},
        rationale=r["rationale"], time_ms=r["time_ms"], is_reshow=bool(r["is_reshow"]), source=r["source"],
        assignment_id=r["assignment_id"], created_at=r["created_at"],
    )
