"""Turning several labels per pair into one training target, with a confidence and annotator reliability.

Methods (``settings.reward_model.aggregation``):

- ``majority``: crowd-kit ``MajorityVote`` vote shares; confidence = the top vote share;
  ``contested`` marks pairs whose top choices drew, resolved by a fixed rule (A/B draw -> tie, see
  :func:`_resolve_draws`) rather than by label order, so the result does not depend on row order.
  Reliability = each annotator's agreement with the aggregated answers.
- ``dawid_skene``: crowd-kit ``DawidSkene`` (EM over a full confusion matrix per annotator);
  confidence = the posterior probability of the chosen answer; reliability = the annotator's expected
  accuracy, sum over true classes of prior x P(answer = class | class).
- ``mace``: crowd-kit ``MACE`` (each annotator knows the answer or spams); confidence = posterior;
  reliability = MACE competence, P(not spamming).
- ``none``: no aggregation: every label is its own example (confidence 1), as before aggregation.

Only first labels count (re-shows are a consistency probe, not extra votes). Gold answers are NOT
used, so accuracy against gold is an honest check. The reward-model and rounds code call
:func:`aggregate_labels` with the label frame from :func:`storage.analytics.label_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from rlhf.agreement import scale_values
from rlhf.quality import first_labels

Method = Literal["none", "majority", "dawid_skene", "mace"]
METHODS: tuple[str, ...] = ("none", "majority", "dawid_skene", "mace")

PAIR_COLUMNS = ("pair_id", "choice", "confidence", "n_labels", "n_agree", "contested", "strength", "scale_mean")


@dataclass(frozen=True)
class Aggregation:
    """Aggregated pairs and per-annotator reliability from one method.

    ``pairs``: pair_id, choice (A/B/tie/both_bad), confidence (0..1), n_labels, n_agree (labels equal
    to the choice), contested (bool), strength (median strength of agreeing A/B labels, else NA),
    scale_mean (mean of the 7-point scale over the pair's labels).
    ``reliability``: annotator_id, labels, agreement_with_aggregate, reliability (method-specific).
    """

    method: str
    pairs: pd.DataFrame
    reliability: pd.DataFrame


def _crowd_frame(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index, pd.Index]:
    """crowd-kit's (task, worker, label) frame with integer task/worker codes (much faster groupbys)."""
    tasks, task_names = pd.factorize(labels["pair_id"])
    workers, worker_names = pd.factorize(labels["annotator_id"])
    crowd = pd.DataFrame({"task": tasks, "worker": workers,
                          "label": np.asarray(labels["choice"].astype(str).to_numpy(), dtype=object)})
    return crowd, pd.Index(task_names), pd.Index(worker_names)


def _named(probas: pd.DataFrame, tasks: pd.Index) -> pd.DataFrame:
    """Per-task probabilities re-indexed from integer codes to pair ids."""
    probas = probas.copy()
    probas.index = tasks[np.asarray(probas.index, dtype=int)]
    probas.columns = [str(c) for c in probas.columns]
    return probas


def _finish(method: str, labels: pd.DataFrame, probas: pd.DataFrame, reliability: pd.Series | None,
            contested: pd.Series | None = None, choice: pd.Series | None = None) -> Aggregation:
    """Common tail: winning choice and confidence from per-pair probabilities, counts, strength, reliability."""
    probas = probas.fillna(0.0)
    choice = probas.idxmax(axis=1) if choice is None else choice.reindex(probas.index)
    confidence = probas.max(axis=1)
    pairs = pd.DataFrame({"pair_id": probas.index.to_numpy(), "choice": choice.to_numpy(),
                          "confidence": confidence.to_numpy()})
    merged = labels[["pair_id", "annotator_id", "choice", "strength"]].copy()
    merged["agg"] = merged["pair_id"].map(pd.Series(pairs["choice"].to_numpy(), index=pairs["pair_id"]))
    merged["agrees"] = merged["choice"] == merged["agg"]
    merged["scale"] = scale_values(merged["choice"], merged["strength"])
    by_pair = merged.groupby("pair_id", sort=False)
    pairs = pairs.set_index("pair_id")
    pairs["n_labels"] = by_pair.size()
    pairs["n_agree"] = by_pair["agrees"].sum()
    pairs["contested"] = False if contested is None else contested.reindex(pairs.index).fillna(False).astype(bool)
    agreeing = merged[merged["agrees"] & merged["choice"].isin(["A", "B"])]
    # Rounded down, as the reward model's margins document: two agreeing votes of strength 1 and 2 ask for 1.
    pairs["strength"] = np.floor(agreeing.groupby("pair_id")["strength"].median()).reindex(pairs.index).astype("Int64")
    pairs["scale_mean"] = pd.to_numeric(merged["scale"], errors="coerce").groupby(merged["pair_id"]).mean()
    pairs = pairs.reset_index()[list(PAIR_COLUMNS)]

    by_annotator = merged.groupby("annotator_id")
    rel = pd.DataFrame({"labels": by_annotator.size(),
                        "agreement_with_aggregate": by_annotator["agrees"].mean()})
    rel["reliability"] = rel["agreement_with_aggregate"] if reliability is None else reliability.reindex(rel.index)
    return Aggregation(method, pairs, rel.reset_index().rename(columns={"index": "annotator_id"}))


def majority_vote(frame: pd.DataFrame) -> Aggregation:
    """Majority vote (crowd-kit), confidence = vote share of the winner."""
    from crowdkit.aggregation import MajorityVote

    labels = first_labels(frame)
    if labels.empty:
        return _empty("majority")
    crowd, tasks, _ = _crowd_frame(labels)
    probas = _named(MajorityVote().fit_predict_proba(crowd), tasks).fillna(0.0)
    for name in ("A", "B", "tie", "both_bad"):
        if name not in probas.columns:
            probas[name] = 0.0
    top = probas.max(axis=1)
    leaders = probas.eq(top, axis=0)
    contested = leaders.sum(axis=1) > 1
    return _finish("majority", labels, probas, None, contested, _resolve_draws(probas, leaders))


def _resolve_draws(probas: pd.DataFrame, leaders: pd.DataFrame) -> pd.Series:
    """The majority choice with a fixed rule for draws:

    a single leader wins; A and B level at the top -> 'tie'; one side level with 'tie' or 'both bad' ->
    that side if it has more votes than the other side, else 'tie'; 'tie' level with 'both bad' -> 'tie'.
    """
    choice = probas.idxmax(axis=1).astype(object)
    draw = leaders.sum(axis=1) > 1
    a, b = probas["A"], probas["B"]
    side_lead = leaders["A"] | leaders["B"]
    both_sides = leaders["A"] & leaders["B"]
    resolved = np.where(both_sides, "tie",
                        np.where(side_lead, np.where(a > b, "A", np.where(b > a, "B", "tie")), "tie"))
    choice[draw] = resolved[draw.to_numpy()]
    return choice


def dawid_skene(frame: pd.DataFrame, *, n_iter: int = 100, tol: float = 1e-5) -> Aggregation:
    """Dawid-Skene (crowd-kit) with expected accuracy per annotator as reliability."""
    from crowdkit.aggregation import DawidSkene

    labels = first_labels(frame)
    if labels.empty:
        return _empty("dawid_skene")
    model = DawidSkene(n_iter=n_iter, tol=tol)
    crowd, tasks, workers = _crowd_frame(labels)
    probas = _named(model.fit_predict_proba(crowd), tasks)
    errors = model.errors_  # index (worker code, observed label), columns true label
    reliability = pd.Series(0.0, index=errors.index.get_level_values("worker").unique())
    observed = set(errors.index.get_level_values("label"))
    for cls, prior in model.priors_.items():
        if cls in observed and cls in errors.columns:
            p_correct = errors.xs(cls, level="label")[cls]
            reliability = reliability.add(prior * p_correct, fill_value=0.0)
    reliability.index = workers[reliability.index.to_numpy()]
    return _finish("dawid_skene", labels, probas, reliability)


def mace(frame: pd.DataFrame, *, n_restarts: int = 3, n_iter: int = 50, seed: int = 0) -> Aggregation:
    """MACE (crowd-kit) with competence = P(not spamming) per annotator as reliability."""
    from crowdkit.aggregation import MACE

    labels = first_labels(frame)
    if labels.empty:
        return _empty("mace")
    crowd, tasks, workers = _crowd_frame(labels)
    model = MACE(n_restarts=n_restarts, n_iter=n_iter, random_state=seed)
    probas = _named(model.fit_predict_proba(crowd), tasks)
    order = pd.factorize(crowd["worker"])[1]  # MACE indexes workers in order of first appearance
    reliability = pd.Series(model.spamming_[:, 1], index=workers[np.asarray(order)])
    return _finish("mace", labels, probas, reliability)


def no_aggregation(frame: pd.DataFrame) -> Aggregation:
    """Every first label as its own example (confidence 1): the 'none' setting."""
    labels = first_labels(frame)
    pairs = pd.DataFrame({
        "pair_id": labels["pair_id"].to_numpy(), "choice": labels["choice"].to_numpy(), "confidence": 1.0,
        "n_labels": 1, "n_agree": 1, "contested": False,
        "strength": pd.array(labels["strength"].to_numpy(), dtype="Int64") if len(labels) else pd.array([], "Int64"),
        "scale_mean": scale_values(labels["choice"], labels["strength"]),
    })
    rel = labels.groupby("annotator_id").size().rename("labels").reset_index()
    rel["agreement_with_aggregate"] = 1.0
    rel["reliability"] = np.nan
    return Aggregation("none", pairs[list(PAIR_COLUMNS)], rel)


def _empty(method: str) -> Aggregation:
    return Aggregation(method, pd.DataFrame(columns=list(PAIR_COLUMNS)),
                       pd.DataFrame(columns=["annotator_id", "labels", "agreement_with_aggregate", "reliability"]))


def aggregate_labels(frame: pd.DataFrame, method: str | None = None, *, settings: object | None = None) -> Aggregation:
    """Aggregate the labels of a selection with the configured (or given) method.

    ``frame`` needs pair_id, annotator_id, choice and strength (plus is_reshow / created_at when
    present). ``method`` defaults to ``settings.reward_model.aggregation``.
    """
    if method is None:
        from rlhf.settings import get_settings

        method = (settings or get_settings()).reward_model.aggregation  # type: ignore[union-attr]
    if method not in METHODS:
        raise ValueError(f"Unknown aggregation method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "majority":
        return majority_vote(frame)
    if method == "dawid_skene":
        return dawid_skene(frame)
    if method == "mace":
        return mace(frame)
    return no_aggregation(frame)


def accuracy_against(aggregation: Aggregation, truth: pd.Series) -> tuple[float, int]:
    """Share of aggregated pairs whose choice equals ``truth`` (indexed by pair_id), and how many compared."""
    joined = aggregation.pairs.set_index("pair_id")["choice"].reindex(truth.index)
    known = joined.notna() & truth.notna()
    if not known.any():
        return float("nan"), 0
    return float((joined[known] == truth[known]).mean()), int(known.sum())


def aggregate_pairs(labels: pd.DataFrame, method: str = "majority") -> pd.DataFrame:
    """The frame shape ``rlhf.reward.dataset`` asks for: pair_id, choice, strength, n_labels, agreement,
    plus confidence and contested. ``agreement`` is the share of the pair's labels equal to the choice.
    """
    pairs = aggregate_labels(labels, method).pairs.copy()
    pairs["agreement"] = (pairs["n_agree"] / pairs["n_labels"]).astype(float)
    return pairs[["pair_id", "choice", "strength", "n_labels", "agreement", "confidence", "contested"]]
