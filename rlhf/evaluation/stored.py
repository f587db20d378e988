"""Evaluating and comparing policies whose lists are in the store (the CLI's ``evaluate``/``compare`` and
the dashboards), with the baselines beside them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from rlhf.evaluation.intervals import Estimate
from rlhf.evaluation.lists import PolicyLists, policy_lists_from_store
from rlhf.evaluation.report import (
    baseline_ids,
    evaluate_with_baselines,
    paired_ndcg_differences,
    paired_reason_differences,
)
from rlhf.evaluation.truth import GroundTruth, load_ground_truth


def evaluate_policies(
    store: Any, policy_ids: Sequence[str], *, settings: Any = None, split: str = "heldout",
    baselines: bool = True, limit: int | None = None,
) -> pd.DataFrame:
    """The evaluation table for stored policies on a split, with the baselines beside them (no paired
    differences: :func:`compare_policies` adds those, at one bootstrap per compared row)."""
    return _evaluate_stored(store, policy_ids, settings=settings, split=split, baselines=baselines, limit=limit)[0]


def compare_policies(
    store: Any, policy_ids: Sequence[str], *, settings: Any = None, split: str = "heldout",
    baselines: bool = True, limit: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Estimate], dict[str, Estimate]]:
    """:func:`evaluate_policies`' table; the first policy's NDCG@N minus each other's and each
    baseline's, paired over the contexts both have lists for; and its share of grounded reasons minus
    each other policy's, paired likewise (the store is read once for all three)."""
    from rlhf.settings import get_settings

    settings = settings or get_settings()
    table, truth, lists = _evaluate_stored(store, policy_ids, settings=settings, split=split, baselines=baselines,
                                           limit=limit)
    r = settings.rounds
    differences = paired_ndcg_differences(lists, truth, [*policy_ids, *baseline_ids(lists)],
                                          samples=r.eval_bootstrap_samples, seed=r.eval_seed)
    reasons = paired_reason_differences(lists, truth, list(policy_ids), samples=r.eval_bootstrap_samples,
                                        seed=r.eval_seed)
    return table, differences, reasons


def _evaluate_stored(
    store: Any, policy_ids: Sequence[str], *, settings: Any, split: str, baselines: bool, limit: int | None
) -> tuple[pd.DataFrame, GroundTruth, dict[str, PolicyLists]]:
    from rlhf.errors import RecFeedbackError
    from rlhf.settings import get_settings

    settings = settings or get_settings()
    r = settings.rounds
    _require_known_policies(store, policy_ids)
    truth = load_ground_truth(store, split=split, list_length=settings.generation.list_length,
                              events=r.eval_events or None, limit=limit)
    policies = {pid: policy_lists_from_store(store, pid, list(truth.contexts)) for pid in policy_ids}
    covered = sorted({cid for p in policies.values() for cid in p.lists})
    if covered and len(covered) < len(truth.contexts):
        # Every row on the same shoppers, the ones the policies wrote lists for: baselines on all the split's
        # shoppers (and popularity ranked from an earlier cut) made a table whose rows did not compare, and
        # which disagreed with the round's own report on the same lists.
        truth = load_ground_truth(store, context_ids=covered, list_length=settings.generation.list_length,
                                  events=r.eval_events or None)
    empty = [pid for pid, p in policies.items() if not p.lists]
    if empty and len(empty) == len(policies) and not baselines:
        raise RecFeedbackError(f"Policy {', '.join(empty)} has no lists on the {split} contexts.")
    table, evaluated = evaluate_with_baselines(
        [p for p in policies.values() if p.lists], truth, baselines=baselines, samples=r.eval_bootstrap_samples,
        seed=r.eval_seed, exclude_history=r.eval_exclude_history)
    return table, truth, {**policies, **evaluated}


def _require_known_policies(store: Any, policy_ids: Sequence[str]) -> None:
    """Refuse ids the store has never registered (a typo would otherwise evaluate as 'no lists')."""
    from rlhf.errors import RecFeedbackError
    from storage.generations import list_policies

    with store.transaction() as con:
        known = sorted(p.policy_id for p in list_policies(con))
    unknown = [pid for pid in dict.fromkeys(policy_ids) if pid not in set(known)]
    if unknown:
        shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise RecFeedbackError(f"No policy with id {', '.join(map(repr, unknown))} in this store. "
                               f"Known policies: {shown or 'none yet'}.")
