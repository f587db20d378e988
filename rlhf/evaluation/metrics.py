"""Metrics of one recommendation list: HR@N, NDCG@N, item validity, diversity, novelty, and catalogue
coverage over many lists. Pure functions of ids, sets and mappings."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


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
