"""The posterior-based selection variant that loop_bench.py measured (benchmarks/posterior_selection.py,
not in the product): its closed-form BALD, its batch rule and its Laplace precision, which the
figures in benchmarks/results/loop.md §1d rest on."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from posterior_selection import (
    LinearPosterior,
    epig_scores,
    greedy_information,
    laplace_bald,
    laplace_precision,
    power_top_k,
    sandwich_precision,
    select_with_posterior,
)

from rlhf.active import CandidatePair, SelectionShares


def _monte_carlo_bald(mean: float, var: float, rng: np.random.Generator, n: int = 400_000) -> float:
    p = 1.0 / (1.0 + np.exp(-rng.normal(mean, np.sqrt(var), n)))
    h = lambda q: -(q * np.log(q) + (1 - q) * np.log(1 - q))
    return float(h(p.mean()) - h(p).mean())


def test_laplace_bald_ranks_pairs_as_the_mutual_information_by_sampling_does() -> None:
    # The closed form is an approximation (probit for logistic): within 25% of the sampled value, and
    # what selection needs from it, the same order.
    beliefs = [(0.0, 0.5), (1.5, 1.0), (0.0, 1.0), (0.0, 2.0), (-3.0, 6.0), (1.0, 4.0), (0.0, 4.0)]
    rng = np.random.default_rng(0)
    sampled = np.array([_monte_carlo_bald(m, v, rng) for m, v in beliefs])
    closed = laplace_bald(np.array([m for m, _ in beliefs]), np.array([v for _, v in beliefs]))
    assert closed == pytest.approx(sampled, rel=0.25)
    assert list(np.argsort(closed)) == list(np.argsort(sampled))


def test_laplace_bald_is_zero_without_uncertainty_even_for_a_coin_flip() -> None:
    # A pair the head is sure is a tie (mean 0, variance 0) tells it nothing; uncertainty would pick it first.
    bald = laplace_bald(np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.0, 0.1, 1.0, 1.0]))
    assert bald[0] < 1e-3 < bald[1] < bald[2]
    assert bald[3] < bald[2]  # the same doubt about a clearer pair is worth less


def test_a_greedy_batch_covers_new_directions_instead_of_repeating_one() -> None:
    # Ten candidates differ along e1 (the most unknown direction), one along e2 (a little less unknown).
    # Ranked one by one, the top two are both e1 pairs; after the first e1 pick is counted as labelled,
    # the e2 pair is worth more than a second copy of e1.
    diffs = np.vstack([np.tile([1.0, 0.0], (10, 1)), [[0.0, 0.9]]])
    posterior = LinearPosterior(np.eye(2), np.zeros(2), np.diag([0.2, 0.2]))
    one_by_one = laplace_bald(np.zeros(11), np.einsum("ij,jk,ik->i", diffs, np.linalg.inv(posterior.precision), diffs))
    assert set(np.argsort(-one_by_one, kind="stable")[:2]) <= set(range(10))
    available = np.ones(11, dtype=bool)
    picks = greedy_information(diffs, posterior, 2, available)
    assert picks[1] == 10 and picks[0] < 10
    assert available.sum() == 9 and not available[picks].any()


def test_the_posterior_batch_asks_about_what_the_head_has_not_seen_and_keeps_the_other_quotas() -> None:
    # Four lists in two contexts; features: x (a direction the head has seen plenty of) and y (never seen).
    gen_ids = ["a", "b", "c", "d"]
    features = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    weight = np.array([0.0, 0.0])  # both pairs are coin flips by the mean: uncertainty cannot tell them apart
    posterior = LinearPosterior(features, weight, np.diag([500.0, 0.5]))
    cands = [CandidatePair("x", "a", "b"), CandidatePair("y", "c", "d")]
    scores = (features @ weight)[None, :]
    kw = {"labelled_per_context": {}, "exclude": set(), "seed": 0}
    only = SelectionShares(uncertainty=0, disagreement=1, coverage=0, random=0)
    chosen = select_with_posterior(cands, scores, gen_ids, 1, posterior, shares=only, **kw)
    assert [(p.gen_a, p.selection_reason) for p in chosen] == [("c", "disagreement")]
    half = SelectionShares(uncertainty=0.5, disagreement=0.5, coverage=0, random=0)
    both = select_with_posterior(cands, scores, gen_ids, 2, posterior, shares=half, **kw)
    assert Counter(p.selection_reason for p in both) == {"disagreement": 1, "uncertainty": 1}
    assert len({(p.gen_a, p.gen_b) for p in both}) == 2
    queued = select_with_posterior(cands, scores, gen_ids, 1, posterior, shares=only,
                                   labelled_per_context={}, exclude={("d", "c")}, seed=0)
    assert [p.gen_a for p in queued] == ["a"]  # an already-queued pair (either order) is never asked again
    with pytest.raises(ValueError, match="precision"):
        LinearPosterior(features, weight, np.eye(3))


def test_the_sandwich_precision_is_laplaces_when_the_labels_fit_the_model() -> None:
    rng = np.random.default_rng(2)
    from rlhf.reward.probe import fit_bradley_terry

    d = rng.normal(size=(4000, 3))
    w_true = np.array([1.0, -0.5, 0.3])
    wins = rng.random(4000) < 1 / (1 + np.exp(-(d @ w_true)))
    diffs = np.where(wins[:, None], d, -d)
    w, _ = fit_bradley_terry(diffs, l2=0.25)
    lap, sand = laplace_precision(diffs, w, l2=0.25), sandwich_precision(diffs, w, l2=0.25)
    assert np.allclose(sand, lap, rtol=0.1, atol=20)  # a well-specified model: J ~ H
    assert np.allclose(sandwich_precision(diffs[:0], w, l2=0.25), 0.5 * np.eye(3))  # no labels: the prior


def test_the_laplace_precision_is_the_objectives_hessian_at_the_fit():
    import torch

    from rlhf.reward.probe import fit_bradley_terry

    rng = np.random.default_rng(1)
    diffs, margins = rng.normal(size=(200, 6)), rng.uniform(0, 1, 200)
    w, _ = fit_bradley_terry(diffs, margins, l2=0.3)
    x, m = torch.tensor(diffs), torch.tensor(margins)
    hessian = torch.autograd.functional.hessian(
        lambda v: torch.nn.functional.softplus(m - x @ v).sum() + 0.3 * (v * v).sum(), torch.tensor(w, dtype=torch.float64))
    assert np.allclose(laplace_precision(diffs, w, margins, l2=0.3), hessian.numpy(), atol=1e-8)
    assert np.allclose(laplace_precision(diffs[:0], w, l2=0.3), 0.6 * np.eye(6))  # no labels: the prior alone


def _sampled_epig(x: np.ndarray, targets: np.ndarray, draws: np.ndarray) -> float:
    """EPIG by counting: the mutual information of the two labels' joint distribution, target by target."""
    total = 0.0
    for t in targets:
        pa, pb = 1 / (1 + np.exp(-(draws @ x))), 1 / (1 + np.exp(-(draws @ t)))
        joint = np.array([[np.mean(pa * pb), np.mean(pa * (1 - pb))], [np.mean((1 - pa) * pb), np.mean((1 - pa) * (1 - pb))]])
        outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
        total += float(np.sum(joint * np.log(joint / outer)))
    return total / len(targets)


def test_epig_is_the_mutual_information_with_a_target_label_and_ignores_directions_no_target_uses() -> None:
    posterior = LinearPosterior(np.eye(3), np.array([0.5, 0.0, 0.0]), np.diag([1.0, 4.0, 0.01]))
    targets = np.array([[1.0, 0.5, 0.0], [0.2, -1.0, 0.0], [-1.5, 0.3, 0.0]])
    cands = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    gain = epig_scores(cands, targets, posterior, np.random.default_rng(0), n_samples=20_000)
    cov = np.linalg.inv(posterior.precision)
    draws = np.random.default_rng(1).multivariate_normal(posterior.weight, cov, size=20_000)
    counted = np.array([_sampled_epig(x, targets, draws) for x in cands])
    assert gain == pytest.approx(counted, rel=0.1, abs=2e-3)
    # The third direction is the most uncertain a priori (variance 100) but no target pair moves along
    # it: BALD would rank it first, EPIG ranks it last.
    assert laplace_bald(np.zeros(4), np.einsum("ij,jk,ik->i", cands, cov, cands)).argmax() == 2
    assert gain.argmin() == 2 and gain[2] < 1e-3 < gain[0]


def test_power_top_k_draws_distinct_available_rows_in_proportion_to_their_scores() -> None:
    rng = np.random.default_rng(0)
    scores = np.array([8.0, 1.0, 1.0, 0.0, 50.0])
    counts = Counter()
    for _ in range(2000):
        available = np.array([True, True, True, True, False])
        picks = power_top_k(scores, 1, available, rng)
        counts[picks[0]] += 1
        assert not available[picks[0]]
    assert counts[4] == 0 and counts[3] == 0  # taken rows and zero scores are never drawn
    assert counts[0] / 2000 == pytest.approx(0.8, abs=0.04)
    batch = power_top_k(scores, 3, np.ones(5, dtype=bool), rng)
    assert len(set(batch)) == 3
