"""The baselines every policy is compared with, computed only from interactions strictly before the cut:
popularity, co-purchase and random draws from the context's own candidates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlhf.evaluation.lists import PolicyLists

if TYPE_CHECKING:
    from rlhf.evaluation.truth import GroundTruth


POPULARITY = "baseline:popularity"


COPURCHASE = "baseline:copurchase"


RANDOM_CANDIDATES = "baseline:random-candidates"


#: Lists drawn per context for the random-candidates baseline (its per-context mean is what is scored).
RANDOM_DRAWS = 50


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
