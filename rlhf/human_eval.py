"""How often annotators prefer one policy's lists to another's: the human side of "did the round help".

Only pairs that no model chose count (:func:`rlhf.active.chosen_without_a_model`): active selection asks
where the reward model sees little difference, and a win rate over its pairs is pulled towards one half
(``benchmarks/loop_parts_bench.py``, section 2b). Light on imports, so the Training page can use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rlhf.active import chosen_without_a_model
from rlhf.evaluation.intervals import Estimate, bootstrap_ci
from rlhf.wording import counted
from storage import Store, analytics


def human_win_rates(store: Store) -> dict[str, tuple[Estimate, int]]:
    """Per round: how often annotators prefer its policy to its parent on pairs no model chose, and the
    labels that rests on (as :func:`rlhf.dashboard.round_quality`'s ``human_win_*`` columns), for the CLI
    and the Training page."""
    from storage.rounds import list_rounds

    with store.transaction() as con:
        rounds = list_rounds(con)
        comparisons = analytics.policy_comparison_labels(con) if rounds else pd.DataFrame()
    return {r.round_id: human_win_rate(comparisons, r.policy_id, r.parent_policy_id) for r in rounds}


def human_win_interval(estimate: Estimate) -> str | None:
    """The rate's 95% interval as ``"0%–33%"``; a single pair has none, and no pair no rate (None)."""
    if estimate.n >= 2:
        return f"{estimate.lo:.0%}–{estimate.hi:.0%}"
    return "one pair: no interval" if estimate.n == 1 else None


def human_win_in_words(estimate: Estimate | None, labels: int) -> str | None:
    """A human win rate as ``"17% [0%, 33%] over 2 pairs (6 labels)"``; None before any label counts."""
    if estimate is None or not estimate.n:
        return None
    interval = f" [{estimate.lo:.0%}, {estimate.hi:.0%}]" if estimate.n >= 2 else ""
    return f"{estimate.mean:.0%}{interval} over {counted(estimate.n, 'pair')} ({counted(labels, 'label')})"


def human_win_rate(comparisons: pd.DataFrame | None, new: Any, parent: Any) -> tuple[Estimate, int]:
    """The new policy's human win rate over its parent on pairs no model chose, and the labels it rests on.

    ``comparisons`` is :func:`storage.analytics.policy_comparison_labels`. Gold pairs are left out (they are
    chosen for being clear), ties count one half, 'both bad' is left out, and each pair weighs the same.
    """
    none = Estimate(float("nan"), float("nan"), float("nan"), 0)
    if comparisons is None or comparisons.empty or not new or not parent:
        return none, 0
    c = comparisons
    unbiased = np.array([chosen_without_a_model(s, r) for s, r in zip(c["strategy"], c["selection_reason"])], bool)
    unbiased &= ~c["is_gold"].fillna(False).astype(bool).to_numpy()
    a_new = (c["policy_a"] == new) & (c["policy_b"] == parent)
    b_new = (c["policy_b"] == new) & (c["policy_a"] == parent)
    rel = c[(a_new | b_new) & unbiased & c["choice"].isin(["A", "B", "tie"])]
    if rel.empty:
        return none, 0
    new_side = np.where(a_new[rel.index], "A", "B")
    score = np.where(rel["choice"] == "tie", 0.5, (rel["choice"].to_numpy() == new_side).astype(float))
    per_pair = pd.Series(score, index=rel.index).groupby(rel["pair_id"]).mean()
    return bootstrap_ci(per_pair.to_numpy()), len(rel)
