"""A round's lists beside its parent's and the zero-shot model's, for the same held-out shoppers.

A round's report says in numbers whether its policy got better. An engineer also wants to see how:
which items it now recommends, with which reasons, and whether the shopper bought them later. This
module lays the policies' lists out shopper by shopper (one list per policy, the first sample), marks
the items each shopper bought after the cut, and puts first the shoppers on whom the policies differ
most, which is where a change shows (TRL logs sample completions during training for the same reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rlhf.annotation import ShownList, shown_list
from rlhf.evaluation import future_purchases_from_store, ndcg_at_n
from rlhf.reasons import line_verdicts
from rlhf.settings import Settings
from storage import Store
from storage.records import CatalogItem, Generation


@dataclass(frozen=True)
class PolicyColumn:
    """One policy's list for one shopper: what it showed, which ranks the shopper bought later, its NDCG."""

    policy_id: str
    role: str
    shown: ShownList
    bought_ranks: frozenset[int]
    ndcg: float
    is_valid: bool
    #: Ranks whose reason names nothing of the item or the shopper's history (:mod:`rlhf.reasons`).
    off_topic_ranks: frozenset[int] = frozenset()
    #: Ranks whose reason is only a product line: a candidate's from the prompt (title, category, price), or
    #: one in that format under an invented name (:func:`rlhf.reasons.line_verdicts`' ``copy``).
    copied_ranks: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ShopperLists:
    """A held-out shopper: their purchases before the cut, what they bought after it, and each policy's list."""

    context_id: str
    shopper_id: str
    as_of: datetime
    history: tuple[CatalogItem, ...]
    bought_later: tuple[CatalogItem, ...]
    columns: tuple[PolicyColumn, ...]

    @property
    def ndcg_spread(self) -> float:
        """How far apart the policies' lists score for this shopper (0 when they agree)."""
        return _spread([c.ndcg for c in self.columns])


def _spread(scores: Sequence[float]) -> float:
    return max(scores) - min(scores) if scores else 0.0


def round_policies(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(policy id, role) of the policies a round's report compares: the new policy, its parent and, when
    it is another policy, the zero-shot model."""
    new, parent, zero = report.get("policy_id"), report.get("previous_policy_id"), report.get("zero_shot_policy_id")
    out = [(new, "new policy")] if new else []
    if parent:
        out.append((parent, "parent (zero-shot)" if parent == zero else "parent"))
    if zero and zero != parent:
        out.append((zero, "zero-shot"))
    return out


def round_side_by_side(store: Store, settings: Settings, round_id: str, *, limit: int = 20) -> list[ShopperLists]:
    """The lists of a finished round's new policy beside its parent's and the zero-shot model's, on the
    held-out shoppers the round evaluated (see :func:`side_by_side`); empty when it stored no report
    (not finished, or no held-out contexts). An unknown round id is an error."""
    from rlhf.rounds import latest_report
    from storage.errors import NotFoundError
    from storage.generations import heldout_contexts_with_lists
    from storage.rounds import find_round

    with store.transaction() as con:
        record = find_round(con, round_id)
    if record is None:
        raise NotFoundError(f"No round with id {round_id!r} (`recfeedback round list`).")
    policies = round_policies(latest_report(store, round_id))
    if not policies:
        return []
    with store.transaction() as con:
        contexts = heldout_contexts_with_lists(con, policies[0][0], round_id)
    config = record.config or {}  # the round's own N and purchase events, as its report counted them
    return side_by_side(store, settings, policies, contexts, list_length=(config.get("generation") or {}).get("list_length"),
                        events=(config.get("rounds") or {}).get("eval_events"), limit=limit)


def side_by_side(store: Store, settings: Settings, policies: Sequence[tuple[str, str]], context_ids: Sequence[str], *,
                 list_length: int | None = None, events: Sequence[str] | None = None,
                 limit: int = 20) -> list[ShopperLists]:
    """Each policy's first list for the held-out ``context_ids`` where every policy has one, at most ``limit``
    shoppers: those who bought something after the cut first, by how far apart the lists score (NDCG@N
    against those purchases, N = ``list_length``; purchases are interactions of ``events``; both default to
    the settings'), then by context id."""
    from storage.contexts import get_contexts
    from storage.generations import generations_for_contexts
    from storage.queue import items_for_display

    n = list_length or settings.generation.list_length
    with store.transaction() as con:
        found = get_contexts(con, list(context_ids))
        wanted = [c for c in context_ids if c in found and found[c].split == "heldout"]
        first: dict[str, dict[str, Generation]] = {p: {} for p, _ in policies}
        for policy_id, _ in policies:
            for g in generations_for_contexts(con, wanted, policy_id=policy_id):
                first[policy_id].setdefault(g.context_id, g)  # in creation order: the first sample
        shared = [c for c in wanted if all(c in first[p] for p, _ in policies)]
    contexts = {c: found[c] for c in shared}
    events = settings.rounds.eval_events if events is None else events
    later = future_purchases_from_store(store, list(contexts.values()), events=list(events) or None)
    rows = []
    for context_id in shared:
        bought = later.get(context_id, set())
        columns = []
        for policy_id, role in policies:
            g = first[policy_id][context_id]
            listed = [i.item_id for i in g.items]
            columns.append((policy_id, role, g, frozenset(r for r, i in enumerate(listed, 1) if i in bought),
                            ndcg_at_n(listed, bought, n) if bought else 0.0))
        rows.append((context_id, bought, columns))
    rows.sort(key=lambda r: (not r[1], -_spread([c[4] for c in r[2]]), r[0]))
    rows = rows[: max(0, limit)]
    with store.transaction() as con:
        ids = {i for cid, bought, cols in rows for i in (*contexts[cid].history, *contexts[cid].candidates, *bought)}
        ids |= {i.item_id for _, _, cols in rows for c in cols for i in c[2].items}
        items = items_for_display(con, sorted(ids))
    out = []
    for context_id, bought, cols in rows:
        context = contexts[context_id]
        candidates = set(context.candidates)
        history = [items[i].title for i in context.history if i in items]
        out.append(ShopperLists(
            context_id=context_id, shopper_id=context.shopper_id, as_of=context.as_of,
            history=tuple(items[i] for i in reversed(context.history) if i in items),  # most recent first
            bought_later=tuple(items[i] for i in sorted(bought) if i in items),
            columns=tuple(
                PolicyColumn(policy_id=policy_id, role=role, shown=shown_list(_as_display(g), items, candidates),
                             bought_ranks=ranks, ndcg=ndcg, is_valid=bool(g.is_valid),
                             **_reason_marks(g, items, history, context.candidates))
                for policy_id, role, g, ranks, ndcg in cols
            ),
        ))
    return out


def _reason_marks(g: Generation, items: Mapping[str, CatalogItem], history: Sequence[str],
                  candidates: Sequence[str]) -> dict[str, frozenset[int]]:
    """The ranks of ``g`` whose reason is off-topic, and those whose reason is only a product line."""
    def line(i: Any) -> tuple[str | None, str | None, str | None]:
        item = items.get(i.item_id)
        return (i.reason, item.title if item else None, item.category if item else None)

    verdicts = line_verdicts([line(i) for i in g.items], history, [items[c].title for c in candidates if c in items])
    return {f"{kind}_ranks": frozenset(rank for rank, v in enumerate(verdicts, 1) if v == verdict)
            for kind, verdict in (("off_topic", "off_topic"), ("copied", "copy"))}


def _as_display(g: Generation) -> dict[str, Any]:
    """A stored generation in the shape the Label page's list builder reads."""
    return {"items": [{"item_id": i.item_id, "reason": i.reason} for i in g.items], "problems": list(g.problems)}
