"""Annotation services: what the Label page (and simulated annotators, benchmarks) call.

Public API -- every function takes the :class:`storage.Store` and an annotator id, opens its own short
unit(s) of work, and returns plain records; none imports torch or any model code:

- :func:`next_task` -- the annotator's current pair, ready to display (:class:`Task`), or None when the
  queue has nothing left for them. Idempotent: asking again returns the same task until it is answered.
- :func:`submit_label` -- record the answer to a task. ``choice`` is in DISPLAY terms ('left', 'right',
  'tie', 'both_bad'); it is stored in the pair's canonical A/B terms. Submitting twice stores once.
- :func:`submit_and_next` -- both of the above in ONE unit of work (one commit; all or nothing).
- :func:`skip_task` -- close a task with a reason; the pair is never shown to this annotator again.
- :func:`undo_last_label` -- retract the annotator's latest label within ``settings.queue.undo_window_s``
  and return its pair as the current task (same sides as before), with the undone answer to edit.
- :func:`get_progress` -- labels today / in total, pairs left for this annotator.
- :func:`release_tasks` -- give back held pairs (log-out).
- :func:`get_guidelines` / :func:`set_guidelines` -- the markdown shown in the Label page's sidebar.

The queue rules themselves live in :mod:`storage.queue` (one function serves, one records).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rlhf.parsing import PROBLEM_LABELS, describes_other_item
from rlhf.prompts import attribute_details, copies_example
from rlhf.reasons import line_verdicts
from rlhf.settings import Settings, get_settings
from storage import Store
from storage import app_texts as texts_repo
from storage import queue as queue_repo
from storage.errors import NotFoundError, ValidationError
from storage.queue import Progress, QueuePolicy
from storage.records import CatalogItem, Label

GUIDELINES_KEY = "guidelines"

DEFAULT_GUIDELINES = """\
**Which list would this shopper rather see?**

1. Read the shopper's recent purchases first.
2. Compare the two lists as a whole: relevance to this shopper, variety, and whether each reason is
   true and specific.
3. Choose **A** or **B** and how much better it is; **Tie** when they are equally good; **Both bad**
   when neither is useful.
4. Flag single items that are irrelevant, not in the catalogue, duplicated, or have a bad reason.

**Badges** on an item are what the system checked for you:
- red ones are problems that make the list invalid: *unknown item*, *not a candidate* (not among the
  shopper's candidates), *duplicate*, *no reason*, *copied example reason* (the instructions' example), and
  *describes another item* (the reason is about another candidate);
- the grey *reason only names a product* marks a reason that is only a product's name or its line from the
  catalogue (title, category, price): it tells the shopper nothing about why.

A list with badges usually deserves to lose against one without, but judge the whole list. A reason can be
wrong without any badge: read each and ask whether it is true and specific for this shopper.

Keyboard: **1** = A, **2** = B, **3** = tie, **4** = both bad, **Enter** = submit; **Tab** to "How much
better?" and the **arrow keys** set the strength.
"""


@dataclass(frozen=True)
class ShownItem:
    """One recommended item as the annotator sees it; ``badges`` name problems with this item and
    ``attributes`` are the catalogue attributes the policy was shown (``"color Navy"``)."""

    rank: int
    item_id: str
    title: str
    category: str | None
    price: float | None
    reason: str
    badges: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShownList:
    """One side of a task: its items and list-level problems found by the parser."""

    items: tuple[ShownItem, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShownAnswer:
    """An answer in the terms it was given in: ``choice`` is 'left', 'right', 'tie' or 'both_bad', ``flags``
    maps a shown side to {item_id: [flag codes]}."""

    choice: str
    strength: int | None
    flags: dict[str, dict[str, list[str]]]
    rationale: str | None

    @classmethod
    def of(cls, label: Label) -> ShownAnswer:
        """A stored label (canonical A/B) as its annotator gave it (``label.left_side`` was on the left)."""
        left_is_a = label.left_side != "B"

        def shown(side: str) -> str:
            return "left" if (side == "A") == left_is_a else "right"

        flags: dict[str, dict[str, list[str]]] = {}
        for key, codes in (label.item_flags or {}).items():
            side, item_id = key.split(":", 1)
            flags.setdefault(shown(side), {})[item_id] = list(codes)
        choice = shown(label.choice) if label.choice in ("A", "B") else label.choice
        return cls(choice, label.strength, flags, label.rationale)


@dataclass(frozen=True)
class Task:
    """A pair leased to an annotator, resolved for display.

    ``reason`` (priority / gold / reshow / undo) is for logs and debugging only: the page must not show
    it, so that gold pairs and re-shows are not recognisable. ``previous_answer`` is the answer an undo
    took back, for the page to show again.
    """

    assignment_id: str
    pair_id: str
    reason: str
    shopper_id: str
    history: tuple[CatalogItem, ...]
    candidates: tuple[CatalogItem, ...]
    left: ShownList
    right: ShownList
    expires_at: datetime
    assigned_at: datetime = field(compare=False, default=None)  # type: ignore[assignment]
    attribute_keys: tuple[str, ...] = ()
    previous_answer: ShownAnswer | None = field(compare=False, default=None)

    def attributes(self, item: CatalogItem) -> tuple[str, ...]:
        """The attributes of a history or candidate item that the policy's prompt describes."""
        return tuple(attribute_details(item, self.attribute_keys))

    @property
    def same_items(self) -> bool:
        """Both lists recommend the same items in the same order, so only their reasons differ: the page
        says so, since two policy samples often agree on the items (a quarter of the demo's first pairs)."""
        return bool(self.left.items) and [i.item_id for i in self.left.items] == [i.item_id for i in self.right.items]


def queue_policy(settings: Settings | None = None) -> QueuePolicy:
    """The queue's knobs from ``settings.queue``."""
    q = (settings or get_settings()).queue
    return QueuePolicy(
        lease_minutes=q.lease_minutes, gold_rate=q.gold_rate, reshow_rate=q.reshow_rate,
        reshow_min_gap=q.reshow_min_gap, undo_window_s=q.undo_window_s, max_rationale_chars=q.max_rationale_chars,
        breadth_first=q.breadth_first,
    )


def _rng(con: Any, settings: Settings, annotator_id: str) -> random.Random:
    """Fresh randomness, or with ``settings.queue.seed`` a reproducible stream per annotator."""
    seed = settings.queue.seed
    if seed is None:
        return random.Random()
    n = queue_repo.count_assignments(con, annotator_id)
    return random.Random(f"{seed}/{annotator_id}/{n}")


def next_task(
    store: Store, annotator_id: str, *, settings: Settings | None = None, now: datetime | None = None
) -> Task | None:
    """The annotator's current task (leased now if they hold none); None when nothing is left for them."""
    settings = settings or get_settings()
    with store.transaction() as con:
        assignment = queue_repo.next_assignment(
            con, annotator_id, queue_policy(settings), now=now, rng=_rng(con, settings, annotator_id)
        )
        if assignment is None:
            return None
        return _resolve(con, assignment, settings)


def _resolve(con: Any, assignment: Any, settings: Settings) -> Task:
    """Everything the page shows for an assignment, in two queries (pair+context+generations, items)."""
    return _shown(con, assignment.pair_id, assignment.left_gen, settings, assignment_id=assignment.assignment_id,
                  reason=assignment.reason, expires_at=assignment.expires_at, assigned_at=assignment.assigned_at)


def pair_as_shown(store: Store, pair_id: str, *, settings: Settings | None = None) -> Task:
    """A pair as annotators see it, list A on the left, with no lease: for a manager who reviews it (to give
    it a gold answer, say). Its ``assignment_id`` is empty."""
    settings = settings or get_settings()
    with store.transaction() as con:
        shown = queue_repo.pair_for_display(con, pair_id)
        if not shown["gen_a"] or not shown["gen_b"]:
            raise ValidationError(f"Pair {pair_id} has no two lists to show (an imported pair).")
        now = queue_repo.utcnow()
        return _shown(con, pair_id, shown["gen_a"], settings, assignment_id="", reason="review", expires_at=now,
                      assigned_at=now, shown=shown)


def _shown(con: Any, pair_id: str, left_id: str | None, settings: Settings, *, shown: dict[str, Any] | None = None,
           **lease: Any) -> Task:
    shown = shown or queue_repo.pair_for_display(con, pair_id)
    right_id = shown["gen_b"] if left_id == shown["gen_a"] else shown["gen_a"]
    gens = shown["generations"]
    if left_id not in gens or right_id not in gens:
        raise NotFoundError(f"Pair {pair_id} names a generation that does not exist.")
    listed = [i.get("item_id", "") for g in (gens[left_id], gens[right_id]) for i in g["items"]]
    items = queue_repo.items_for_display(con, [*shown["history"], *shown["candidates"], *listed])
    keys = tuple(settings.contexts.item_attributes)
    candidate_set = set(shown["candidates"])
    history = tuple(reversed([items[i] for i in shown["history"] if i in items]))  # most recent first
    candidates = tuple(items[i] for i in shown["candidates"] if i in items)
    return Task(
        pair_id=pair_id, shopper_id=shown["shopper_id"] or "", history=history, candidates=candidates,
        left=shown_list(gens[left_id], items, candidate_set, keys, history),
        right=shown_list(gens[right_id], items, candidate_set, keys, history), attribute_keys=keys, **lease,
    )


#: The badge of an item whose reason is only a product line: a candidate's line copied from the prompt, one in
#: its format under an invented name, or a bare product name (:func:`rlhf.reasons.line_verdicts`' ``copy``). The
#: side-by-side lists and ``round lists`` use the same words.
COPIED_LINE_BADGE = "reason only names a product"


def shown_list(
    gen: dict[str, Any], items: dict[str, CatalogItem], candidates: set[str], attribute_keys: tuple[str, ...] = (),
    history: Sequence[CatalogItem] | None = None,
) -> ShownList:
    """A stored list (``items``: item id and reason; ``problems``) as people see it: titles, and a badge on
    every item with a problem, which the Label page and the Training page's side-by-side lists show alike.

    With the shopper's ``history`` (the Label page), a reason that begins with a product line (a candidate's,
    its own or another's, or one in the prompt's format under an invented name) and says nothing about the
    item or the shopper besides, or that is only a product's name, gets :data:`COPIED_LINE_BADGE`: a
    product's name is not a reason, and annotators should not have to spot the copy themselves. (The
    side-by-side lists mark it apart.)
    """
    shown: list[ShownItem] = []
    seen: set[str] = set()
    titles = {i: items[i].title for i in candidates if i in items}
    copies = _copied_line_ranks(gen, items, titles, history) if history is not None else set()
    for rank, entry in enumerate(gen["items"], start=1):
        item_id = str(entry.get("item_id", ""))
        reason = str(entry.get("reason") or "")
        item = items.get(item_id)
        badges: list[str] = []
        if item is None:
            badges.append(PROBLEM_LABELS["unknown_id"])
        elif candidates and item_id not in candidates:
            badges.append(PROBLEM_LABELS["not_a_candidate"])
        if item_id in seen:
            badges.append(PROBLEM_LABELS["duplicate"])
        if not reason.strip():
            badges.append(PROBLEM_LABELS["missing_reason"])
        elif copies_example(reason):
            badges.append(PROBLEM_LABELS["copied_example"])
        elif describes_other_item(reason, item_id, titles) is not None:
            badges.append(PROBLEM_LABELS["other_item_reason"])
        elif rank in copies:
            badges.append(COPIED_LINE_BADGE)
        seen.add(item_id)
        shown.append(ShownItem(
            rank=rank, item_id=item_id, title=item.title if item else f"(unknown item {item_id})",
            category=item.category if item else None, price=item.price if item else None,
            reason=reason, badges=tuple(badges),
            attributes=tuple(attribute_details(item, attribute_keys)) if item else (),
        ))
    problems = []
    for p in gen["problems"]:
        kind = str(p.get("kind", "problem")) if isinstance(p, dict) else str(p)
        name = PROBLEM_LABELS.get(kind, kind.replace("_", " "))
        if name not in problems:
            problems.append(name)
    return ShownList(items=tuple(shown), problems=tuple(problems))


def _copied_line_ranks(
    gen: dict[str, Any], items: dict[str, CatalogItem], titles: dict[str, str], history: Sequence[CatalogItem]
) -> set[int]:
    """The ranks in ``gen`` whose reason :func:`rlhf.reasons.line_verdicts` calls a product line (``copy``)."""
    def line(entry: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        item = items.get(str(entry.get("item_id", "")))
        return str(entry.get("reason") or ""), item.title if item else None, item.category if item else None

    verdicts = line_verdicts([line(e) for e in gen["items"]], [h.title for h in history], titles.values())
    return {rank for rank, verdict in enumerate(verdicts, start=1) if verdict == "copy"}


def submit_label(
    store: Store,
    annotator_id: str,
    assignment_id: str,
    choice: str,
    *,
    strength: int | None = None,
    item_flags: dict[str, dict[str, list[str]]] | None = None,
    rationale: str | None = None,
    time_ms: int | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    source: str = "app",
) -> Label:
    """Record the annotator's answer to a task (display terms; see the module docstring). ``source`` is the
    label's origin, which the Agreement page filters on: ``app``, or ``simulated`` for the simulated crowd."""
    policy = queue_policy(settings)
    with store.transaction() as con:
        label, _created = queue_repo.record_label(
            con, assignment_id=assignment_id, annotator_id=annotator_id, shown_choice=choice, strength=strength,
            item_flags=item_flags, rationale=rationale, time_ms=time_ms, policy=policy, now=now, source=source,
        )
    return label


def submit_and_next(
    store: Store,
    annotator_id: str,
    assignment_id: str,
    choice: str,
    *,
    strength: int | None = None,
    item_flags: dict[str, dict[str, list[str]]] | None = None,
    rationale: str | None = None,
    time_ms: int | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> tuple[Label, Task | None]:
    """Record an answer and lease the next task, in ONE unit of work (one commit, one file attach).

    All or nothing: if anything fails, no label is stored and the same task can be submitted again.
    """
    settings = settings or get_settings()
    policy = queue_policy(settings)
    with store.transaction() as con:
        label, _created = queue_repo.record_label(
            con, assignment_id=assignment_id, annotator_id=annotator_id, shown_choice=choice, strength=strength,
            item_flags=item_flags, rationale=rationale, time_ms=time_ms, policy=policy, now=now,
        )
        assignment = queue_repo.next_assignment(
            con, annotator_id, policy, now=now, rng=_rng(con, settings, annotator_id)
        )
        return label, (None if assignment is None else _resolve(con, assignment, settings))


def skip_task(
    store: Store, annotator_id: str, assignment_id: str, reason: str, *, now: datetime | None = None
) -> None:
    """Skip a task with a reason (one of ``settings.queue.skip_reasons`` or free text)."""
    with store.transaction() as con:
        queue_repo.skip(con, assignment_id=assignment_id, annotator_id=annotator_id, reason=reason, now=now)


def undo_last_label(
    store: Store, annotator_id: str, *, label_id: str | None = None, settings: Settings | None = None,
    now: datetime | None = None,
) -> Task:
    """Retract the latest label (within the undo window) and return its pair as the current task, with the
    undone answer as ``previous_answer`` so that the annotator corrects it rather than start again.
    ``label_id``: the label the caller showed as its last; refused if the annotator has labelled since."""
    settings = settings or get_settings()
    with store.transaction() as con:
        label, assignment = queue_repo.undo_last(con, annotator_id, queue_policy(settings), now=now,
                                                 label_id=label_id)
        task = _resolve(con, assignment, settings)
    return replace(task, previous_answer=ShownAnswer.of(label))


def get_progress(store: Store, annotator_id: str, *, now: datetime | None = None) -> Progress:
    """Labels today and in total, and pairs the queue could still give this annotator."""
    with store.transaction() as con:
        return queue_repo.progress(con, annotator_id, now=now)


def release_tasks(store: Store, annotator_id: str) -> int:
    """Give back the annotator's held pairs at once (log-out) instead of waiting for the lease to expire."""
    with store.transaction() as con:
        return queue_repo.release_leases(con, annotator_id)


def queue_summary(store: Store) -> dict[str, int]:
    """Counts of open / complete / gold pairs, live leases and labels (dashboards)."""
    with store.transaction() as con:
        return queue_repo.queue_summary(con)


def get_guidelines(store: Store) -> str:
    """The labelling guidelines (markdown); a sensible default until an admin writes some."""
    with store.transaction() as con:
        found = texts_repo.get_text(con, GUIDELINES_KEY)
    return found[0] if found else DEFAULT_GUIDELINES


def set_guidelines(store: Store, body: str, *, updated_by: str | None = None) -> int:
    """Save a new version of the guidelines; returns the version number."""
    body = (body or "").strip()
    if not body:
        raise ValidationError("The guidelines cannot be empty.")
    if len(body) > 50_000:
        raise ValidationError("The guidelines are longer than 50,000 characters.")
    control = next((i for i, ch in enumerate(body) if ch < " " and ch not in "\n\r\t"), None)
    if control is not None:
        line = body.count("\n", 0, control) + 1
        raise ValidationError(f"The guidelines hold a control character ({ord(body[control]):#04x}) on line {line}: "
                              "they look like a binary file, not markdown.")
    with store.transaction() as con:
        return texts_repo.set_text(con, GUIDELINES_KEY, body, updated_by=updated_by)
