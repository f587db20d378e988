"""Offline evaluation of recommendation lists on held-out contexts, with baselines.

What a list is worth is measured against **everything the shopper bought at or after the context's
as_of**, over the whole catalogue (no sampled negatives: sampled metrics can reverse rankings, Krichene
& Rendle 2020). Per policy:

- ``hr`` / ``ndcg`` — HR@N and NDCG@N (binary relevance, N = the list length), averaged over contexts
  that have at least one later purchase, with percentile-bootstrap 95% intervals over contexts;
- ``validity`` — share of lists the parser found valid; ``item_validity`` — share of listed items that
  are in the catalogue, among the context's candidates and not repeated;
- ``diversity`` — intra-list diversity: 1 − share of item pairs in a list with the same category (or,
  when the catalogue has no categories, 1 − mean Jaccard similarity of the titles' words);
- ``novelty`` — mean popularity rank of recommended items (1 = most popular; higher is more novel);
- ``coverage`` — distinct recommended items / catalogue size;
- reward-model ``win_rate`` of one policy over another, given scores;
- ``paired_difference`` of NDCG@N between two policies on the same contexts (:func:`compare_policies`,
  and in every round report, against the other policies and the baselines): whether a round beat its
  parent, the zero-shot model or popularity is a question about this interval, not about whether the two
  rows' own intervals overlap.

Baselines in the same table, computed only from interactions strictly before the cut: ``popularity``
(most-bought items) and ``co-purchase`` (items bought by the same shoppers as the context's history,
cosine-normalised, back-filled by popularity). The cut for a set of contexts is the *earliest* as_of
among them, so no context's baseline can see anything at or after its own cut. Like the candidates, they
never list an item the shopper bought before the context (``GroundTruth.owned``), not only the history
the prompt shows. A third baseline,
``random-candidates``, draws N of the context's own candidates at random (:data:`RANDOM_DRAWS` lists per
context, averaged): the floor for a policy that chooses among the candidates, which tells whether the
LLM's choice adds anything (on UCI zero-shot SmolLM2 does not: ``benchmarks/results/loop.md`` §2f).

Pure functions work on lists, sets and frames; :func:`load_ground_truth`, :func:`evaluate_policies` and
:func:`compare_policies` read the store through storage functions only; :func:`round_report` is what a
round stores as its evaluation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from rlhf.runtime import jsonable

POPULARITY = "baseline:popularity"
COPURCHASE = "baseline:copurchase"
RANDOM_CANDIDATES = "baseline:random-candidates"
#: Lists drawn per context for the random-candidates baseline (its per-context mean is what is scored).
RANDOM_DRAWS = 50
_WORD = re.compile(r"[a-z0-9]+")


# -- metrics on one list ---------------------------------------------------------------------------


def hit_rate_at_n(recommended: Sequence[str], relevant: Iterable[str], n: int | None = None) -> float:
    """1.0 if any of the first ``n`` recommended items is relevant, else 0.0."""
    rel = set(relevant)
    top = list(recommended)[: n if n is not None else None]
    return 1.0 if any(i in rel for i in top) else 0.0


def ndcg_at_n(recommended: Sequence[str], relevant: Iterable[str], n: int | None = None) -> float:
    """NDCG@n with binary relevance: DCG / ideal DCG, DCG = Σ 1/log2(rank + 1) over distinct hits.

    The ideal list puts min(n, |relevant|) relevant items first. An item repeated in the list earns
    nothing the second time. 0.0 when nothing is relevant.
    """
    rel = set(relevant)
    if not rel:
        return 0.0
    top = list(recommended)[: n if n is not None else None]
    n_eff = n if n is not None else len(top)
    seen: set[str] = set()
    dcg = 0.0
    for rank, item in enumerate(top, start=1):
        if item in rel and item not in seen:
            dcg += 1.0 / math.log2(rank + 1)
        seen.add(item)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(n_eff, len(rel)) + 1))
    return dcg / ideal if ideal > 0 else 0.0


def item_validity(items: Sequence[str], candidates: Iterable[str] | None, catalogue: Iterable[str]) -> list[bool]:
    """Per item: in the catalogue, among the candidates (when given) and not a repeat of an earlier item."""
    cat = catalogue if isinstance(catalogue, (set, frozenset)) else set(catalogue)
    cand = None if candidates is None else set(candidates)
    seen: set[str] = set()
    out = []
    for item in items:
        out.append(item in cat and (cand is None or item in cand) and item not in seen)
        seen.add(item)
    return out


def intra_list_diversity(
    items: Sequence[str], category_of: Mapping[str, str | None], title_of: Mapping[str, str] | None = None
) -> float:
    """1 − share of item pairs with the same category; title-word Jaccard when categories are missing.

    Categories are used when at least half of the list's items have one (pairs with an unknown
    category are skipped); otherwise 1 − the mean Jaccard similarity of the titles' word sets. NaN
    for lists of fewer than two distinct items or when neither is known.
    """
    distinct = list(dict.fromkeys(items))
    if len(distinct) < 2:
        return float("nan")
    cats = [category_of.get(i) for i in distinct]
    if sum(c is not None and c != "" for c in cats) * 2 >= len(distinct):
        same = total = 0
        for x in range(len(distinct)):
            for y in range(x + 1, len(distinct)):
                if cats[x] and cats[y]:
                    total += 1
                    same += cats[x] == cats[y]
        return 1.0 - same / total if total else float("nan")
    if not title_of:
        return float("nan")
    words = [set(_WORD.findall((title_of.get(i) or "").lower())) for i in distinct]
    sims = []
    for x in range(len(words)):
        for y in range(x + 1, len(words)):
            union = words[x] | words[y]
            if union:
                sims.append(len(words[x] & words[y]) / len(union))
    return 1.0 - float(np.mean(sims)) if sims else float("nan")


def novelty(items: Sequence[str], popularity_rank: Mapping[str, int], unseen_rank: int) -> float:
    """Mean popularity rank of the items (1 = most popular); items never bought before get ``unseen_rank``."""
    if not items:
        return float("nan")
    return float(np.mean([popularity_rank.get(i, unseen_rank) for i in items]))


def catalogue_coverage(lists: Iterable[Sequence[str]], catalogue: Iterable[str]) -> float:
    """Share of the catalogue that appears in at least one list (unknown ids are not counted)."""
    cat = set(catalogue)
    if not cat:
        return float("nan")
    shown = {i for items in lists for i in items if i in cat}
    return len(shown) / len(cat)


# -- intervals ----------------------------------------------------------------------------------------


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


# -- ground truth and baselines -------------------------------------------------------------------


@dataclass
class GroundTruth:
    """Everything evaluation needs about a set of held-out contexts, read once.

    ``future[context_id]`` holds the items bought at or after that context's as_of (targets only);
    ``owned[context_id]`` the items its shopper bought before it (never recommendable: candidates leave
    them out, and so do the baselines); ``popularity`` ranks items by buyers strictly before ``cut`` (the
    earliest as_of).
    """

    contexts: dict[str, Any]
    future: dict[str, set[str]]
    catalogue: set[str]
    category_of: dict[str, str | None]
    title_of: dict[str, str]
    popularity: list[str]
    cut: datetime
    list_length: int
    before: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    owned: dict[str, set[str]] = field(repr=False, default_factory=dict)

    @property
    def popularity_rank(self) -> dict[str, int]:
        return {item: rank for rank, item in enumerate(self.popularity, start=1)}


def popularity_ranking(interactions: pd.DataFrame, cut: Any, catalogue: Iterable[str] | None = None) -> list[str]:
    """Items ordered by distinct buyers strictly before ``cut`` (then total quantity, then id).

    Rows at or after the cut are dropped here, whatever the caller passed: the leakage guard lives in
    the function that would leak.
    """
    df = _before(interactions, cut)
    if catalogue is not None:
        df = df[df["item_id"].isin(set(catalogue))]
    if df.empty:
        return []
    qty = df["quantity"] if "quantity" in df else pd.Series(1, index=df.index)
    stats = (
        df.assign(quantity=qty)
        .groupby("item_id")
        .agg(buyers=("shopper_id", "nunique"), volume=("quantity", "sum"))
        .reset_index()
        .sort_values(["buyers", "volume", "item_id"], ascending=[False, False, True])
    )
    return stats["item_id"].tolist()


def popularity_lists(
    histories: Mapping[str, Sequence[str]], ranking: Sequence[str], n: int, *, exclude_history: bool = True,
    owned: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[str]]:
    """Per context, the ``n`` most popular items (skipping what the shopper already has, by default: the
    history and ``owned[context_id]``)."""
    out = {}
    for context_id, history in histories.items():
        seen = (set(history) | set((owned or {}).get(context_id, ()))) if exclude_history else set()
        out[context_id] = [i for i in _skip(ranking, seen, n)]
    return out


def copurchase_lists(
    histories: Mapping[str, Sequence[str]],
    interactions: pd.DataFrame,
    cut: Any,
    n: int,
    *,
    catalogue: Iterable[str] | None = None,
    exclude_history: bool = True,
    owned: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[str]]:
    """Per context, items most co-bought (by the same shoppers, before ``cut``) with its history, skipping
    the history and ``owned[context_id]`` (what the shopper already has) unless ``exclude_history`` is off.

    score(i) = Σ_h co(i, h) / sqrt(buyers(i) · buyers(h)) over history items h (item-item cosine on the
    shopper × item matrix); ties and empty scores are filled by popularity. Only interactions strictly
    before ``cut`` are used. The score is retrieval's own (:func:`rlhf.contexts.copurchase_scores`).
    """
    from scipy import sparse

    from rlhf.contexts import copurchase_scores

    df = _before(interactions, cut)
    if catalogue is not None:
        df = df[df["item_id"].isin(set(catalogue))]
    ranking = popularity_ranking(df, cut)
    if df.empty or not histories:
        return popularity_lists(histories, ranking, n, exclude_history=exclude_history, owned=owned)
    pairs = df[["shopper_id", "item_id"]].drop_duplicates()
    items = pd.Index(sorted(pairs["item_id"].unique()))
    shoppers = pd.Index(pairs["shopper_id"].unique())
    x = sparse.csr_matrix(
        (np.ones(len(pairs)), (shoppers.get_indexer(pairs["shopper_id"]), items.get_indexer(pairs["item_id"]))),
        shape=(len(shoppers), len(items)),
    )
    context_ids = list(histories)
    known = [items.get_indexer(list(dict.fromkeys(histories[cid]))) for cid in context_ids]
    scores = copurchase_scores(x, [idx[idx >= 0] for idx in known])
    pop_rank = {item: r for r, item in enumerate(ranking)}
    names = [str(i) for i in items]
    tiebreak = np.array([pop_rank.get(i, len(ranking)) for i in names], dtype=float)
    out = {}
    for col, cid in enumerate(context_ids):
        seen = (set(histories[cid]) | set((owned or {}).get(cid, ()))) if exclude_history else set()
        col_scores = scores[:, col]
        positive = np.flatnonzero(col_scores > 0)
        order = positive[np.lexsort((tiebreak[positive], -col_scores[positive]))]
        picked: list[str] = []
        for j in order:
            if len(picked) >= n:
                break
            if names[j] not in seen:
                picked.append(names[j])
        picked += _skip(ranking, seen | set(picked), n - len(picked))
        out[cid] = picked
    return out


def _before(interactions: pd.DataFrame, cut: Any) -> pd.DataFrame:
    if interactions.empty:
        return interactions
    ts = pd.to_datetime(interactions["ts"])
    return interactions[ts < pd.Timestamp(cut)]


def _skip(ranking: Sequence[str], seen: set[str], k: int) -> list[str]:
    out: list[str] = []
    for item in ranking:
        if len(out) >= k:
            break
        if item not in seen:
            out.append(item)
    return out


# -- evaluating a set of lists ----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyLists:
    """One policy's lists on the evaluation contexts: ``lists[context_id]`` = its lists (samples)."""

    policy_id: str
    lists: dict[str, list[list[str]]]
    valid: dict[str, list[bool]] | None = None
    kind: str = "llm"
    generation_ids: dict[str, list[str]] | None = None
    #: ``reasons[context_id]``: each list's reasons, parallel to ``lists`` (None: a baseline, no reasons).
    reasons: dict[str, list[list[str]]] | None = None

    def context_scores(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Per-context mean of ``generation_id -> score`` over this policy's generations."""
        gen_context = {g: c for c, gens in (self.generation_ids or {}).items() for g in gens}
        return context_mean_scores(scores, gen_context)


def context_ndcg(policy: PolicyLists, truth: GroundTruth) -> dict[str, float]:
    """NDCG@N of each evaluated context with later purchases (mean over the context's lists): the values
    whose mean is the table's NDCG, keyed by context so two policies can be compared pairwise."""
    n = truth.list_length
    return {c: float(np.mean([ndcg_at_n(items, truth.future[c], n) for items in lists]))
            for c, lists in policy.lists.items()
            if c in truth.contexts and lists and truth.future.get(c)}


def context_reasons_grounded(policy: PolicyLists, truth: GroundTruth) -> dict[str, float]:
    """The share of each evaluated context's listed items whose reason is about the item or the shopper's
    history (:func:`rlhf.reasons.reason_is_grounded`), over all its lists; keyed by context so two policies
    can be compared pairwise, and empty for a policy without reasons (a baseline)."""
    from rlhf.reasons import grounded_lines

    out: dict[str, float] = {}
    for context_id, said in (policy.reasons or {}).items():
        if context_id not in truth.contexts:
            continue
        history = [truth.title_of.get(h) for h in getattr(truth.contexts[context_id], "history", None) or []]
        flags = grounded_lines([(reason, truth.title_of.get(item), truth.category_of.get(item))
                                for items, reasons in zip(policy.lists.get(context_id, []), said)
                                for item, reason in zip(items, reasons)], history)
        if flags:
            out[context_id] = float(np.mean(flags))
    return out


def evaluate_lists(
    policy: PolicyLists, truth: GroundTruth, *, samples: int = 1000, seed: int = 0, check_candidates: bool = True
) -> dict[str, Any]:
    """All metrics of one policy's lists as a flat dict (one table row).

    Per-context values are averaged over that context's lists first, so a policy with more samples per
    context does not get a narrower interval for free. HR/NDCG use contexts with later purchases.
    Contexts are read in id order, so the bootstrap interval depends on the lists alone, not on the order
    they were collected in (the same policy gets the same interval in every round's report).
    ``reasons_grounded``: the share of listed items whose reason is about the item or the shopper's
    history (:mod:`rlhf.reasons`), per context and then averaged, with its interval; None for baselines.
    """
    n = truth.list_length
    rank = truth.popularity_rank
    unseen = len(truth.popularity) + 1
    hr, ndcg, div, nov, item_ok = [], [], [], [], []
    valid_lists = total_lists = 0
    all_lists: list[list[str]] = []
    for context_id, lists in sorted(policy.lists.items()):
        if context_id not in truth.contexts or not lists:
            continue
        context = truth.contexts[context_id]
        target = truth.future.get(context_id, set())
        if target:
            hr.append(np.mean([hit_rate_at_n(items, target, n) for items in lists]))
            ndcg.append(np.mean([ndcg_at_n(items, target, n) for items in lists]))
        div.append(np.nanmean([intra_list_diversity(items[:n], truth.category_of, truth.title_of) for items in lists])
                   if any(len(set(items)) > 1 for items in lists) else np.nan)
        nov.append(np.mean([novelty(items[:n], rank, unseen) for items in lists if items] or [np.nan]))
        candidates = getattr(context, "candidates", None) if check_candidates and policy.kind == "llm" else None
        for items in lists:
            item_ok.extend(item_validity(items, candidates, truth.catalogue))
            all_lists.append(items[:n])
        flags = (policy.valid or {}).get(context_id)
        total_lists += len(lists)
        valid_lists += sum(flags) if flags is not None else sum(
            len(items) == n and all(item_validity(items, candidates, truth.catalogue)) for items in lists
        )
    hr_e = bootstrap_ci(hr, samples=samples, seed=seed)
    ndcg_e = bootstrap_ci(ndcg, samples=samples, seed=seed)
    grounded = context_reasons_grounded(policy, truth)
    reasons_e = bootstrap_ci([grounded[c] for c in sorted(grounded)], samples=samples, seed=seed)
    return {
        "policy": policy.policy_id,
        "kind": policy.kind,
        "contexts": len([c for c in policy.lists if c in truth.contexts]),
        "contexts_with_targets": hr_e.n,
        "lists": total_lists,
        f"hr@{n}": hr_e.mean, "hr_lo": hr_e.lo, "hr_hi": hr_e.hi,
        f"ndcg@{n}": ndcg_e.mean, "ndcg_lo": ndcg_e.lo, "ndcg_hi": ndcg_e.hi,
        "validity": valid_lists / total_lists if total_lists else float("nan"),
        "item_validity": float(np.mean(item_ok)) if item_ok else float("nan"),
        "diversity": float(np.nanmean(div)) if np.isfinite(div).any() else float("nan"),
        "novelty": float(np.nanmean(nov)) if np.isfinite(nov).any() else float("nan"),
        "coverage": catalogue_coverage(all_lists, truth.catalogue),
        # None, not NaN, where there are no reasons to judge (baselines): not applicable rather than unknown.
        **({"reasons_grounded": reasons_e.mean, "reasons_lo": reasons_e.lo, "reasons_hi": reasons_e.hi} if reasons_e.n
           else {"reasons_grounded": None, "reasons_lo": None, "reasons_hi": None}),
    }


def baseline_lists(
    truth: GroundTruth, *, exclude_history: bool = True, context_ids: Iterable[str] | None = None
) -> list[PolicyLists]:
    """Popularity and co-purchase lists for the truth's contexts (or a subset), from data before the cut,
    and random draws from each context's candidates."""
    wanted = set(truth.contexts) if context_ids is None else set(context_ids) & set(truth.contexts)
    histories = {cid: list(getattr(c, "history", []) or []) for cid, c in truth.contexts.items() if cid in wanted}
    n = truth.list_length
    pop = popularity_lists(histories, truth.popularity, n, exclude_history=exclude_history, owned=truth.owned)
    co = copurchase_lists(histories, truth.before, truth.cut, n, catalogue=truth.catalogue,
                          exclude_history=exclude_history, owned=truth.owned)
    return [
        PolicyLists(POPULARITY, {c: [v] for c, v in pop.items()}, kind="baseline"),
        PolicyLists(COPURCHASE, {c: [v] for c, v in co.items()}, kind="baseline"),
        PolicyLists(RANDOM_CANDIDATES, random_candidate_lists({c: truth.contexts[c] for c in histories}, n),
                    kind="baseline"),
    ]


def random_candidate_lists(
    contexts: Mapping[str, Any], n: int, *, draws: int = RANDOM_DRAWS, seed: int = 0
) -> dict[str, list[list[str]]]:
    """``draws`` lists of ``n`` of each context's candidates in random order (contexts without candidates
    are left out). Each context has its own seeded generator, so a context gets the same lists whatever
    other contexts are evaluated with it."""
    import zlib

    out: dict[str, list[list[str]]] = {}
    for context_id, context in contexts.items():
        candidates = list(dict.fromkeys(getattr(context, "candidates", None) or []))
        if not candidates:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(context_id.encode())])
        k = min(n, len(candidates))
        out[context_id] = [[candidates[i] for i in rng.choice(len(candidates), size=k, replace=False)]
                           for _ in range(draws)]
    return out


def evaluation_table(
    policies: Sequence[PolicyLists], truth: GroundTruth, *, baselines: bool = True, samples: int = 1000,
    seed: int = 0, exclude_history: bool = True,
) -> pd.DataFrame:
    """One row per policy (and per baseline), the columns of :func:`evaluate_lists`.

    Baselines are computed on the contexts the policies have lists for (all of the truth's contexts
    when no policy is given), so that every row is measured on the same shoppers.
    """
    return evaluate_with_baselines(policies, truth, baselines=baselines, samples=samples, seed=seed,
                                   exclude_history=exclude_history)[0]


def long_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The table in long form for Altair charts: ``policy, kind, metric, value, lo, hi``.

    HR and NDCG carry their bootstrap interval; the other metrics have ``lo``/``hi`` empty.
    """
    rows = []
    for rec in table.to_dict(orient="records"):
        for col, value in rec.items():
            if col.startswith(("hr@", "ndcg@")):
                base = col.split("@")[0]
                rows.append((rec["policy"], rec["kind"], col, value, rec[f"{base}_lo"], rec[f"{base}_hi"]))
            elif col.startswith("reasons_grounded"):
                rows.append((rec["policy"], rec["kind"], col, value, rec.get("reasons_lo"), rec.get("reasons_hi")))
            elif col in ("validity", "item_validity", "diversity", "novelty", "coverage"):
                rows.append((rec["policy"], rec["kind"], col, value, np.nan, np.nan))
    return pd.DataFrame(rows, columns=["policy", "kind", "metric", "value", "lo", "hi"])


# -- reading the store ----------------------------------------------------------------------------


def future_purchases_from_store(
    store: Any, contexts: Sequence[Any], *, events: Sequence[str] | None = None
) -> dict[str, set[str]]:
    """``context_id -> items bought at or after its as_of`` (targets; never model inputs)."""
    from storage import evaluation_queries as q

    if not contexts:
        return {}
    frame = pd.DataFrame(
        {"context_id": [c.context_id for c in contexts], "shopper_id": [c.shopper_id for c in contexts],
         "as_of": [c.as_of for c in contexts]}
    )
    with store.transaction() as con:
        rows = q.future_interactions(con, frame, events=events)
    out: dict[str, set[str]] = {c.context_id: set() for c in contexts}
    for cid, item in zip(rows["context_id"], rows["item_id"]):
        out[cid].add(item)
    return out


def _heldout_truth(store: Any, settings: Any) -> GroundTruth:
    """Every held-out context's later purchases, counted as the round's evaluation counts them."""
    return load_ground_truth(store, split="heldout", list_length=settings.generation.list_length,
                             events=settings.rounds.eval_events or None)


def evaluation_context_ids(store: Any, settings: Any) -> list[str]:
    """The held-out contexts a round samples lists for and evaluates: up to ``rounds.eval_contexts``, those
    whose shopper bought something after the cut first (in id order), then the others.

    Only the first kind count for HR and NDCG. On real data most shoppers never come back (40 of UCI's
    first 94 held-out shoppers did), so taking contexts in id order spent most of a round's evaluation
    lists on shoppers who could not move its NDCG, and left the interval wide. The others still count
    for validity, diversity and the reward model's win rates, so they fill what is left.
    """
    wanted = settings.rounds.eval_contexts
    if wanted <= 0:
        return []
    truth = _heldout_truth(store, settings)
    ordered = sorted(truth.contexts, key=lambda c: (not truth.future.get(c), c))
    return ordered[:wanted]


def evaluable_contexts_without_lists(store: Any, settings: Any, policy_id: str, limit: int) -> list[str]:
    """Up to ``limit`` held-out contexts, in id order, whose shopper bought something after the cut and that
    have no list of ``policy_id`` yet: where new evaluation lists of a policy count for HR and NDCG (to
    re-measure a round on more shoppers than its own report had)."""
    from storage.generations import contexts_without_generations

    truth = _heldout_truth(store, settings)
    with store.transaction() as con:
        todo = set(contexts_without_generations(con, policy_id, split="heldout"))
    return sorted(c for c in truth.contexts if truth.future.get(c) and c in todo)[: max(0, limit)]


def load_ground_truth(
    store: Any, *, split: str | None = "heldout", context_ids: Sequence[str] | None = None,
    list_length: int = 5, events: Sequence[str] | None = None, limit: int | None = None,
) -> GroundTruth:
    """Read the evaluation contexts, their later purchases and the pre-cut interactions, in one unit of work."""
    from storage import contexts as contexts_repo
    from storage import evaluation_queries as q
    from storage.errors import NotFoundError

    with store.transaction() as con:
        if context_ids is not None:
            contexts = list(contexts_repo.get_contexts(con, list(context_ids)).values())
        else:
            contexts = contexts_repo.list_contexts(con, split=split, limit=limit)
        if not contexts:
            raise NotFoundError(f"No contexts to evaluate (split={split!r}). Build contexts first.")
        cut = min(c.as_of for c in contexts)
        frame = pd.DataFrame({"context_id": [c.context_id for c in contexts],
                              "shopper_id": [c.shopper_id for c in contexts],
                              "as_of": [c.as_of for c in contexts]})
        future_rows = q.future_interactions(con, frame, events=events)
        owned_rows = q.items_bought_before(con, frame, events=events)
        before = q.interactions_before(con, cut, events=events)
        items = q.item_categories(con)
    catalogue = set(items["item_id"])
    future: dict[str, set[str]] = {c.context_id: set() for c in contexts}
    for cid, item in zip(future_rows["context_id"], future_rows["item_id"]):
        if item in catalogue:
            future[cid].add(item)
    owned: dict[str, set[str]] = {c.context_id: set() for c in contexts}
    for cid, item in zip(owned_rows["context_id"], owned_rows["item_id"]):
        owned[cid].add(item)
    return GroundTruth(
        contexts={c.context_id: c for c in contexts},
        future=future,
        catalogue=catalogue,
        category_of={i: (c if isinstance(c, str) and c else None) for i, c in zip(items["item_id"], items["category"])},
        title_of=dict(zip(items["item_id"], items["title"].fillna(""))),
        popularity=popularity_ranking(before, cut, catalogue),
        cut=pd.Timestamp(cut).to_pydatetime(),
        list_length=list_length,
        before=before,
        owned=owned,
    )


def policy_lists_from_store(store: Any, policy_id: str, context_ids: Sequence[str]) -> PolicyLists:
    """A policy's generations on the given contexts, as lists of item ids with validity flags."""
    from storage import generations as gen_repo

    with store.transaction() as con:
        gens = gen_repo.generations_for_contexts(con, list(context_ids), policy_id=policy_id)
    return policy_lists(policy_id, gens)


def policy_lists(policy_id: str, generations: Iterable[Any]) -> PolicyLists:
    """``policy_id``'s lists among ``generations`` (records with ``policy_id``, ``context_id``, ``items``,
    ``is_valid``, ``generation_id``), grouped by context; the others are ignored."""
    lists: dict[str, list[list[str]]] = {}
    valid: dict[str, list[bool]] = {}
    gen_ids: dict[str, list[str]] = {}
    reasons: dict[str, list[list[str]]] = {}
    for g in generations:
        if g.policy_id != policy_id:
            continue
        lists.setdefault(g.context_id, []).append([i.item_id for i in g.items])
        reasons.setdefault(g.context_id, []).append([i.reason for i in g.items])
        valid.setdefault(g.context_id, []).append(bool(g.is_valid))
        gen_ids.setdefault(g.context_id, []).append(g.generation_id)
    return PolicyLists(policy_id, lists, valid, generation_ids=gen_ids, reasons=reasons)


def evaluate_policies(
    store: Any, policy_ids: Sequence[str], *, settings: Any = None, split: str = "heldout",
    baselines: bool = True, limit: int | None = None,
) -> pd.DataFrame:
    """The evaluation table for stored policies on a split, with the baselines beside them (no paired
    differences: :func:`compare_policies` adds those, at one bootstrap per compared row)."""
    return _evaluate_stored(store, policy_ids, settings=settings, split=split, baselines=baselines, limit=limit)[0]


def compare_policies(
    store: Any, policy_ids: Sequence[str], *, settings: Any = None, split: str = "heldout",
    baselines: bool = True, limit: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Estimate], dict[str, Estimate]]:
    """:func:`evaluate_policies`' table; the first policy's NDCG@N minus each other's and each
    baseline's, paired over the contexts both have lists for; and its share of grounded reasons minus
    each other policy's, paired likewise (the store is read once for all three)."""
    from rlhf.settings import get_settings

    settings = settings or get_settings()
    table, truth, lists = _evaluate_stored(store, policy_ids, settings=settings, split=split, baselines=baselines,
                                           limit=limit)
    r = settings.rounds
    differences = paired_ndcg_differences(lists, truth, [*policy_ids, *baseline_ids(lists)],
                                          samples=r.eval_bootstrap_samples, seed=r.eval_seed)
    reasons = paired_reason_differences(lists, truth, list(policy_ids), samples=r.eval_bootstrap_samples,
                                        seed=r.eval_seed)
    return table, differences, reasons


def _evaluate_stored(
    store: Any, policy_ids: Sequence[str], *, settings: Any, split: str, baselines: bool, limit: int | None
) -> tuple[pd.DataFrame, GroundTruth, dict[str, PolicyLists]]:
    from rlhf.errors import RecFeedbackError
    from rlhf.settings import get_settings

    settings = settings or get_settings()
    r = settings.rounds
    _require_known_policies(store, policy_ids)
    truth = load_ground_truth(store, split=split, list_length=settings.generation.list_length,
                              events=r.eval_events or None, limit=limit)
    policies = {pid: policy_lists_from_store(store, pid, list(truth.contexts)) for pid in policy_ids}
    empty = [pid for pid, p in policies.items() if not p.lists]
    if empty and len(empty) == len(policies) and not baselines:
        raise RecFeedbackError(f"Policy {', '.join(empty)} has no lists on the {split} contexts.")
    table, evaluated = evaluate_with_baselines(
        [p for p in policies.values() if p.lists], truth, baselines=baselines, samples=r.eval_bootstrap_samples,
        seed=r.eval_seed, exclude_history=r.eval_exclude_history)
    return table, truth, {**policies, **evaluated}


def _require_known_policies(store: Any, policy_ids: Sequence[str]) -> None:
    """Refuse ids the store has never registered (a typo would otherwise evaluate as 'no lists')."""
    from rlhf.errors import RecFeedbackError
    from storage.generations import list_policies

    with store.transaction() as con:
        known = sorted(p.policy_id for p in list_policies(con))
    unknown = [pid for pid in dict.fromkeys(policy_ids) if pid not in set(known)]
    if unknown:
        shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise RecFeedbackError(f"No policy with id {', '.join(map(repr, unknown))} in this store. "
                               f"Known policies: {shown or 'none yet'}.")


def evaluate_with_baselines(
    policies: Sequence[PolicyLists], truth: GroundTruth, *, baselines: bool = True, samples: int = 1000,
    seed: int = 0, exclude_history: bool = True,
) -> tuple[pd.DataFrame, dict[str, PolicyLists]]:
    """:func:`evaluation_table`, and every row's lists by policy id (the baselines' included), so that
    a policy can be compared with a baseline shopper by shopper (:func:`paired_ndcg_differences`)."""
    evaluated = list(policies)
    if baselines:  # on the contexts the policies have lists for: every row measured on the same shoppers
        covered = {c for p in evaluated for c, lists in p.lists.items() if lists} or None
        evaluated += baseline_lists(truth, exclude_history=exclude_history, context_ids=covered)
    table = pd.DataFrame([evaluate_lists(p, truth, samples=samples, seed=seed) for p in evaluated])
    return table, {p.policy_id: p for p in evaluated}


def baseline_ids(lists: Mapping[str, PolicyLists]) -> list[str]:
    """The ids of the baselines among ``lists`` (to compare a policy with each of them)."""
    return [k for k, p in lists.items() if p.kind == "baseline"]


def paired_ndcg_differences(lists: Mapping[str, PolicyLists], truth: GroundTruth, ids: Sequence[str], *,
                            samples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """NDCG@N of policy ``ids[0]`` minus each later id's, paired over contexts (ids without lists are skipped;
    nothing at all when ``ids[0]`` has none)."""
    if not any(lists[ids[0]].lists.values()):
        return {}
    first = context_ndcg(lists[ids[0]], truth)
    return {other: paired_difference(first, context_ndcg(lists[other], truth), samples=samples, seed=seed)
            for other in ids[1:] if other in lists and lists[other].lists and other != ids[0]}


def paired_reason_differences(lists: Mapping[str, PolicyLists], truth: GroundTruth, ids: Sequence[str], *,
                              samples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """The share of grounded reasons of policy ``ids[0]`` minus each later policy's that writes reasons,
    paired over contexts (:func:`context_reasons_grounded`); nothing when ``ids[0]`` has none."""
    first = context_reasons_grounded(lists[ids[0]], truth) if ids and ids[0] in lists else {}
    if not first:
        return {}
    out = {}
    for other in ids[1:]:
        theirs = context_reasons_grounded(lists[other], truth) if other in lists and other != ids[0] else {}
        if theirs:
            out[other] = paired_difference(first, theirs, samples=samples, seed=seed)
    return out


def round_report(
    policies: Sequence[PolicyLists],
    truth: GroundTruth,
    new_policy: str,
    *,
    previous_policy_id: str | None = None,
    zero_shot_policy_id: str | None = None,
    rm_scores: Mapping[str, float] | None = None,
    round_id: str | None = None,
    split: str = "heldout",
    samples: int = 1000,
    seed: int = 0,
    exclude_history: bool = True,
) -> dict[str, Any]:
    """A round's evaluation, JSON-ready for the store and the dashboard: the table with the baselines,
    the headline row, the new policy's NDCG minus every other row's and its share of grounded reasons
    minus its parent's and the zero-shot model's (both paired over shoppers) and, given
    ``rm_scores`` (generation id → the round's reward-model score), its reward-model win rate over the
    previous and the zero-shot policy."""
    table, by_policy = evaluate_with_baselines(policies, truth, samples=samples, seed=seed,
                                               exclude_history=exclude_history)
    records = jsonable(table.to_dict(orient="records"))
    report: dict[str, Any] = {
        "policy_id": new_policy, "previous_policy_id": previous_policy_id,
        "zero_shot_policy_id": zero_shot_policy_id, "round_id": round_id, "split": split,
        "list_length": truth.list_length, "cut": truth.cut.isoformat(), "table": records,
        "headline": next((r for r in records if r["policy"] == new_policy), None),
    }
    if new_policy not in by_policy:
        return report
    for key, other in (("rm_win_rate", previous_policy_id), ("rm_win_rate_vs_zero_shot", zero_shot_policy_id)):
        if rm_scores is not None and other in by_policy and other != new_policy:
            est = win_rate(by_policy[new_policy].context_scores(rm_scores), by_policy[other].context_scores(rm_scores),
                           samples=samples, seed=seed)
            report[key] = jsonable(asdict(est))
    others = [p for p in dict.fromkeys((previous_policy_id, zero_shot_policy_id)) if p]
    report["ndcg_difference"] = {k: jsonable(asdict(v)) for k, v in paired_ndcg_differences(
        by_policy, truth, [new_policy, *others, *baseline_ids(by_policy)], samples=samples, seed=seed).items()}
    report["reasons_difference"] = {k: jsonable(asdict(v)) for k, v in paired_reason_differences(
        by_policy, truth, [new_policy, *others], samples=samples, seed=seed).items()}
    return report
