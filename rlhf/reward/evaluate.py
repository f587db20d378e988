"""How good a reward model is on held-out human judgements.

Pure metric functions (testable without a model) and :func:`evaluate_dataset`, which scores each held-out
and gold pair once and derives:

- pairwise accuracy (r_chosen > r_rejected) on held-out examples, overall and by strength;
- expected calibration error (ECE) of p = σ(r_chosen − r_rejected): confidence max(p, 1 − p) against
  "the model picked the chosen side", in equal-width bins (Guo et al., 2017); orientation-free;
- agreement with each annotator: the share of their A/B labels on held-out pairs whose side the model
  prefers (ties and "both bad" are not counted), next to how often that annotator agreed with the
  other annotators' majority, so a reader sees whether the model is as good as a labeller;
- accuracy on gold pairs against the expected answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rlhf.reward.dataset import RewardDataset
    from rlhf.reward.score import RewardScorer


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def pairwise_accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> float:
    """Share of pairs where the chosen response scores higher (an exact tie counts half)."""
    rc, rr = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    if rc.size == 0:
        return float("nan")
    return float(np.mean((rc > rr) + 0.5 * (rc == rr)))


def expected_calibration_error(p_chosen: Sequence[float], n_bins: int = 10) -> float:
    """ECE of the model's pairwise probabilities; ``p_chosen`` = σ(r_chosen − r_rejected) per pair.

    Confidence is max(p, 1 − p) in [0.5, 1]; a pair is "correct" when p > 0.5. Bins split [0.5, 1]
    equally; ECE = Σ (bin size / n) · |accuracy(bin) − mean confidence(bin)|.
    """
    p = np.asarray(p_chosen, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    confidence = np.maximum(p, 1 - p)
    correct = (p > 0.5).astype(np.float64) + 0.5 * (p == 0.5)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def pairwise_metrics(
    r_chosen: Sequence[float], r_rejected: Sequence[float], strength: Sequence[Any] | None = None, n_bins: int = 10
) -> dict[str, Any]:
    """Accuracy, ECE, mean gap and (when strengths are given) accuracy per strength, for one split."""
    rc, rr = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    out: dict[str, Any] = {
        "n": int(rc.size),
        "accuracy": pairwise_accuracy(rc, rr),
        "ece": expected_calibration_error(sigmoid(rc - rr), n_bins),
        "mean_gap": float(np.mean(rc - rr)) if rc.size else float("nan"),
    }
    if strength is not None:
        s = pd.Series(list(strength), dtype="object")
        by: dict[str, Any] = {}
        for value in sorted({v for v in s if v is not None and not pd.isna(v)}):
            mask = (s == value).to_numpy()
            by[str(int(value))] = {"n": int(mask.sum()), "accuracy": pairwise_accuracy(rc[mask], rr[mask])}
        missing = s.map(lambda v: v is None or pd.isna(v)).to_numpy()
        if missing.any():
            by["unknown"] = {"n": int(missing.sum()), "accuracy": pairwise_accuracy(rc[missing], rr[missing])}
        out["accuracy_by_strength"] = by
    return out


def annotator_agreement(labels: pd.DataFrame, pair_scores: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per annotator: how often the model's preferred side matches their A/B labels.

    ``labels``: pair_id, annotator_id, choice. ``pair_scores``: pair_id, r_a, r_b. Also reports each
    annotator's agreement with the majority of the OTHER annotators on the same pairs (None if alone).
    """
    ab = labels[labels["choice"].isin(["A", "B"])].merge(pair_scores, on="pair_id")
    if ab.empty:
        return {}
    ab = ab.assign(model_side=np.where(ab["r_a"] >= ab["r_b"], "A", "B"))
    result: dict[str, dict[str, Any]] = {}
    for annotator, group in ab.groupby("annotator_id", sort=True):
        others = ab[(ab["annotator_id"] != annotator) & ab["pair_id"].isin(group["pair_id"])]
        peer = None
        if not others.empty:
            a_share = others.groupby("pair_id")["choice"].apply(lambda c: (c == "A").mean())
            majority = a_share[a_share != 0.5].map(lambda x: "A" if x > 0.5 else "B")
            shared = group[group["pair_id"].isin(majority.index)]
            if len(shared):
                peer = float((shared["choice"].to_numpy() == majority.loc[shared["pair_id"]].to_numpy()).mean())
        result[str(annotator)] = {
            "n": len(group),
            "model_agreement": float((group["choice"] == group["model_side"]).mean()),
            "peer_agreement": peer,
        }
    return result


def score_pair_table(scorer: RewardScorer, pairs: pd.DataFrame, batch_size: int = 32, progress: bool = False) -> pd.DataFrame:
    """r_a and r_b for each row of a pair table (pair_id, prompt, text_a, text_b)."""
    if pairs.empty:
        return pd.DataFrame(columns=["pair_id", "r_a", "r_b"])
    ra, rb = scorer.score_pairs(
        pairs["prompt"].tolist(), pairs["text_a"].tolist(), pairs["text_b"].tolist(), batch_size, progress
    )
    return pd.DataFrame({"pair_id": pairs["pair_id"].to_numpy(), "r_a": ra, "r_b": rb})


def score_statistics(scorer: RewardScorer, pairs: pd.DataFrame, batch_size: int = 32) -> dict[str, float]:
    """Mean and standard deviation of the model's scores over the distinct lists in a pair table.

    The lists annotators saw are the policy's own samples, so these are the figures PPO needs to put the
    reward-model score on a unit scale next to its structural terms (Ziegler et al., 2019, normalise the
    reward model on samples of the initial policy the same way). No label is used.
    """
    if pairs.empty:
        return {"mean": 0.0, "std": 0.0, "n": 0}
    rows = pd.concat([
        pairs[["prompt", "text_a"]].rename(columns={"text_a": "text"}),
        pairs[["prompt", "text_b"]].rename(columns={"text_b": "text"}),
    ]).drop_duplicates()
    scores = scorer.score(rows["prompt"].tolist(), rows["text"].tolist(), batch_size=batch_size)
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "n": len(scores)}


def _split_metrics(examples: pd.DataFrame, scores: pd.DataFrame) -> dict[str, Any]:
    if examples.empty:
        return {"n": 0, "accuracy": None, "ece": None}
    merged = examples.merge(scores, on="pair_id", how="inner")
    is_a = (merged["chosen_side"] == "A").to_numpy()
    rc = np.where(is_a, merged["r_a"], merged["r_b"])
    rr = np.where(is_a, merged["r_b"], merged["r_a"])
    return pairwise_metrics(rc, rr, merged["strength"].tolist())


def _not_chosen_by_a_model(examples: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The examples on pairs no model chose: accuracy there does not drift as rounds add actively chosen pairs
    (a reward model is less accurate on the pairs its predecessor found hard; ``loop_parts_bench.py`` 2c)."""
    chosen = set(pairs.loc[pairs["chosen_by_model"].astype(bool), "pair_id"])
    return examples[~examples["pair_id"].isin(chosen)]


def evaluate_dataset(
    scorer: RewardScorer, dataset: RewardDataset, *, batch_size: int = 32, progress: bool = False
) -> dict[str, Any]:
    """Metrics of ``scorer`` on the dataset's held-out and gold splits (each pair scored once), and on the
    held-out pairs no model chose (``heldout_unselected``)."""
    needed = dataset.pairs[dataset.pairs["split"].isin(["heldout", "gold"])]
    scores = score_pair_table(scorer, needed, batch_size, progress)
    heldout_labels = dataset.labels[dataset.labels["split"] == "heldout"]
    metrics: dict[str, Any] = {
        "heldout": _split_metrics(dataset.heldout, scores),
        "heldout_unselected": _split_metrics(_not_chosen_by_a_model(dataset.heldout, dataset.pairs), scores),
        "gold": _split_metrics(dataset.gold, scores),
        "annotator_agreement": annotator_agreement(heldout_labels, scores),
    }
    metrics["heldout_accuracy"] = metrics["heldout"].get("accuracy")
    metrics["heldout_accuracy_unselected"] = metrics["heldout_unselected"].get("accuracy")
    metrics["heldout_ece"] = metrics["heldout"].get("ece")
    metrics["gold_accuracy"] = metrics["gold"].get("accuracy")
    return _clean(metrics)


def evaluate_frame(
    scorer: RewardScorer, frame: pd.DataFrame, *, batch_size: int = 32, progress: bool = False
) -> dict[str, Any]:
    """Metrics for a plain preference frame (prompt, chosen, rejected[, strength]); used by benchmarks."""
    prompts = frame["prompt"].tolist() if "prompt" in frame else [""] * len(frame)
    rc, rr = scorer.score_pairs(prompts, frame["chosen"].tolist(), frame["rejected"].tolist(), batch_size, progress)
    strength = frame["strength"].tolist() if "strength" in frame else None
    return _clean(pairwise_metrics(rc, rr, strength))


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
