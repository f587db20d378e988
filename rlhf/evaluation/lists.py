"""A policy's lists on the evaluation contexts, grouped by context, from generation records or the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.evaluation.intervals import context_mean_scores


@dataclass(frozen=True)
class PolicyLists:
    """One policy's lists on the evaluation contexts: ``lists[context_id]`` = its lists (samples)."""

    policy_id: str
    lists: dict[str, list[list[str]]]
    valid: dict[str, list[bool]] | None = None
    kind: str = "llm"
    generation_ids: dict[str, list[str]] | None = None
    #: ``reasons[context_id]``: each list's reasons, parallel to ``lists`` (None: a baseline, no reasons).
    reasons: dict[str, list[list[str]]] | None = None

    def context_scores(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Per-context mean of ``generation_id -> score`` over this policy's generations."""
        gen_context = {g: c for c, gens in (self.generation_ids or {}).items() for g in gens}
        return context_mean_scores(scores, gen_context)


def policy_lists(policy_id: str, generations: Iterable[Any]) -> PolicyLists:
    """``policy_id``'s lists among ``generations`` (records with ``policy_id``, ``context_id``, ``items``,
    ``is_valid``, ``generation_id``), grouped by context; the others are ignored."""
    lists: dict[str, list[list[str]]] = {}
    valid: dict[str, list[bool]] = {}
    gen_ids: dict[str, list[str]] = {}
    reasons: dict[str, list[list[str]]] = {}
    for g in generations:
        if g.policy_id != policy_id:
            continue
        lists.setdefault(g.context_id, []).append([i.item_id for i in g.items])
        reasons.setdefault(g.context_id, []).append([i.reason for i in g.items])
        valid.setdefault(g.context_id, []).append(bool(g.is_valid))
        gen_ids.setdefault(g.context_id, []).append(g.generation_id)
    return PolicyLists(policy_id, lists, valid, generation_ids=gen_ids, reasons=reasons)


def policy_lists_from_store(store: Any, policy_id: str, context_ids: Sequence[str]) -> PolicyLists:
    """A policy's generations on the given contexts, as lists of item ids with validity flags."""
    from storage import generations as gen_repo

    with store.transaction() as con:
        gens = gen_repo.generations_for_contexts(con, list(context_ids), policy_id=policy_id)
    return policy_lists(policy_id, gens)
