"""Evaluating sets of lists: one table row per policy (baselines beside them), paired differences
between policies over the same shoppers, and a round's stored report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from rlhf.evaluation.baselines import baseline_lists
from rlhf.evaluation.intervals import Estimate, bootstrap_ci, paired_difference, win_rate
from rlhf.evaluation.lists import PolicyLists
from rlhf.evaluation.metrics import (
    catalogue_coverage,
    hit_rate_at_n,
    intra_list_diversity,
    item_validity,
    ndcg_at_n,
    novelty,
)
from rlhf.evaluation.truth import GroundTruth
from rlhf.runtime import jsonable


def context_ndcg(policy: PolicyLists, truth: GroundTruth) -> dict[str, float]:
    """NDCG@N of each evaluated context with later purchases (mean over the context's lists): the values
    whose mean is the table's NDCG, keyed by context so two policies can be compared pairwise."""
    n = truth.list_length
    return {c: float(np.mean([ndcg_at_n(items, truth.future[c], n) for items in lists]))
            for c, lists in policy.lists.items()
            if c in truth.contexts and lists and truth.future.get(c)}


def context_reasons_grounded(policy: PolicyLists, truth: GroundTruth) -> dict[str, float]:
    """The share of each evaluated context's listed items whose reason is about the item or the shopper's
    history beyond any copied candidate line (:func:`rlhf.reasons.line_verdicts`), over all its lists; keyed
    by context so two policies can be compared pairwise, and empty for a policy without reasons (a baseline)."""
    from rlhf.reasons import grounded_lines

    out: dict[str, float] = {}
    for context_id, said in (policy.reasons or {}).items():
        if context_id not in truth.contexts:
            continue
        context = truth.contexts[context_id]
        history = [truth.title_of.get(h) for h in getattr(context, "history", None) or []]
        candidates = [truth.title_of.get(c) for c in getattr(context, "candidates", None) or []]
        flags = grounded_lines([(reason, truth.title_of.get(item), truth.category_of.get(item))
                                for items, reasons in zip(policy.lists.get(context_id, []), said)
                                for item, reason in zip(items, reasons)], history, candidates)
        if flags:
            out[context_id] = float(np.mean(flags))
    return out


def evaluate_lists(
    policy: PolicyLists, truth: GroundTruth, *, samples: int = 1000, seed: int = 0, check_candidates: bool = True
) -> dict[str, Any]:
    """All metrics of one policy's lists as a flat dict (one table row).

    Per-context values are averaged over that context's lists first, so a policy with more samples per
    context does not get a narrower interval for free. HR/NDCG use contexts with later purchases.
    Contexts are read in id order, so the bootstrap interval depends on the lists alone, not on the order
    they were collected in (the same policy gets the same interval in every round's report).
    ``reasons_grounded``: the share of listed items whose reason is about the item or the shopper's
    history (:mod:`rlhf.reasons`), per context and then averaged, with its interval; None for baselines.
    """
    n = truth.list_length
    rank = truth.popularity_rank
    unseen = len(truth.popularity) + 1
    hr, ndcg, div, nov, item_ok = [], [], [], [], []
    valid_lists = total_lists = 0
    all_lists: list[list[str]] = []
    for context_id, lists in sorted(policy.lists.items()):
        if context_id not in truth.contexts or not lists:
            continue
        context = truth.contexts[context_id]
        target = truth.future.get(context_id, set())
        if target:
            hr.append(np.mean([hit_rate_at_n(items, target, n) for items in lists]))
            ndcg.append(np.mean([ndcg_at_n(items, target, n) for items in lists]))
        div.append(np.nanmean([intra_list_diversity(items[:n], truth.category_of, truth.title_of) for items in lists])
                   if any(len(set(items)) > 1 for items in lists) else np.nan)
        nov.append(np.mean([novelty(items[:n], rank, unseen) for items in lists if items] or [np.nan]))
        candidates = getattr(context, "candidates", None) if check_candidates and policy.kind == "llm" else None
        for items in lists:
            item_ok.extend(item_validity(items, candidates, truth.catalogue))
            all_lists.append(items[:n])
        flags = (policy.valid or {}).get(context_id)
        total_lists += len(lists)
        valid_lists += sum(flags) if flags is not None else sum(
            len(items) == n and all(item_validity(items, candidates, truth.catalogue)) for items in lists
        )
    hr_e = bootstrap_ci(hr, samples=samples, seed=seed)
    ndcg_e = bootstrap_ci(ndcg, samples=samples, seed=seed)
    grounded = context_reasons_grounded(policy, truth)
    reasons_e = bootstrap_ci([grounded[c] for c in sorted(grounded)], samples=samples, seed=seed)
    return {
        "policy": policy.policy_id,
        "kind": policy.kind,
        "contexts": len([c for c in policy.lists if c in truth.contexts]),
        "contexts_with_targets": hr_e.n,
        "lists": total_lists,
        f"hr@{n}": hr_e.mean, "hr_lo": hr_e.lo, "hr_hi": hr_e.hi,
        f"ndcg@{n}": ndcg_e.mean, "ndcg_lo": ndcg_e.lo, "ndcg_hi": ndcg_e.hi,
        "validity": valid_lists / total_lists if total_lists else float("nan"),
        "item_validity": float(np.mean(item_ok)) if item_ok else float("nan"),
        "diversity": float(np.nanmean(div)) if np.isfinite(div).any() else float("nan"),
        "novelty": float(np.nanmean(nov)) if np.isfinite(nov).any() else float("nan"),
        "coverage": catalogue_coverage(all_lists, truth.catalogue),
        # None, not NaN, where there are no reasons to judge (baselines): not applicable rather than unknown.
        **({"reasons_grounded": reasons_e.mean, "reasons_lo": reasons_e.lo, "reasons_hi": reasons_e.hi} if reasons_e.n
           else {"reasons_grounded": None, "reasons_lo": None, "reasons_hi": None}),
    }


def evaluate_with_baselines(
    policies: Sequence[PolicyLists], truth: GroundTruth, *, baselines: bool = True, samples: int = 1000,
    seed: int = 0, exclude_history: bool = True,
) -> tuple[pd.DataFrame, dict[str, PolicyLists]]:
    """:func:`evaluation_table`, and every row's lists by policy id (the baselines' included), so that
    a policy can be compared with a baseline shopper by shopper (:func:`paired_ndcg_differences`)."""
    evaluated = list(policies)
    if baselines:  # on the contexts the policies have lists for: every row measured on the same shoppers
        covered = {c for p in evaluated for c, lists in p.lists.items() if lists} or None
        evaluated += baseline_lists(truth, exclude_history=exclude_history, context_ids=covered)
    table = pd.DataFrame([evaluate_lists(p, truth, samples=samples, seed=seed) for p in evaluated])
    return table, {p.policy_id: p for p in evaluated}


def evaluation_table(
    policies: Sequence[PolicyLists], truth: GroundTruth, *, baselines: bool = True, samples: int = 1000,
    seed: int = 0, exclude_history: bool = True,
) -> pd.DataFrame:
    """One row per policy (and per baseline), the columns of :func:`evaluate_lists`.

    Baselines are computed on the contexts the policies have lists for (all of the truth's contexts
    when no policy is given), so that every row is measured on the same shoppers.
    """
    return evaluate_with_baselines(policies, truth, baselines=baselines, samples=samples, seed=seed,
                                   exclude_history=exclude_history)[0]


def long_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The table in long form for Altair charts: ``policy, kind, metric, value, lo, hi``.

    HR and NDCG carry their bootstrap interval; the other metrics have ``lo``/``hi`` empty.
    """
    rows = []
    for rec in table.to_dict(orient="records"):
        for col, value in rec.items():
            if col.startswith(("hr@", "ndcg@")):
                base = col.split("@")[0]
                rows.append((rec["policy"], rec["kind"], col, value, rec[f"{base}_lo"], rec[f"{base}_hi"]))
            elif col.startswith("reasons_grounded"):
                rows.append((rec["policy"], rec["kind"], col, value, rec.get("reasons_lo"), rec.get("reasons_hi")))
            elif col in ("validity", "item_validity", "diversity", "novelty", "coverage"):
                rows.append((rec["policy"], rec["kind"], col, value, np.nan, np.nan))
    return pd.DataFrame(rows, columns=["policy", "kind", "metric", "value", "lo", "hi"])


def baseline_ids(lists: Mapping[str, PolicyLists]) -> list[str]:
    """The ids of the baselines among ``lists`` (to compare a policy with each of them)."""
    return [k for k, p in lists.items() if p.kind == "baseline"]


def paired_ndcg_differences(lists: Mapping[str, PolicyLists], truth: GroundTruth, ids: Sequence[str], *,
                            samples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """NDCG@N of policy ``ids[0]`` minus each later id's, paired over contexts (ids without lists are skipped;
    nothing at all when ``ids[0]`` has none)."""
    if not any(lists[ids[0]].lists.values()):
        return {}
    first = context_ndcg(lists[ids[0]], truth)
    return {other: paired_difference(first, context_ndcg(lists[other], truth), samples=samples, seed=seed)
            for other in ids[1:] if other in lists and lists[other].lists and other != ids[0]}


def paired_reason_differences(lists: Mapping[str, PolicyLists], truth: GroundTruth, ids: Sequence[str], *,
                              samples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """The share of grounded reasons of policy ``ids[0]`` minus each later policy's that writes reasons,
    paired over contexts (:func:`context_reasons_grounded`); nothing when ``ids[0]`` has none."""
    first = context_reasons_grounded(lists[ids[0]], truth) if ids and ids[0] in lists else {}
    if not first:
        return {}
    out = {}
    for other in ids[1:]:
        theirs = context_reasons_grounded(lists[other], truth) if other in lists and other != ids[0] else {}
        if theirs:
            out[other] = paired_difference(first, theirs, samples=samples, seed=seed)
    return out


def round_report(
    policies: Sequence[PolicyLists],
    truth: GroundTruth,
    new_policy: str,
    *,
    previous_policy_id: str | None = None,
    zero_shot_policy_id: str | None = None,
    rm_scores: Mapping[str, float] | None = None,
    round_id: str | None = None,
    split: str = "heldout",
    samples: int = 1000,
    seed: int = 0,
    exclude_history: bool = True,
) -> dict[str, Any]:
    """A round's evaluation, JSON-ready for the store and the dashboard: the table with the baselines,
    the headline row, the new policy's NDCG minus every other row's and its share of grounded reasons
    minus its parent's and the zero-shot model's (both paired over shoppers) and, given
    ``rm_scores`` (generation id → the round's reward-model score), its reward-model win rate over the
    previous and the zero-shot policy."""
    table, by_policy = evaluate_with_baselines(policies, truth, samples=samples, seed=seed,
                                               exclude_history=exclude_history)
    records = jsonable(table.to_dict(orient="records"))
    report: dict[str, Any] = {
        "policy_id": new_policy, "previous_policy_id": previous_policy_id,
        "zero_shot_policy_id": zero_shot_policy_id, "round_id": round_id, "split": split,
        "list_length": truth.list_length, "cut": truth.cut.isoformat(), "table": records,
        "headline": next((r for r in records if r["policy"] == new_policy), None),
    }
    if new_policy not in by_policy:
        return report
    for key, other in (("rm_win_rate", previous_policy_id), ("rm_win_rate_vs_zero_shot", zero_shot_policy_id)):
        if rm_scores is not None and other in by_policy and other != new_policy:
            est = win_rate(by_policy[new_policy].context_scores(rm_scores), by_policy[other].context_scores(rm_scores),
                           samples=samples, seed=seed)
            report[key] = jsonable(asdict(est))
    others = [p for p in dict.fromkeys((previous_policy_id, zero_shot_policy_id)) if p]
    report["ndcg_difference"] = {k: jsonable(asdict(v)) for k, v in paired_ndcg_differences(
        by_policy, truth, [new_policy, *others, *baseline_ids(by_policy)], samples=samples, seed=seed).items()}
    report["reasons_difference"] = {k: jsonable(asdict(v)) for k, v in paired_reason_differences(
        by_policy, truth, [new_policy, *others], samples=samples, seed=seed).items()}
    return report
