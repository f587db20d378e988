"""Annotator quality figures and flags on small crowds whose behaviour we control."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from rlhf.quality import (
    FLAG_INCONSISTENT,
    FLAG_LOW_AGREEMENT,
    FLAG_LOW_GOLD,
    FLAG_ONE_SIDE,
    FLAG_TOO_FAST,
    annotator_quality,
    leave_one_out_agreement,
    position_bias_pvalues,
)
from rlhf.settings import QualitySettings

T0 = datetime(2026, 1, 5, 9, 0, 0)


def _crowd(seed: int = 0, n_pairs: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five annotators label every pair: three careful, one always-left clicker, one fast random one."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["A", "B"], size=n_pairs)
    gold = {f"p{i}": truth[i] for i in range(0, n_pairs, 4)}  # every 4th pair is gold
    rows = []
    for who in ("care1", "care2", "care3", "lefty", "fast"):
        for i in range(n_pairs):
            left = rng.choice(["A", "B"])
            if who.startswith("care"):
                choice = truth[i] if rng.random() < 0.9 else ("A" if truth[i] == "B" else "B")
                ms = 20_000
            elif who == "lefty":
                choice, ms = left, 9_000
            else:
                choice, ms = rng.choice(["A", "B", "tie"]), 1_500
            rows.append({
                "label_id": f"{who}-{i}", "pair_id": f"p{i}", "annotator_id": who, "choice": choice,
                "strength": 2 if choice != "tie" else None, "left_side": left, "time_ms": ms, "is_reshow": False,
                "created_at": T0 + timedelta(seconds=30 * i), "gold_choice": gold.get(f"p{i}"),
            })
    frame = pd.DataFrame(rows)
    reshows = pd.DataFrame({
        "annotator_id": ["care1"] * 4 + ["fast"] * 4,
        "pair_id": ["p1", "p2", "p3", "p5"] * 2,
        "first_choice": ["A", "B", "A", "B", "A", "B", "A", "B"],
        "reshow_choice": ["A", "B", "A", "B", "B", "A", "tie", "B"],
    })
    return frame, reshows


def test_flags_find_the_suspects_and_spare_the_careful() -> None:
    frame, reshows = _crowd()
    table = annotator_quality(frame, reshows, QualitySettings()).set_index("annotator_id")
    for who in ("care1", "care2", "care3"):
        assert table.loc[who, "flags"] == "", who
        assert table.loc[who, "loo_agreement"] > table.loc["fast", "loo_agreement"] + 0.25
        assert table.loc[who, "gold_accuracy"] > table.loc["fast", "gold_accuracy"]
    assert FLAG_ONE_SIDE in table.loc["lefty", "flags"]
    assert table.loc["lefty", "left_share"] == 1.0
    assert table.loc["lefty", "left_pvalue"] < 1e-10
    fast = table.loc["fast", "flags"]
    for flag in (FLAG_TOO_FAST, FLAG_LOW_AGREEMENT, FLAG_LOW_GOLD, FLAG_INCONSISTENT):
        assert flag in fast
    assert table.loc["fast", "median_seconds"] == pytest.approx(1.5)
    assert table.loc["care1", "self_consistency"] == 1.0
    assert table.loc["fast", "self_consistency"] == 0.25
    assert table.loc["fast", "tie_rate"] > 0.15 and table.loc["care1", "tie_rate"] == 0.0


def test_thresholds_come_from_settings() -> None:
    frame, reshows = _crowd()
    lenient = QualitySettings(too_fast_median_s=1.0, min_gold_accuracy=0.0, min_agreement=0.0,
                              min_self_consistency=0.0, one_side_share=1.01)
    table = annotator_quality(frame, reshows, lenient).set_index("annotator_id")
    assert (table["flags"] == "").all()
    few = QualitySettings(min_labels_for_flags=10_000, min_gold_for_flags=10_000, min_reshows_for_flags=10_000)
    assert (annotator_quality(frame, reshows, few)["flags"] == "").all()


def test_leave_one_out_excludes_the_annotator_and_ambiguous_majorities() -> None:
    frame = pd.DataFrame({
        "pair_id": ["p", "p", "p", "q", "q"],
        "annotator_id": ["x", "y", "z", "x", "y"],
        "choice": ["A", "A", "B", "A", "B"],
        "is_reshow": False,
        "created_at": [T0] * 5,
    })
    loo = leave_one_out_agreement(frame).set_index(["pair_id", "annotator_id"])
    # On p: x sees others {A, B} -> no unique majority; z sees {A, A} -> majority A, disagrees.
    assert np.isnan(loo.loc[("p", "x"), "loo_agrees"])
    assert loo.loc[("p", "z"), "loo_majority"] == "A" and loo.loc[("p", "z"), "loo_agrees"] == 0.0
    assert loo.loc[("q", "x"), "loo_majority"] == "B" and loo.loc[("q", "x"), "loo_agrees"] == 0.0


@pytest.mark.parametrize("k,n", [(0, 1), (3, 10), (5, 10), (9, 10), (40, 50), (17, 23)])
def test_position_bias_pvalue_is_the_exact_binomial_test(k: int, n: int) -> None:
    assert position_bias_pvalues(np.array([k]), np.array([n]))[0] == pytest.approx(
        binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_labels_per_hour_counts_active_sessions_only() -> None:
    # 10 labels a minute apart (each took 60 s), a 3-hour pause, then 10 more: 20 labels in 2 x 10 min.
    stamps = [T0 + timedelta(minutes=i) for i in range(10)] + [T0 + timedelta(hours=3, minutes=i) for i in range(10)]
    frame = pd.DataFrame({
        "label_id": [f"l{i}" for i in range(20)], "pair_id": [f"p{i}" for i in range(20)], "annotator_id": "w",
        "choice": "A", "strength": 1, "left_side": "A", "time_ms": 60_000, "is_reshow": False,
        "created_at": stamps, "gold_choice": None,
    })
    table = annotator_quality(frame, None, QualitySettings(session_gap_minutes=30))
    assert table.loc[0, "labels_per_hour"] == pytest.approx(60.0)


def test_labels_per_hour_is_never_faster_than_the_time_on_task_allows() -> None:
    """A simulated crowd writes labels of 20 s each within a second of the clock: 1,280 an hour beside a
    median of 20.6 s a label, on the first screen of the demo."""
    frame = pd.DataFrame({
        "label_id": ["l0", "l1", "l2"], "pair_id": ["p0", "p1", "p2"], "annotator_id": "sim", "choice": "A",
        "strength": 1, "left_side": "A", "time_ms": 20_000, "is_reshow": False,
        "created_at": [T0, T0 + timedelta(milliseconds=300), T0 + timedelta(milliseconds=600)], "gold_choice": None,
    })
    table = annotator_quality(frame, None, QualitySettings(session_gap_minutes=30))
    assert table.loc[0, "labels_per_hour"] == pytest.approx(180.0)  # 3 labels in 60 s on task
    assert table.loc[0, "median_seconds"] == pytest.approx(20.0)
