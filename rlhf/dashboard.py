"""Services behind the Agreement page (and ``recfeedback agreement report``).

Two steps, so that the store is held only while reading: :func:`load_inputs` reads everything a view
needs in ONE short unit of work; :func:`compute_dashboard` then computes every number from those
frames (vectorised; no store access). :func:`build_dashboard` does both. The page caches the result
per selection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from rlhf import aggregation as agg
from rlhf import agreement as ag
from rlhf import quality as q
from rlhf.evaluation import zero_shot_verdict
from rlhf.human_eval import human_win_interval, human_win_rate
from rlhf.settings import Settings, get_settings
from storage import Store, analytics
from storage.analytics import LabelSelection


@dataclass(frozen=True)
class DashboardInputs:
    """What one dashboard view reads from the store."""

    selection: LabelSelection
    labels: pd.DataFrame
    reshows: pd.DataFrame
    throughput: pd.DataFrame
    queue: pd.DataFrame
    served: pd.DataFrame
    rounds: pd.DataFrame
    comparisons: pd.DataFrame
    read_seconds: float


@dataclass
class Dashboard:
    """Every number the Agreement page shows for one selection."""

    selection: LabelSelection
    labels: pd.DataFrame  # tidy, with the 7-point ``scale`` column
    counts: dict[str, int]
    summary: pd.DataFrame
    kappa: ag.KappaMatrix
    kappa_convention: str
    quality: pd.DataFrame
    aggregations: dict[str, agg.Aggregation]
    aggregation_report: pd.DataFrame
    throughput: pd.DataFrame
    queue: pd.DataFrame
    served: pd.DataFrame
    rounds: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)


KAPPA_OPTIONS: dict[str, tuple[str, str | None]] = {
    "Choice (A / B / tie / both bad), unweighted": ("choice", None),
    "7-point scale, linear weights over observed levels (R irr 'equal')": ("scale", "linear"),
    "7-point scale, quadratic weights over observed levels (R irr 'squared')": ("scale", "quadratic"),
}


def with_scale(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the 7-point ``scale`` column (vectorised :func:`storage.records.preference_scale`).

    A = -strength, B = +strength (a missing strength counts as 1, 'slightly'), tie = 0, both bad = NaN.
    """
    out = frame.copy()
    out["scale"] = ag.scale_values(out["choice"], out["strength"])
    return out


def load_inputs(store: Store, selection: LabelSelection | None = None, *, now: datetime | None = None) -> DashboardInputs:
    """Read a selection's labels and the queue/round tables in one unit of work."""
    from storage.queue import utcnow

    selection = selection or LabelSelection()
    started = time.perf_counter()
    with store.transaction() as con:
        labels = analytics.label_frame(con, selection)
        reshows = analytics.self_consistency_pairs(con, selection)
        throughput = analytics.throughput_by_day(con, selection)
        queue = analytics.queue_by_strategy_round(con, now or utcnow())
        served = analytics.served_mix(con, selection)
        rounds = analytics.round_quality_rows(con)
        comparisons = analytics.policy_comparison_labels(con) if len(rounds) else pd.DataFrame()
    return DashboardInputs(selection, labels, reshows, throughput, queue, served, rounds, comparisons,
                           time.perf_counter() - started)


def compute_dashboard(
    inputs: DashboardInputs,
    settings: Settings | None = None,
    *,
    kappa_option: str | None = None,
    n_boot: int | None = None,
    methods: Iterable[str] | None = None,
) -> Dashboard:
    """Every dashboard number from the loaded frames (no store access; safe to cache)."""
    settings = settings or get_settings()
    qs = settings.quality
    timings: dict[str, float] = {"read": inputs.read_seconds}

    def timed(name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - t
        return result

    labels = with_scale(inputs.labels)
    first = q.first_labels(labels)
    counts = {
        "labels": len(labels), "pairs": int(labels["pair_id"].nunique()) if len(labels) else 0,
        "annotators": int(labels["annotator_id"].nunique()) if len(labels) else 0,
        "pairs_with_2plus": int((first.groupby("pair_id").size() >= 2).sum()) if len(first) else 0,
        "reshows": len(inputs.reshows),
    }

    if counts["pairs_with_2plus"]:
        summary = timed("agreement", ag.agreement_summary, first, n_boot=qs.bootstrap_samples if n_boot is None
                        else n_boot, seed=qs.seed)
    else:
        summary = pd.DataFrame(columns=["metric", "label", "convention", "value", "ci_low", "ci_high",
                                        "n_items", "n_labels"])

    kappa_option = kappa_option or next(iter(KAPPA_OPTIONS))
    value, weights = KAPPA_OPTIONS[kappa_option]
    top = first["annotator_id"].value_counts().head(qs.kappa_heatmap_annotators).index.tolist() if len(first) else []
    kappa = timed("kappa", ag.cohen_kappa_matrix, first, value, weights=weights, raters=sorted(top),
                  min_shared=qs.kappa_min_shared)

    quality = timed("quality", q.annotator_quality, labels, inputs.reshows, qs)

    configured = settings.reward_model.aggregation
    wanted = list(methods) if methods is not None else ["majority", "dawid_skene"] + (
        [configured] if configured not in ("majority", "dawid_skene", "none") else [])
    aggregations: dict[str, agg.Aggregation] = {}
    for method in wanted:
        if len(first):
            aggregations[method] = timed(f"aggregate_{method}", agg.aggregate_labels, first, method)
    report = aggregation_report(aggregations, first)
    if len(quality) and "dawid_skene" in aggregations:
        rel = aggregations["dawid_skene"].reliability.set_index("annotator_id")["reliability"]
        quality["ds_reliability"] = quality["annotator_id"].map(rel)

    served = inputs.served.copy()
    if len(served):
        served["gold_rate"] = served["gold_labels"] / served["labels"]
        served["reshow_rate"] = served["reshow_labels"] / served["labels"]

    rounds = timed("rounds", round_quality, inputs.rounds, inputs.comparisons)
    timings["compute_total"] = sum(v for k, v in timings.items() if k != "read")
    return Dashboard(inputs.selection, labels, counts, summary, kappa, kappa_option, quality, aggregations,
                     report, inputs.throughput, inputs.queue, served, rounds, timings)


def build_dashboard(store: Store, selection: LabelSelection | None = None, settings: Settings | None = None,
                    **kwargs: Any) -> Dashboard:
    """Load and compute in one call (CLI, benchmark)."""
    return compute_dashboard(load_inputs(store, selection), settings, **kwargs)


def aggregation_report(aggregations: dict[str, agg.Aggregation], first: pd.DataFrame) -> pd.DataFrame:
    """Per method: pairs, mean confidence, contested pairs and accuracy against gold answers when known."""
    truth = (first.dropna(subset=["gold_choice"]).drop_duplicates("pair_id").set_index("pair_id")["gold_choice"]
             if len(first) and "gold_choice" in first.columns else pd.Series(dtype=object))
    rows = []
    for method, result in aggregations.items():
        accuracy, n_gold = agg.accuracy_against(result, truth) if len(truth) else (float("nan"), 0)
        rows.append({
            "method": method, "pairs": len(result.pairs),
            "mean_confidence": float(result.pairs["confidence"].mean()) if len(result.pairs) else float("nan"),
            "contested_pairs": int(result.pairs["contested"].sum()) if len(result.pairs) else 0,
            "gold_pairs": n_gold, "gold_accuracy": accuracy,
        })
    return pd.DataFrame(rows, columns=["method", "pairs", "mean_confidence", "contested_pairs", "gold_pairs",
                                       "gold_accuracy"])


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


def round_quality(rounds: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per round: the policy it started from, its held-out NDCG and its share of grounded reasons against the
    zero-shot model (verdicts from the paired intervals), the reward model's held-out and gold accuracy, its
    agreement with humans, win rates.

    ``rm_heldout_accuracy_unselected`` is the held-out accuracy on the pairs no model chose: a reward model
    is less accurate on the pairs its predecessor's active selection found close, so the accuracy over all
    held-out pairs drifts down as rounds add them (``benchmarks/loop_parts_bench.py``, section 2c).

    ``rm_human_agreement`` is the mean over annotators of the share of their held-out A/B labels the
    reward model agrees with; ``human_win_rate`` is, over human labels on pairs of the round's policy
    against its parent that no model chose (:func:`rlhf.active.chosen_without_a_model`; gold pairs left out
    too, they are chosen for being clear), the share preferring the new policy: ties count one half, 'both
    bad' is left out, each pair weighs the same (:func:`rlhf.human_eval.human_win_rate`).
    ``human_win_interval`` gives its 95% bootstrap interval over those pairs, ``human_win_labels`` and
    ``human_win_pairs`` what it rests on.
    """
    # The two answers to "did the round help" first: held-out NDCG and what annotators prefer.
    columns = ["round_id", "status", "created_at", "parent_policy_id", "ndcg_vs_zero_shot", "human_win_rate",
               "human_win_interval",
               "human_win_pairs", "human_win_labels", "reasons_vs_zero_shot", "rm_heldout_accuracy",
               "rm_heldout_accuracy_unselected", "rm_gold_accuracy", "rm_human_agreement", "rm_win_rate", "rm_win_rate_vs_zero_shot"]
    if rounds is None or rounds.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in rounds.itertuples(index=False):
        rm = r.rm_metrics if isinstance(r.rm_metrics, dict) else {}
        rm_round = r.round_metrics if isinstance(r.round_metrics, dict) else {}
        per_annotator = rm.get("annotator_agreement") or {}
        agreement = [_number(v.get("model_agreement")) for v in per_annotator.values() if isinstance(v, dict)]
        agreement = [a for a in agreement if np.isfinite(a)]
        win, win0 = (_mean_of(rm_round.get(k)) for k in ("rm_win_rate", "rm_win_rate_vs_zero_shot"))
        human, n_human = human_win_rate(comparisons, r.policy_id, r.parent_policy_id)
        rows.append({
            "round_id": r.round_id, "status": r.status, "created_at": r.created_at,
            "parent_policy_id": r.parent_policy_id,  # a round may start from an earlier policy (a rollback)
            "ndcg_vs_zero_shot": zero_shot_verdict(getattr(r, "eval_report", None)),
            "reasons_vs_zero_shot": zero_shot_verdict(getattr(r, "eval_report", None), "reasons"),
            "rm_heldout_accuracy": _number(rm.get("heldout_accuracy", rm_round.get("rm_heldout_accuracy"))),
            "rm_heldout_accuracy_unselected": _number(rm.get("heldout_accuracy_unselected")),
            "rm_gold_accuracy": _number(rm.get("gold_accuracy")),
            "rm_human_agreement": float(np.mean(agreement)) if agreement else float("nan"),
            "rm_win_rate": _number(win), "rm_win_rate_vs_zero_shot": _number(win0), "human_win_rate": human.mean,
            "human_win_interval": human_win_interval(human),
            "human_win_labels": n_human, "human_win_pairs": human.n,
        })
    return pd.DataFrame(rows, columns=columns)


def _mean_of(win: Any) -> Any:
    """A win rate stored as a number or as an estimate ``{"mean": ...}`` (older reports: ``"value"``)."""
    return win.get("mean", win.get("value")) if isinstance(win, dict) else win


# ---------------------------------------------------------------------------------- page helpers


def filter_options(store: Store) -> dict[str, list[Any]]:
    """Values for the sidebar filters."""
    with store.transaction() as con:
        return analytics.selection_options(con)


def annotator_labels(store: Store, annotator_id: str, selection: LabelSelection | None = None) -> pd.DataFrame:
    """One annotator's labels in the selection, with rationale and the others' majority (drill-down).

    ``choice`` is in the pair's own A/B terms, which the Label page does not show: it calls the list on the
    left A. ``as_seen`` is the answer as the annotator gave it on the screen ("A" = the left list), so that it
    reads with their rationale ("list A fits the tea shopper").
    """
    selection = selection or LabelSelection()
    with store.transaction() as con:
        everyone = analytics.label_frame(con, LabelSelection(
            round_ids=selection.round_ids, date_from=selection.date_from, date_to=selection.date_to,
            strategies=selection.strategies, sources=selection.sources), with_rationale=True)
    loo = q.leave_one_out_agreement(everyone)
    mine = everyone[everyone["annotator_id"] == annotator_id].merge(
        loo[["label_id", "loo_majority", "loo_agrees"]], on="label_id", how="left")
    sided = mine["choice"].isin(["A", "B"]) & mine["left_side"].isin(["A", "B"])
    mine["as_seen"] = mine["choice"].where(~sided, np.where(mine["choice"] == mine["left_side"], "A", "B"))
    mine.loc[mine["choice"].isin(["A", "B"]) & ~sided, "as_seen"] = None  # an import that did not record the side
    mine["flags"] = [_flags_in_words(v) for v in mine["item_flags"]]
    cols = ["created_at", "pair_id", "as_seen", "choice", "strength", "left_side", "time_ms", "is_reshow",
            "gold_choice", "loo_majority", "loo_agrees", "strategy", "round_id", "label_source", "flags", "rationale"]
    return mine[cols].sort_values("created_at", ascending=False).reset_index(drop=True)


def _flags_in_words(stored: str | None) -> str:
    """A label's item flags ({"A:item": [flags]}, the pair's own sides) as "A item: irrelevant; B item: ..."."""
    flags = json.loads(stored) if isinstance(stored, str) and stored else {}
    return "; ".join(f"{key.replace(':', ' ', 1)}: {', '.join(f.replace('_', ' ') for f in values)}"
                     for key, values in sorted(flags.items()))


def skipped_pairs(store: Store, selection: LabelSelection | None = None) -> pd.DataFrame:
    """The pairs annotators skipped, with their reasons (a pair is never served to its skipper again)."""
    with store.transaction() as con:
        return analytics.skipped_frame(con, selection)


def kappa_long(matrix: ag.KappaMatrix, *, both_ways: bool = True) -> pd.DataFrame:
    """The kappa matrix as rows (rater_a, rater_b, kappa, shared): two different annotators who labelled a pair
    in common. Both ways round for the symmetric heatmap; once (``rater_a < rater_b``) for a CSV, where a pair
    of raters listed twice would count twice in anyone's average. An annotator against themself (kappa 1 by
    definition) read as perfect agreement on a chart that had little else."""
    k = matrix.kappa.rename_axis(index="rater_a", columns="rater_b").stack(future_stack=True).rename("kappa")
    s = matrix.shared.rename_axis(index="rater_a", columns="rater_b").stack(future_stack=True).rename("shared")
    rows = pd.concat([k, s], axis=1).reset_index()
    keep = (rows["rater_a"] < rows["rater_b"]) if not both_ways else (rows["rater_a"] != rows["rater_b"])
    return rows[keep & (rows["shared"] > 0)].reset_index(drop=True)


def throughput_for_chart(throughput: pd.DataFrame, top_n: int = 12) -> pd.DataFrame:
    """Labels per day with the ``top_n`` busiest annotators named and everyone else as 'others'."""
    if throughput.empty:
        return throughput.assign(annotator=pd.Series(dtype=object))
    busiest = throughput.groupby("annotator_id")["labels"].sum().nlargest(top_n).index
    out = throughput.assign(annotator=np.where(throughput["annotator_id"].isin(busiest),
                                               throughput["annotator_id"], "others"))
    return out.groupby(["day", "annotator"], as_index=False)["labels"].sum()
