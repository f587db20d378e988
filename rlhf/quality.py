"""Per-annotator label quality: who agrees, who is fast, who clicks one side, who contradicts themself.

Pure functions over the tidy label frame of :func:`storage.analytics.label_frame` (and the re-show
frame of :func:`storage.analytics.self_consistency_pairs`); everything is vectorised, so a crowd of
thousands of annotators costs milliseconds. Thresholds for the flags come from
``settings.quality`` (:class:`rlhf.settings.QualitySettings`).

Definitions (the page quotes them):

- **agreement (LOO)**: share of an annotator's labels that equal the majority of the *other*
  annotators' labels on the same pair, over pairs where the others have a unique majority.
- **gold accuracy**: share of labels on gold pairs that match the gold answer.
- **labels/hour**: labels divided by active time; active time is the sum of work sessions (a pause
  longer than ``session_gap_minutes`` starts a new one), each session lasting from its first to its last
  label plus the time spent on its first label, and never less than the time on task the labels record
  (labels written faster than their own time on task, as a simulated crowd's are, would read as thousands
  an hour).
- **median s/label**: median time on task (``time_ms``) per label.
- **tie rate**: share of 'tie' answers.
- **left share**: among A/B answers with a known screen side, the share that picked the list shown on
  the LEFT; the p-value is the exact two-sided binomial test against 0.5.
- **self-consistency**: share of re-shown (sides swapped) pairs answered with the same canonical choice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from rlhf.agreement import CHOICE_CATEGORIES
from rlhf.settings import QualitySettings

FLAG_TOO_FAST = "too fast"
FLAG_ONE_SIDE = "always one side"
FLAG_LOW_GOLD = "low gold accuracy"
FLAG_LOW_AGREEMENT = "low agreement"
FLAG_INCONSISTENT = "inconsistent on re-shows"

QUALITY_COLUMNS = (
    "annotator_id", "labels", "loo_compared", "loo_agreement", "gold_labels", "gold_accuracy",
    "labels_per_hour", "median_seconds", "tie_rate", "both_bad_rate", "sided_labels", "left_share",
    "left_pvalue", "reshows", "self_consistency", "flags",
)


def first_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """One label per (pair, annotator): re-shows dropped, earliest kept. The basis of agreement."""
    if frame.empty:
        return frame
    base = frame[~frame["is_reshow"].astype(bool)] if "is_reshow" in frame.columns else frame
    if "created_at" in base.columns:
        base = base.sort_values("created_at", kind="stable")
    return base.drop_duplicates(["pair_id", "annotator_id"], keep="first")


def leave_one_out_agreement(frame: pd.DataFrame, categories: tuple[str, ...] = CHOICE_CATEGORIES) -> pd.DataFrame:
    """Per label: the others' unique majority on its pair (or None) and whether the label matches it.

    Returns the input rows (first labels only) with columns ``loo_majority`` and ``loo_agrees``
    (NaN where the others have no unique majority, e.g. nobody else labelled the pair).
    """
    labels = first_labels(frame).reset_index(drop=True)
    codes = pd.Categorical(labels["choice"], categories=list(categories)).codes
    item_codes, _ = pd.factorize(labels["pair_id"])
    counts = np.zeros((item_codes.max() + 1 if len(item_codes) else 0, len(categories)))
    valid = codes >= 0
    np.add.at(counts, (item_codes[valid], codes[valid]), 1.0)
    others = counts[item_codes].copy()
    others[np.flatnonzero(valid), codes[valid]] -= 1
    top = others.max(1)
    unique = (others == top[:, None]).sum(1) == 1
    has_others = others.sum(1) > 0
    majority = np.where(unique & has_others, others.argmax(1), -1)
    labels["loo_majority"] = [categories[m] if m >= 0 else None for m in majority]
    agrees = np.where(majority >= 0, (majority == codes).astype(float), np.nan)
    labels["loo_agrees"] = agrees
    return labels


def position_bias_pvalues(left: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Exact two-sided binomial test of ``left`` successes in ``n`` against p = 0.5 (vectorised).

    For p = 0.5 the distribution is symmetric, so the two-sided p-value is twice the smaller tail,
    capped at 1 -- the same number :func:`scipy.stats.binomtest` returns.
    """
    left = np.asarray(left, dtype=float)
    n = np.asarray(n, dtype=float)
    lower = stats.binom.cdf(left, n, 0.5)
    upper = stats.binom.sf(left - 1, n, 0.5)
    p = np.minimum(1.0, 2 * np.minimum(lower, upper))
    return np.where(n > 0, p, np.nan)


def _active_hours(frame: pd.DataFrame, gap_minutes: float) -> pd.Series:
    """Hours of active work per annotator from label timestamps split into sessions."""
    data = frame[["annotator_id", "created_at", "time_ms"]].sort_values(["annotator_id", "created_at"], kind="stable")
    ts = pd.to_datetime(data["created_at"]).to_numpy("datetime64[ns]").astype("int64") / 1e9
    who = data["annotator_id"].to_numpy()
    new_annotator = np.r_[True, who[1:] != who[:-1]]
    gap = np.r_[np.inf, np.diff(ts)]
    new_session = new_annotator | (gap > gap_minutes * 60)
    session = np.cumsum(new_session)
    first_time = pd.to_numeric(data["time_ms"], errors="coerce").fillna(0).to_numpy() / 1000.0
    sessions = pd.DataFrame({"annotator_id": who, "session": session, "ts": ts, "first": first_time})
    per = sessions.groupby("session").agg(annotator_id=("annotator_id", "first"), start=("ts", "min"),
                                          end=("ts", "max"), first=("first", "first"))
    per["seconds"] = per["end"] - per["start"] + per["first"]
    return per.groupby("annotator_id")["seconds"].sum() / 3600.0


def annotator_quality(
    frame: pd.DataFrame,
    reshows: pd.DataFrame | None = None,
    settings: QualitySettings | None = None,
) -> pd.DataFrame:
    """One row per annotator with every quality figure and the flags that apply (see module doc).

    ``frame`` is the tidy label frame (all labels of the selection, re-shows included); ``reshows`` is
    the re-show frame with first_choice / reshow_choice per re-shown pair.
    """
    settings = settings or QualitySettings()
    if frame.empty:
        return pd.DataFrame(columns=list(QUALITY_COLUMNS))
    by = frame.groupby("annotator_id", sort=True)
    out = pd.DataFrame({"labels": by.size()})

    loo = leave_one_out_agreement(frame)
    g = loo.groupby("annotator_id")["loo_agrees"]
    out["loo_compared"] = g.count()
    out["loo_agreement"] = g.mean()

    gold = frame[frame["gold_choice"].notna()] if "gold_choice" in frame.columns else frame.iloc[0:0]
    if len(gold):
        correct = (gold["choice"] == gold["gold_choice"]).astype(float)
        gg = correct.groupby(gold["annotator_id"])
        out["gold_labels"] = gg.size()
        out["gold_accuracy"] = gg.mean()
    else:
        out["gold_labels"] = 0
        out["gold_accuracy"] = np.nan
    out["gold_labels"] = out["gold_labels"].fillna(0).astype(int)

    on_task = pd.to_numeric(frame["time_ms"], errors="coerce").fillna(0).groupby(frame["annotator_id"]).sum() / 3.6e6
    hours = np.maximum(_active_hours(frame, settings.session_gap_minutes), on_task.reindex(out.index).fillna(0))
    out["labels_per_hour"] = out["labels"] / hours.reindex(out.index).where(lambda h: h > 0)
    out["median_seconds"] = pd.to_numeric(frame["time_ms"], errors="coerce").groupby(frame["annotator_id"]).median() / 1000
    out["tie_rate"] = (frame["choice"] == "tie").groupby(frame["annotator_id"]).mean()
    out["both_bad_rate"] = (frame["choice"] == "both_bad").groupby(frame["annotator_id"]).mean()

    sided = frame[frame["choice"].isin(["A", "B"]) & frame["left_side"].isin(["A", "B"])]
    left = (sided["choice"] == sided["left_side"]).groupby(sided["annotator_id"]).agg(["sum", "size"])
    left = left.reindex(out.index).fillna(0)
    out["sided_labels"] = left["size"].astype(int)
    out["left_share"] = (left["sum"] / left["size"]).where(left["size"] > 0)
    out["left_pvalue"] = position_bias_pvalues(left["sum"].to_numpy(), left["size"].to_numpy())

    if reshows is not None and len(reshows):
        same = (reshows["first_choice"] == reshows["reshow_choice"]).astype(float)
        rg = same.groupby(reshows["annotator_id"])
        out["reshows"] = rg.size()
        out["self_consistency"] = rg.mean()
    else:
        out["reshows"] = 0
        out["self_consistency"] = np.nan
    out["reshows"] = out["reshows"].fillna(0).astype(int)

    out["flags"] = quality_flags(out, settings)
    return out.reset_index().rename(columns={"index": "annotator_id"})[list(QUALITY_COLUMNS)]


def quality_flags(table: pd.DataFrame, settings: QualitySettings) -> pd.Series:
    """Comma-separated flags per annotator row; empty when nothing is suspect or there is too little data."""
    enough = table["labels"] >= settings.min_labels_for_flags
    rules = {
        FLAG_TOO_FAST: enough & (table["median_seconds"] < settings.too_fast_median_s),
        FLAG_ONE_SIDE: (table["sided_labels"] >= settings.min_labels_for_flags)
        & (np.maximum(table["left_share"], 1 - table["left_share"]) >= settings.one_side_share)
        & (table["left_pvalue"] < settings.position_bias_alpha),
        FLAG_LOW_GOLD: (table["gold_labels"] >= settings.min_gold_for_flags)
        & (table["gold_accuracy"] < settings.min_gold_accuracy),
        FLAG_LOW_AGREEMENT: (table["loo_compared"] >= settings.min_labels_for_flags)
        & (table["loo_agreement"] < settings.min_agreement),
        FLAG_INCONSISTENT: (table["reshows"] >= settings.min_reshows_for_flags)
        & (table["self_consistency"] < settings.min_self_consistency),
    }
    flags = pd.Series([""] * len(table), index=table.index, dtype=object)
    for name, mask in rules.items():
        mask = mask.fillna(False).astype(bool)
        flags[mask] = [f"{f}, {name}" if f else name for f in flags[mask]]
    return flags
