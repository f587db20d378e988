"""Active selection: which candidate pairs are worth an annotator's time.

A round produces many more candidate comparisons (two lists for the same context) than annotators can
label. This module ranks them with the reward models the round just trained and returns a mix:

- **uncertainty** — the ensemble's mean P(A > B) is closest to 0.5 (small score gap): a label here moves
  the reward model most;
- **disagreement** — the ensemble members disagree on which list is better, ranked by BALD (Houlsby et
  al., 2011: the mutual information between the label and the model, H[mean p] − mean H[p_k] over the
  members' P(A > B)): high when members are each confident but point different ways, near zero when they
  all call the pair a coin flip. Under a noisy crowd that difference matters: a pair every member calls a
  tie is usually a near-tie in truth too, and its label is close to a coin flip;
- **coverage** — contexts with the fewest labelled pairs so far (including what this call already
  picked), so that labels spread across shoppers instead of piling on a few;
- **random** — a uniform draw from the whole pool, taken *first* so that it is an unbiased sample of the
  candidates. Its ``selection_reason`` is ``"random"``: evaluation code may use these labels as an
  unbiased held-out set. Gold pairs are not chosen here; the queue mixes them in at its gold rate.

Everything is a pure function of its inputs and a seed, so a round re-run from its snapshot selects the
same pairs. Scores come in as arrays: :func:`bootstrap_scores` stacks the output of K scorers with the
contract ``score(prompts, responses) -> np.ndarray`` (one float per response), which the reward-model
code provides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.records import Generation

#: Strategies in the order their quotas are filled (random first, so it stays a uniform sample).
STRATEGIES: tuple[str, ...] = ("random", "coverage", "disagreement", "uncertainty")
RANDOM_REASON = "random"
#: The strategy a round's selected pairs are stored under.
ACTIVE_STRATEGY = "active"

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class CandidatePair:
    """Two generations (lists) of the same context that could be compared."""

    context_id: str
    gen_a: str
    gen_b: str


@dataclass(frozen=True)
class SelectedPair:
    """A candidate chosen for labelling, with the queue priority and the reason it was chosen.

    ``priority`` is in (0, 1]; strategies are interleaved in proportion to their shares, so the first
    pairs served already contain every kind. ``stats`` carries the numbers behind the choice (mean gap,
    P(A>B), minority share, labelled pairs of the context) for debugging and the dashboard.
    """

    context_id: str
    gen_a: str
    gen_b: str
    priority: float
    selection_reason: str
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectionShares:
    """The mix of strategies; shares are normalised to sum to one."""

    uncertainty: float = 0.5
    disagreement: float = 0.2
    coverage: float = 0.15
    random: float = 0.15

    @classmethod
    def from_settings(cls, rounds: Any) -> SelectionShares:
        """Shares from ``settings.rounds`` (``active_*_share`` fields)."""
        return cls(
            uncertainty=rounds.active_uncertainty_share,
            disagreement=rounds.active_disagreement_share,
            coverage=rounds.active_coverage_share,
            random=rounds.active_random_share,
        )

    @classmethod
    def random_only(cls) -> SelectionShares:
        """All pairs drawn uniformly: the baseline that active selection is measured against."""
        return cls(uncertainty=0.0, disagreement=0.0, coverage=0.0, random=1.0)

    def as_dict(self) -> dict[str, float]:
        raw = {s: float(getattr(self, s)) for s in STRATEGIES}
        if any(v < 0 for v in raw.values()):
            raise ValueError(f"Selection shares must not be negative: {raw}")
        total = sum(raw.values())
        if total <= 0:
            raise ValueError("At least one selection share must be positive.")
        return {k: v / total for k, v in raw.items()}


def bootstrap_scores(scorers: Sequence[Scorer], prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Scores of every response by each of K reward models, as an array ``[K, n_responses]``.

    Each scorer follows the reward-model contract ``score(prompts, responses) -> np.ndarray`` with one
    float per response. The K models are an ensemble or bootstrap replicas (trained on resampled labels).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    if not scorers:
        raise ValueError("At least one scorer is needed.")
    rows = []
    for k, scorer in enumerate(scorers):
        out = np.asarray(scorer(prompts, responses), dtype=float).reshape(-1)
        if out.shape[0] != len(responses):
            raise ValueError(f"Scorer {k} returned {out.shape[0]} scores for {len(responses)} responses.")
        rows.append(out)
    return np.vstack(rows)


def stack_score_frames(
    frames: Sequence[Any], *, id_column: str = "generation_id", score_column: str = "reward"
) -> tuple[np.ndarray, list[str]]:
    """``(scores [K, n], generation_ids)`` from K score tables (e.g. ``rlhf.reward.score.score_generations``).

    Only generations scored by every model are kept, in sorted id order, so columns line up.
    """
    if not frames:
        raise ValueError("At least one score table is needed.")
    maps = [dict(zip(f[id_column], f[score_column])) for f in frames]
    common = sorted(set.intersection(*(set(m) for m in maps)))
    return np.array([[float(m[g]) for g in common] for m in maps], dtype=float).reshape(len(maps), len(common)), common


def pair_statistics(
    candidates: Sequence[CandidatePair], scores: np.ndarray, generation_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-candidate numbers that the strategies rank by.

    ``scores[k, j]`` is reward model k's score of ``generation_ids[j]``. Returns arrays (one value per
    candidate): ``mean_gap`` (mean over members of score A − score B), ``p_a`` (mean over members of
    sigmoid(gap)), ``uncertainty`` (1 − |2·p_a − 1|, 1 = a coin flip), ``bald`` (mutual information
    between the label and the ensemble member, in nats: H(p_a) − mean over members of H(p_k)),
    ``minority`` (share of members whose gap sign disagrees with the majority, 0..0.5) and ``gap_std``
    (spread of the members' gaps).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != len(generation_ids):
        raise ValueError(f"scores has {scores.shape[1]} columns for {len(generation_ids)} generation ids.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Reward-model scores contain NaN or infinite values.")
    index = {g: j for j, g in enumerate(generation_ids)}
    missing = sorted({g for c in candidates for g in (c.gen_a, c.gen_b) if g not in index})
    if missing:
        raise ValueError(f"No scores for generations {missing[:5]}{' ...' if len(missing) > 5 else ''}.")
    ia = np.array([index[c.gen_a] for c in candidates], dtype=int)
    ib = np.array([index[c.gen_b] for c in candidates], dtype=int)
    gaps = scores[:, ia] - scores[:, ib] if len(candidates) else np.zeros((scores.shape[0], 0))
    p_members = 1.0 / (1.0 + np.exp(-gaps))
    p_a = p_members.mean(axis=0)
    positive = (gaps > 0).mean(axis=0)
    return {
        "mean_gap": gaps.mean(axis=0),
        "p_a": p_a,
        "uncertainty": 1.0 - np.abs(2.0 * p_a - 1.0),
        "bald": np.maximum(0.0, _entropy(p_a) - _entropy(p_members).mean(axis=0)),
        "minority": np.minimum(positive, 1.0 - positive),
        "gap_std": gaps.std(axis=0),
    }


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of Bernoulli(p), elementwise (0 at p = 0 or 1)."""
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    return -(q * np.log(q) + (1.0 - q) * np.log(1.0 - q))


def strategy_quotas(n: int, shares: SelectionShares) -> dict[str, int]:
    """How many of ``n`` pairs each strategy gets (largest-remainder rounding, sums to ``n``)."""
    fractions = shares.as_dict()
    exact = {s: n * f for s, f in fractions.items()}
    quotas = {s: int(np.floor(v)) for s, v in exact.items()}
    left = n - sum(quotas.values())
    order = sorted(STRATEGIES, key=lambda s: (-(exact[s] - quotas[s]), STRATEGIES.index(s)))
    for s in order[:left]:
        quotas[s] += 1
    return quotas


def select_pairs(
    candidates: Sequence[CandidatePair],
    scores: np.ndarray,
    generation_ids: Sequence[str],
    n: int,
    *,
    shares: SelectionShares | None = None,
    labelled_per_context: Mapping[str, int] | None = None,
    exclude: Collection[tuple[str, str]] = (),
    seed: int = 0,
) -> list[SelectedPair]:
    """Choose up to ``n`` distinct pairs from ``candidates``, ordered by priority (highest first).

    Quotas follow ``shares``; the random slice is drawn first from the whole pool; coverage then picks,
    one at a time, a pair from the context with the fewest labelled-plus-selected pairs (ties broken by
    uncertainty); disagreement and uncertainty take the best remaining by their scores. With a single
    reward model (K = 1) there is no disagreement signal, so that quota goes to uncertainty. A strategy
    that runs out of candidates passes its remainder on to uncertainty. Duplicate candidates (same two
    generations, either order) are considered once, and pairs in ``exclude`` (``(gen_a, gen_b)`` keys of
    pairs already queued, e.g. ``storage.generations.existing_pair_keys``) are never chosen again.
    """
    if n < 0:
        raise ValueError("n must not be negative.")
    shares = shares or SelectionShares()
    labelled = dict(labelled_per_context or {})
    pool = _dedupe(candidates, exclude)
    if not pool or n == 0:
        return []
    stats = pair_statistics(pool, scores, generation_ids)
    k_models = np.atleast_2d(np.asarray(scores)).shape[0]
    quotas = strategy_quotas(min(n, len(pool)), shares)
    if k_models < 2:
        quotas["uncertainty"] += quotas.pop("disagreement")
        quotas["disagreement"] = 0

    rng = np.random.default_rng(seed)
    taken = np.zeros(len(pool), dtype=bool)
    picks: dict[str, list[int]] = {s: [] for s in STRATEGIES}
    # Deterministic tie-breaking that does not depend on input order alone: a seeded jitter.
    jitter = rng.random(len(pool))

    # 1. random: uniform over the whole pool, before anything else has been removed.
    if quotas["random"]:
        chosen = rng.choice(len(pool), size=quotas["random"], replace=False)
        picks["random"] = [int(i) for i in chosen]
        taken[chosen] = True

    # 2. coverage: greedily the least-covered context, counting what is already selected.
    by_context: dict[str, list[int]] = {}
    unc_order = np.lexsort((jitter, -stats["uncertainty"]))
    for i in unc_order:
        by_context.setdefault(pool[i].context_id, []).append(int(i))
    load = Counter({c: labelled.get(c, 0) for c in by_context})
    for i in picks["random"]:
        load[pool[i].context_id] += 1
    for _ in range(quotas["coverage"]):
        open_contexts = [c for c, idx in by_context.items() if any(not taken[i] for i in idx)]
        if not open_contexts:
            break
        context = min(open_contexts, key=lambda c: (load[c], -stats["uncertainty"][_first_open(by_context[c], taken)],
                                                     jitter[_first_open(by_context[c], taken)]))
        i = _first_open(by_context[context], taken)
        picks["coverage"].append(i)
        taken[i] = True
        load[context] += 1
    shortfall = quotas["coverage"] - len(picks["coverage"])

    # 3. disagreement: BALD first, then the minority share of signs and the spread of the gaps.
    dis_order = np.lexsort((jitter, -stats["gap_std"], -stats["minority"], -np.round(stats["bald"], 9)))
    picks["disagreement"] = _take(dis_order, taken, quotas["disagreement"])
    shortfall += quotas["disagreement"] - len(picks["disagreement"])

    # 4. uncertainty: P(A>B) closest to one half; also absorbs every other strategy's shortfall.
    picks["uncertainty"] = _take(unc_order, taken, quotas["uncertainty"] + shortfall)

    return _interleave(pool, picks, stats, labelled)


def _dedupe(candidates: Sequence[CandidatePair], exclude: Collection[tuple[str, str]] = ()) -> list[CandidatePair]:
    seen: set[tuple[str, str]] = {(min(a, b), max(a, b)) for a, b in exclude}
    out: list[CandidatePair] = []
    for c in candidates:
        if c.gen_a == c.gen_b:
            continue
        key = (min(c.gen_a, c.gen_b), max(c.gen_a, c.gen_b))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _first_open(indices: list[int], taken: np.ndarray) -> int:
    return next(i for i in indices if not taken[i])


def _take(order: np.ndarray, taken: np.ndarray, k: int) -> list[int]:
    out: list[int] = []
    for i in order:
        if len(out) >= k:
            break
        if not taken[i]:
            taken[i] = True
            out.append(int(i))
    return out


def _interleave(
    pool: list[CandidatePair], picks: dict[str, list[int]], stats: dict[str, np.ndarray], labelled: Mapping[str, int]
) -> list[SelectedPair]:
    """Give priorities so that strategies alternate in proportion to their sizes, best of each first."""
    ranked: list[tuple[float, int, int, str]] = []
    for s_index, strategy in enumerate(STRATEGIES):
        chosen = picks[strategy]
        for rank, i in enumerate(chosen):
            ranked.append(((rank + 0.5) / len(chosen), s_index, i, strategy))
    ranked.sort()
    total = len(ranked)
    out = []
    for position, (_, _, i, strategy) in enumerate(ranked):
        c = pool[i]
        out.append(
            SelectedPair(
                context_id=c.context_id,
                gen_a=c.gen_a,
                gen_b=c.gen_b,
                priority=round(1.0 - position / total, 6),
                selection_reason=strategy,
                stats={
                    "mean_gap": float(stats["mean_gap"][i]),
                    "p_a": float(stats["p_a"][i]),
                    "minority": float(stats["minority"][i]),
                    "gap_std": float(stats["gap_std"][i]),
                    "context_labelled": float(labelled.get(c.context_id, 0)),
                },
            )
        )
    return out


def candidate_pairs(generations_by_context: Mapping[str, Sequence[str]]) -> list[CandidatePair]:
    """Every unordered pair of distinct generations within each context (context and id order)."""
    out: list[CandidatePair] = []
    for context_id in sorted(generations_by_context):
        ids = sorted(dict.fromkeys(generations_by_context[context_id]))
        for a_i in range(len(ids)):
            for b_i in range(a_i + 1, len(ids)):
                out.append(CandidatePair(context_id, ids[a_i], ids[b_i]))
    return out


def round_candidate_pairs(generations: Sequence[Generation], new_policy_id: str) -> list[CandidatePair]:
    """The pairs a round may ask about: two different lists of one context, at least one of them the new
    policy's (context and id order).

    Which list a pair calls A does not matter to annotators: the queue shows either one on the left, on a
    coin per assignment (``storage.queue.next_assignment``).
    """
    from rlhf.pairs import lists_identical

    by_id = {g.generation_id: g for g in generations}
    by_context: dict[str, list[str]] = {}
    for g in by_id.values():
        by_context.setdefault(g.context_id, []).append(g.generation_id)
    return [p for p in candidate_pairs(by_context)
            if new_policy_id in (by_id[p.gen_a].policy_id, by_id[p.gen_b].policy_id)
            and not lists_identical(by_id[p.gen_a], by_id[p.gen_b])]


def chosen_without_a_model(strategy: str | None, selection_reason: str | None) -> bool:
    """Whether a pair was chosen without looking at any model's scores: not by a round's active selection
    (strategy ``"active"``), or in its random slice.

    Only such pairs estimate how often annotators prefer one policy: active selection asks where the reward
    model sees little difference, so a win rate over its pairs is pulled towards one half, the more so the
    better the reward model (``benchmarks/loop_parts_bench.py``, section 2b).
    """
    return strategy != ACTIVE_STRATEGY or selection_reason == RANDOM_REASON


def round_priority_offset(earlier_rounds: int, step: float) -> float:
    """The priority a round adds to its pairs: one ``step`` above each earlier round that enqueued pairs.

    Selection's priorities are in (0, 1], so with ``step >= 1`` every pair of the newest round is served
    before any unlabelled pair of an older one: the newest policy's lists are the ones the next reward
    model most needs judged, and older rounds' leftovers wait (they are not discarded).
    """
    return step * (earlier_rounds + 1)


def to_pair_records(
    selected: Sequence[SelectedPair],
    *,
    overlap_target: int,
    round_id: str | None = None,
    strategy: str = ACTIVE_STRATEGY,
    priority_offset: float = 0.0,
    id_prefix: str = "pair",
) -> list[Any]:
    """Selected pairs as :class:`storage.records.Pair` rows ready for ``storage.generations.insert_pairs``.

    ``selection_reason`` is kept as chosen ('random' marks the unbiased slice); ``priority_offset`` lifts
    a round's pairs above (or below) what is already queued.
    """
    from storage.ids import new_id
    from storage.records import Pair

    return [
        Pair(
            pair_id=new_id(id_prefix),
            context_id=p.context_id,
            gen_a=p.gen_a,
            gen_b=p.gen_b,
            strategy=strategy,
            priority=priority_offset + p.priority,
            overlap_target=overlap_target,
            selection_reason=p.selection_reason,
            round_id=round_id,
        )
        for p in selected
    ]
