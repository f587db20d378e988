"""Active selection from a linear reward head's own posterior: a variant TRIED and NOT KEPT in the product.

The product's disagreement strategy (``rlhf.active``) is BALD over a bootstrap ensemble of reward models.
For the probe (a linear head on frozen embeddings, ``rlhf.reward.probe``) the belief over the head can be
written down instead: a Gaussian around the fitted weight with the objective's Hessian as precision
(Laplace), or the misspecification-robust sandwich covariance. Then BALD has a closed form and a batch can
be chosen greedily, each pick counted as labelled before the next. ``loop_bench.py --arm
NAME=laplace|sandwich`` measures it against the product mix on the label-efficiency task; on ten shops
it traded an early gain for a late loss and reached random's final accuracy no sooner than the product
mix (``benchmarks/results/loop.md`` §1d), so the product keeps the ensemble. Expected predictive
information gain on random pool pairs (``--arm NAME=epig|pepig``, :func:`epig_scores`), which asks only
about what the test-like pairs depend on, ended level with random instead of below it, and no better
(§1f). Tested in ``tests/test_posterior_selection.py`` because the recorded figures rest on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlhf.active import CandidatePair, SelectedPair, SelectionShares, select_pairs, strategy_quotas


@dataclass(frozen=True)
class LinearPosterior:
    """A Gaussian belief over a linear reward head, ``score(g) = weight · features[g]``.

    ``features`` has one row per generation id (in the order of the ids passed alongside it) and
    ``precision`` is the Hessian of the training objective at ``weight`` (the Laplace approximation),
    so that the belief over a pair's logit ``weight · (x_a − x_b)`` is a normal with a known variance.
    """

    features: np.ndarray
    weight: np.ndarray
    precision: np.ndarray

    def __post_init__(self) -> None:
        _, d = np.shape(self.features)
        if np.shape(self.weight) != (d,) or np.shape(self.precision) != (d, d):
            raise ValueError(f"A posterior over {d} features needs a weight of shape ({d},) and a ({d}, {d}) "
                             f"precision, not {np.shape(self.weight)} and {np.shape(self.precision)}.")


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of Bernoulli(p), elementwise."""
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    return -(q * np.log(q) + (1.0 - q) * np.log(1.0 - q))


def laplace_bald(mean_gap: np.ndarray, var_gap: np.ndarray) -> np.ndarray:
    """BALD in nats of a pair's label when its Bradley–Terry logit is believed ``N(mean_gap, var_gap)``.

    The closed form of Houlsby et al. (2011) for a probit link, used with the logistic ≈ probit
    (scale √(π/8)) match: H[predictive P(A > B)] − E[H[σ(logit)]]. It grows with the variance (what the
    model does not know yet) and vanishes as the variance does, whatever the mean: a pair the model is
    sure is a tie is not informative, which matters under a noisy crowd.
    """
    mu = np.asarray(mean_gap, dtype=float)
    v = np.maximum(np.asarray(var_gap, dtype=float), 0.0)
    lam2 = np.pi / 8.0
    c2 = np.pi * np.log(2.0) / 2.0
    predictive = 1.0 / (1.0 + np.exp(-mu / np.sqrt(1.0 + lam2 * v)))
    expected = np.log(2.0) * np.sqrt(c2 / (c2 + lam2 * v)) * np.exp(-lam2 * mu * mu / (2.0 * (c2 + lam2 * v)))
    return np.maximum(0.0, _entropy(predictive) - expected)


def greedy_information(
    diffs: np.ndarray, posterior: LinearPosterior, k: int, available: np.ndarray, jitter: np.ndarray | None = None
) -> list[int]:
    """Up to ``k`` rows of ``diffs`` (``x_a − x_b`` per candidate) chosen one at a time by Laplace BALD.

    After each pick the posterior's precision gains that pair's expected Fisher information
    ``p(1 − p) d dᵀ`` (a rank-one update of the covariance), so later picks favour directions the batch
    has not covered yet. ``available`` (bool per row) is updated in place; ``jitter`` breaks exact ties.
    """
    diffs = np.asarray(diffs, dtype=float)
    available = np.asarray(available, dtype=bool)
    if len(diffs) == 0 or k <= 0:
        return []
    cov = np.linalg.inv(np.asarray(posterior.precision, dtype=float))
    cov = (cov + cov.T) / 2.0
    mu = diffs @ np.asarray(posterior.weight, dtype=float)
    ds = diffs @ cov  # row j: (Σ d_j)ᵀ
    var = np.einsum("ij,ij->i", ds, diffs)
    tie = np.zeros(len(diffs)) if jitter is None else 1e-12 * np.asarray(jitter, dtype=float)
    out: list[int] = []
    for _ in range(k):
        if not available.any():
            break
        gain = np.where(available, laplace_bald(mu, var) + tie, -np.inf)
        i = int(np.argmax(gain))
        available[i] = False
        out.append(i)
        p = 1.0 / (1.0 + np.exp(-mu[i] / np.sqrt(1.0 + np.pi * max(var[i], 0.0) / 8.0)))
        w = p * (1.0 - p)
        u = ds[i].copy()  # Σ d_i
        cross = diffs @ u  # d_jᵀ Σ d_i
        scale = w / (1.0 + w * var[i])
        ds -= scale * np.outer(cross, u)
        var -= scale * cross * cross
    return out


def laplace_precision(
    diffs: np.ndarray, weight: np.ndarray, margins: np.ndarray | None = None, l2: float = 0.25
) -> np.ndarray:
    """The Hessian of :func:`fit_bradley_terry`'s objective at ``weight``: the precision of the Laplace
    approximation to the head's posterior, which active selection uses to tell what the head does not
    know yet (:class:`LinearPosterior`)."""
    x = np.asarray(diffs, dtype=np.float64)
    m = np.zeros(len(x)) if margins is None else np.asarray(margins, dtype=np.float64)
    s = 1.0 / (1.0 + np.exp(-(m - x @ np.asarray(weight, dtype=np.float64))))
    return (x * (s * (1.0 - s))[:, None]).T @ x + 2.0 * l2 * np.eye(x.shape[1])


def sandwich_precision(
    diffs: np.ndarray, weight: np.ndarray, margins: np.ndarray | None = None, l2: float = 0.25
) -> np.ndarray:
    """The inverse of the sandwich covariance ``H⁻¹ (J + 2·l2·I) H⁻¹`` of the fitted head: ``H`` the
    objective's Hessian, ``J`` the sum of the per-label gradients' outer products. Where the
    Bradley–Terry model is right, ``J ≈ H`` and this is the Laplace precision; where the labels are
    noisier than the model believes (a misspecified head, a noisy crowd), ``J`` grows and so does the
    doubt, as a bootstrap ensemble would show, without training one. Directions no label has touched
    keep the prior's variance."""
    x = np.asarray(diffs, dtype=np.float64)
    m = np.zeros(len(x)) if margins is None else np.asarray(margins, dtype=np.float64)
    s = 1.0 / (1.0 + np.exp(-(m - x @ np.asarray(weight, dtype=np.float64))))
    hessian = laplace_precision(x, weight, margins, l2)
    meat = (x * (s * s)[:, None]).T @ x + 2.0 * l2 * np.eye(x.shape[1])
    return hessian @ np.linalg.solve(meat, hessian)


def epig_scores(
    diffs: np.ndarray, targets: np.ndarray, posterior: LinearPosterior, rng: np.random.Generator, n_samples: int = 256
) -> np.ndarray:
    """Expected predictive information gain (Bickford Smith et al., 2023) of each row of ``diffs``: the mutual
    information, in nats, between a candidate pair's label and the label of a pair drawn from ``targets``
    (rows ``x_a − x_b`` of pairs like those the model will be judged on), averaged over the targets, under
    ``n_samples`` draws of the head from the posterior. BALD asks what a label tells about the head; EPIG
    asks what it tells about predictions on the target pairs, so it does not favour pairs that are unusual
    for the target distribution (where a misspecified head's doubt is largest and least useful)."""
    cov = np.linalg.inv(np.asarray(posterior.precision, dtype=float))
    cov = (cov + cov.T) / 2.0
    draws = rng.multivariate_normal(np.asarray(posterior.weight, dtype=float), cov, size=n_samples, method="cholesky")
    p_c = 1.0 / (1.0 + np.exp(-np.asarray(diffs, dtype=float) @ draws.T))  # [C, S]
    p_t = 1.0 / (1.0 + np.exp(-np.asarray(targets, dtype=float) @ draws.T))  # [T, S]
    both = p_c @ p_t.T / n_samples  # P(y = A, y* = A) per (candidate, target)
    pa = p_c.mean(axis=1)[:, None]
    pb = p_t.mean(axis=1)[None, :]
    out = np.zeros(both.shape)
    for joint, left, right in ((both, pa, pb), (pa - both, pa, 1.0 - pb), (pb - both, 1.0 - pa, pb),
                               (1.0 - pa - pb + both, 1.0 - pa, 1.0 - pb)):
        j = np.clip(joint, 1e-12, 1.0)
        out += j * (np.log(j) - np.log(np.clip(left * right, 1e-12, 1.0)))
    return np.maximum(out.mean(axis=1), 0.0)


def power_top_k(scores: np.ndarray, k: int, available: np.ndarray, rng: np.random.Generator) -> list[int]:
    """``k`` available rows drawn without replacement with probability proportional to ``scores``
    (Gumbel top-k on log scores; the stochastic batch acquisition of Kirsch et al., 2023): a batch
    spread over the high-scoring region instead of the top-k's many near-copies of one pair."""
    log_s = np.where(available, np.log(np.maximum(np.asarray(scores, dtype=float), 1e-30)), -np.inf)
    keys = log_s + rng.gumbel(size=len(log_s))
    order = [int(i) for i in np.argsort(-keys) if available[i]][:k]
    available[order] = False
    return order


def select_with_posterior(
    pool: Sequence[CandidatePair],
    scores: np.ndarray,
    generation_ids: Sequence[str],
    n: int,
    posterior: LinearPosterior,
    *,
    shares: SelectionShares,
    labelled_per_context: dict[str, int],
    exclude: set[tuple[str, str]],
    seed: int,
    rule: str = "bald",
    targets: np.ndarray | None = None,
) -> list[SelectedPair]:
    """The product's selection with its disagreement quota filled from the posterior: random, coverage
    and uncertainty as ``rlhf.active.select_pairs`` chooses them, then from what is left the batch of
    ``rule``: ``bald`` (:func:`greedy_information`), ``epig`` (the top :func:`epig_scores` against
    ``targets``) or ``pepig`` (EPIG drawn by :func:`power_top_k`)."""
    n = min(n, len(pool))
    k_info = strategy_quotas(n, shares)["disagreement"]
    rest = SelectionShares(**{**shares.__dict__, "disagreement": 0.0})
    chosen = select_pairs(pool, scores, generation_ids, n - k_info, shares=rest,
                          labelled_per_context=labelled_per_context, exclude=exclude, seed=seed) if n > k_info else []
    taken = set(exclude) | {(p.gen_a, p.gen_b) for p in chosen}
    taken |= {(b, a) for a, b in taken}
    index = {g: j for j, g in enumerate(generation_ids)}
    free = np.array([(c.gen_a, c.gen_b) not in taken and c.gen_a != c.gen_b for c in pool], dtype=bool)
    feats = np.asarray(posterior.features, dtype=float)
    diffs = feats[[index[c.gen_a] for c in pool]] - feats[[index[c.gen_b] for c in pool]]
    rng = np.random.default_rng(seed)
    jitter = rng.random(len(pool))
    if rule == "bald":
        picks = greedy_information(diffs, posterior, k_info, free, jitter)
    elif rule in ("epig", "pepig"):
        if targets is None:
            raise ValueError(f"rule {rule!r} needs target pairs.")
        gain = epig_scores(diffs, targets, posterior, rng)
        if rule == "pepig":
            picks = power_top_k(gain, k_info, free, rng)
        else:
            picks = _take_top(gain + 1e-12 * jitter, k_info, free)
    else:
        raise ValueError(f"Unknown rule {rule!r}: expected bald, epig or pepig.")
    return chosen + [SelectedPair(pool[i].context_id, pool[i].gen_a, pool[i].gen_b, 0.0, "disagreement") for i in picks]


def _take_top(gain: np.ndarray, k: int, available: np.ndarray) -> list[int]:
    order = [int(i) for i in np.argsort(-gain) if available[i]][:k]
    available[order] = False
    return order
