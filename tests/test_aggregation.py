"""Label aggregation on synthetic crowds with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf import aggregation as agg
from rlhf.settings import load_settings

CHOICES = np.array(["A", "B", "tie"])


def _crowd(seed: int = 7, n_items: int = 400, per_item: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    """4 careful annotators (80% right) and 8 spammers (always 'A', or uniformly random) share the work."""
    rng = np.random.default_rng(seed)
    truth = pd.Series(rng.choice(CHOICES, size=n_items, p=[0.4, 0.4, 0.2]),
                      index=[f"p{i}" for i in range(n_items)])
    kinds = {f"good{i}": "good" for i in range(4)} | {f"spamA{i}": "always_a" for i in range(4)} \
        | {f"rand{i}": "random" for i in range(4)}
    names = list(kinds)
    rows = []
    for pid, true in truth.items():
        for who in rng.choice(names, size=per_item, replace=False):
            kind = kinds[who]
            if kind == "good":
                choice = true if rng.random() < 0.8 else rng.choice(CHOICES[CHOICES != true])
            elif kind == "always_a":
                choice = "A"
            else:
                choice = rng.choice(CHOICES)
            strength = int(rng.integers(1, 4)) if choice in ("A", "B") else None
            rows.append((pid, who, choice, strength))
    frame = pd.DataFrame(rows, columns=["pair_id", "annotator_id", "choice", "strength"])
    frame["is_reshow"] = False
    return frame, truth


def test_dawid_skene_beats_majority_when_spammers_are_present() -> None:
    frame, truth = _crowd()
    mv_acc, n = agg.accuracy_against(agg.majority_vote(frame), truth)
    ds = agg.dawid_skene(frame)
    ds_acc, _ = agg.accuracy_against(ds, truth)
    assert n == len(truth)
    assert ds_acc > mv_acc + 0.05, (ds_acc, mv_acc)
    rel = ds.reliability.set_index("annotator_id")["reliability"]
    good = rel[rel.index.str.startswith("good")]
    spam = rel[~rel.index.str.startswith("good")]
    assert good.min() > spam.max()


def test_mace_also_beats_majority_and_rates_spammers_low() -> None:
    frame, truth = _crowd(seed=11)
    mv_acc, _ = agg.accuracy_against(agg.majority_vote(frame), truth)
    result = agg.mace(frame, n_restarts=2, n_iter=30)
    acc, _ = agg.accuracy_against(result, truth)
    assert acc > mv_acc
    rel = result.reliability.set_index("annotator_id")["reliability"]
    assert rel[rel.index.str.startswith("good")].mean() > rel[rel.index.str.startswith("rand")].mean()


def test_every_pair_carries_a_confidence_and_counts() -> None:
    frame, _ = _crowd(n_items=60)
    for method in ("majority", "dawid_skene"):
        result = agg.aggregate_labels(frame, method)
        pairs = result.pairs
        assert list(pairs.columns) == list(agg.PAIR_COLUMNS)
        assert len(pairs) == frame["pair_id"].nunique()
        assert pairs["confidence"].between(0, 1).all()
        assert (pairs["n_labels"] == 5).all()
        assert (pairs["n_agree"] <= pairs["n_labels"]).all()
        ab = pairs[pairs["choice"].isin(["A", "B"]) & (pairs["n_agree"] > 0)]
        assert ab["strength"].notna().all() and ab["strength"].between(1, 3).all()
        assert pairs.loc[pairs["choice"] == "tie", "strength"].isna().all()


def test_majority_confidence_is_the_vote_share_and_marks_draws() -> None:
    frame = pd.DataFrame({
        "pair_id": ["p", "p", "p", "q", "q"], "annotator_id": ["x", "y", "z", "x", "y"],
        "choice": ["B", "B", "A", "A", "B"], "strength": [3, 1, 2, 1, 1], "is_reshow": False,
    })
    pairs = agg.majority_vote(frame).pairs.set_index("pair_id")
    assert pairs.loc["p", "choice"] == "B"
    assert pairs.loc["p", "confidence"] == pytest.approx(2 / 3)
    assert pairs.loc["p", "strength"] == 2  # median of the agreeing strengths 3 and 1
    assert not pairs.loc["p", "contested"] and pairs.loc["q", "contested"]
    assert pairs.loc["q", "choice"] == "tie"  # an A/B draw is a tie, whatever the row order
    flipped = agg.majority_vote(frame.iloc[::-1]).pairs.set_index("pair_id")
    assert flipped.loc["q", "choice"] == "tie" and flipped.loc["p", "choice"] == "B"


def test_reshows_are_not_extra_votes() -> None:
    frame = pd.DataFrame({
        "pair_id": ["p"] * 4, "annotator_id": ["x", "y", "x", "x"], "choice": ["A", "B", "B", "B"],
        "strength": [1, 1, 1, 1], "is_reshow": [False, False, True, True],
    })
    pairs = agg.majority_vote(frame).pairs
    assert pairs.loc[0, "n_labels"] == 2


def test_method_comes_from_settings_and_unknown_is_refused(tmp_path) -> None:
    frame, _ = _crowd(n_items=30)
    settings = load_settings(store={"data_dir": tmp_path}, reward_model={"aggregation": "dawid_skene"})
    assert agg.aggregate_labels(frame, settings=settings).method == "dawid_skene"
    none = agg.aggregate_labels(frame, "none")
    assert len(none.pairs) == len(frame) and (none.pairs["confidence"] == 1).all()
    with pytest.raises(ValueError, match="Unknown aggregation"):
        agg.aggregate_labels(frame, "best_guess")


def test_aggregate_pairs_adapter_for_the_reward_model() -> None:
    frame, _ = _crowd(n_items=30)
    out = agg.aggregate_pairs(frame, method="dawid_skene")
    assert {"pair_id", "choice", "strength", "n_labels", "agreement", "confidence"} <= set(out.columns)
    assert out["agreement"].between(0, 1).all()
