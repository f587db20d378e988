"""Means with percentile-bootstrap intervals over contexts, paired differences and reward-model win rates,
and what an interval says in words (better, worse, no detectable difference)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile-bootstrap interval over units (contexts)."""

    mean: float
    lo: float
    hi: float
    n: int

    def overlaps(self, other: Estimate) -> bool:
        return not (self.lo > other.hi or other.lo > self.hi)


def paired_verdict(lo: float | None, hi: float | None) -> str | None:
    """What a paired difference's 95% interval says: 'better' (above zero), 'worse' (below) or 'no detectable
    difference' (it includes zero). Said in words because a point ratio of two NDCGs reads as progress
    when the interval cannot tell the policies apart. None without an interval."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return None
    return "better" if lo > 0 else "worse" if hi < 0 else "no detectable difference"


def zero_shot_verdict(report: Mapping[str, Any] | None, measure: str = "ndcg") -> str | None:
    """A round's NDCG (``measure="ndcg"``) or share of grounded reasons (``"reasons"``) against the zero-shot
    model's, paired over the same held-out shoppers, in words with its interval (``"no detectable difference:
    +0.020 [-0.011, +0.053] over 40 shoppers"``); None when the round's report (:func:`round_report`) has
    no such comparison."""
    report = report or {}
    return verdict_in_words((report.get(f"{measure}_difference") or {}).get(report.get("zero_shot_policy_id")))


def verdict_in_words(estimate: Mapping[str, Any] | None) -> str | None:
    """A stored paired difference (``mean``, ``lo``, ``hi``, ``n``) as its verdict with the interval:
    ``"worse: -0.078 [-0.115, -0.045] over 294 shoppers"``; None without an interval."""
    verdict = paired_verdict(estimate.get("lo"), estimate.get("hi")) if estimate else None
    if verdict is None:
        return None
    e = estimate
    return f"{verdict}: {e['mean']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}] over {e.get('n', '?')} shoppers"


def bootstrap_ci(
    values: Sequence[float], *, samples: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval (resampling the values with replacement)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Estimate(float(x.mean()), float(lo), float(hi), int(x.size))


def win_rate(
    scores_x: Mapping[str, float], scores_y: Mapping[str, float], *, samples: int = 1000, seed: int = 0
) -> Estimate:
    """Share of common contexts where X's reward-model score beats Y's (ties count one half), with CI.

    Keys are context ids; values are each policy's (mean) reward-model score on that context.
    """
    common = sorted(set(scores_x) & set(scores_y))
    wins = [1.0 if scores_x[c] > scores_y[c] else 0.5 if scores_x[c] == scores_y[c] else 0.0 for c in common]
    return bootstrap_ci(wins, samples=samples, seed=seed)


def paired_difference(
    x: Mapping[str, float], y: Mapping[str, float], *, samples: int = 1000, seed: int = 0
) -> Estimate:
    """Mean of ``x[c] - y[c]`` over the contexts both have, with a bootstrap interval over contexts.

    Two policies judged on the same shoppers share most of their noise (which shoppers bought a
    candidate at all), so the paired interval is the one that says whether one beat the other; two
    overlapping per-policy intervals do not settle it either way.
    """
    common = sorted(set(x) & set(y))
    return bootstrap_ci([x[c] - y[c] for c in common], samples=samples, seed=seed)


def context_mean_scores(scores: Mapping[str, float], generation_context: Mapping[str, str]) -> dict[str, float]:
    """Per-context mean of generation scores (``generation_id -> score``, ``generation_id -> context``)."""
    acc: dict[str, list[float]] = {}
    for gen_id, score in scores.items():
        if gen_id in generation_context:
            acc.setdefault(generation_context[gen_id], []).append(float(score))
    return {c: float(np.mean(v)) for c, v in acc.items()}
