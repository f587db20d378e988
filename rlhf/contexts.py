"""Contexts: a shopper at a point in time, with their history and K candidate items to recommend from.

A context is what the policy sees: the shopper's purchases BEFORE ``as_of`` (most recent first,
distinct, capped at ``settings.contexts.history_cap``) and ``settings.contexts.n_candidates``
candidate items retrieved cheaply from data before ``as_of``:

- ``copurchase``: items bought together with the shopper's history (``copurchase_similarity = "item"``,
  default: item-item cosine on the shopper x item matrix, summed over the shown history, the score of the
  evaluation's co-purchase baseline; ``"user"``: items bought by the ``copurchase_neighbors`` shoppers
  most similar to this one, user-kNN);
- ``category``: the most popular items in the shopper's categories, in proportion to how often the
  shopper bought from each;
- ``popularity``: the most popular items overall (distinct buyers);
- ``mixed`` (default): co-purchase, category and popularity blended by ``mixed_shares``. With
  ``candidate_order = "relevance"`` (default) the blend is then ordered by its item-item co-purchase
  score with the shown history, then popularity: small LLMs copy the top of a candidate list more than
  the rest (SmolLM2 zero-shot on UCI: 64-70% of its picks among the first 5 of 15), so the order the policy
  sees is a ranking in its own right. ``"interleaved"`` keeps the blend in source order.

Every strategy backfills with popularity when it finds too few. Candidates NEVER include an item the
shopper bought before ``as_of``, and nothing here uses any interaction at or after ``as_of`` (neither the
shopper's nor anyone else's): popularity and co-occurrence are recomputed for each cut time from the
purchases strictly before it. Ties are broken by item id, so the same data gives the same contexts.

Context ids are ``ctx_{shopper}_{as_of:%Y%m%d%H%M}``; a deterministic hash of the shopper id puts about
``heldout_fraction`` of shoppers (all their contexts) in the ``heldout`` split.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from rlhf.errors import RecFeedbackError
from rlhf.settings import ContextSettings, Settings, get_settings
from rlhf.wording import counted
from storage import Store
from storage import catalog as catalog_repo
from storage import contexts as contexts_repo
from storage.records import Context

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("mixed", "copurchase", "category", "popularity")
#: Contexts scored together by :func:`copurchase_scores` (bounds the dense items x contexts block).
_SCORE_CHUNK = 256
#: Contexts between two progress reports (one cut can hold every shopper).
_PROGRESS_EVERY = 256
#: Called as ``progress(done, total)`` with the number of contexts computed so far.
ProgressCallback = Callable[[int, int], None]


class ContextBuildError(RecFeedbackError):
    """Contexts cannot be built (no purchases, unknown strategy, ...)."""


@dataclass(frozen=True)
class ContextBuildReport:
    """What ``contexts build`` did."""

    built: int
    skipped_existing: int
    too_short: int
    heldout: int
    strategy: str
    seconds: float
    #: Of the built contexts, those whose shopper bought something at or after the cut: what evaluation scores.
    bought_after: int = 0
    last_purchase: datetime | None = None

    def summary(self) -> str:
        text = (
            f"Built {counted(self.built, 'context')} ({self.heldout:,} held out) with '{self.strategy}' retrieval in "
            f"{self.seconds:.1f} s; kept {self.skipped_existing:,} existing (with --replace: those with lists); "
            f"{self.too_short:,} shoppers had too little history before the cut."
        )
        if self.built and not self.bought_after:
            last = f" (the last purchase is on {self.last_purchase:%Y-%m-%d})" if self.last_purchase else ""
            return (text + f" None of their shoppers bought anything after the cut{last}, so an evaluation on them "
                    "has nothing to score: choose a cut inside the data.")
        return text + f" {self.bought_after:,} of them bought again after the cut (what evaluations score)."


def context_id(shopper_id: str, as_of: datetime | pd.Timestamp) -> str:
    """The deterministic id of a shopper's context at ``as_of`` (minute resolution)."""
    return f"ctx_{shopper_id}_{pd.Timestamp(as_of):%Y%m%d%H%M}"


def split_for(shopper_id: str, heldout_fraction: float, seed: int) -> str:
    """'heldout' for a stable ~heldout_fraction of shoppers (hash of seed and id), else 'train'."""
    digest = hashlib.sha256(f"{seed}:{shopper_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "heldout" if u < heldout_fraction else "train"


def default_cuts(purchases: pd.DataFrame) -> pd.DataFrame:
    """Each shopper's cut: midnight of their last purchase day, so their last day is an evaluable future."""
    last = purchases.groupby("shopper_id", sort=True)["ts"].max()
    return pd.DataFrame({"shopper_id": last.index.to_numpy(), "as_of": last.dt.floor("D").to_numpy()})


# --- the pure computation ----------------------------------------------------------------------------


def compute_contexts(
    purchases: pd.DataFrame,
    catalog: pd.DataFrame,
    cuts: pd.DataFrame,
    *,
    cfg: ContextSettings,
    strategy: str | None = None,
    progress: ProgressCallback | None = None,
) -> list[Context]:
    """Contexts for each (shopper_id, as_of) in ``cuts`` from ``purchases`` (shopper_id, item_id, ts).

    Pure (no store): the same frames give the same contexts. Cuts whose shopper has fewer than
    ``cfg.min_history`` distinct items bought before the cut are skipped.
    """
    strategy = strategy or cfg.retrieval
    if strategy not in STRATEGIES:
        raise ContextBuildError(
            f"Unknown retrieval strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}."
        )
    item_ids = np.asarray(sorted(catalog["item_id"].astype(str)), dtype=object)
    if len(item_ids) == 0 or purchases.empty or cuts.empty:
        return []
    cat_of = catalog.set_index(catalog["item_id"].astype(str))["category"].reindex(item_ids)
    cat_codes, _ = pd.factorize(cat_of.fillna("").to_numpy(), sort=True)
    item_code = pd.Index(item_ids)

    p = purchases[purchases["item_id"].isin(item_code)]
    shoppers = np.asarray(
        sorted(set(p["shopper_id"].unique().tolist()) | set(cuts["shopper_id"].unique().tolist())),
        dtype=object,
    )
    shopper_code = pd.Index(shoppers)
    s = shopper_code.get_indexer(p["shopper_id"])
    i = item_code.get_indexer(p["item_id"])
    t = p["ts"].to_numpy(dtype="datetime64[us]").astype(np.int64)

    # Per shopper, purchases sorted by time (then item code): history and "bought before" come from here.
    order = np.lexsort((i, t, s))
    hs, hi, ht = s[order], i[order], t[order]
    bounds = np.searchsorted(hs, np.arange(len(shoppers) + 1))

    # First purchase of each (shopper, item) pair, sorted by time: B_t is a prefix of these.
    first = pd.DataFrame({"s": s, "i": i, "t": t}).groupby(["s", "i"], sort=False)["t"].min().reset_index()
    first = first.sort_values(["t", "s", "i"], kind="stable")
    fs, fi, ft = (first[c].to_numpy() for c in ("s", "i", "t"))

    cut_s = shopper_code.get_indexer(cuts["shopper_id"])
    cut_t = pd.to_datetime(cuts["as_of"]).to_numpy(dtype="datetime64[us]").astype(np.int64)
    todo = np.lexsort((cut_s, cut_t))
    total = len(todo)
    if progress is not None:  # from zero, so that a bar's rate counts the first cut's time too
        progress(0, total)
    out: list[Context] = []
    done = 0
    n_items = len(item_ids)
    k = cfg.n_candidates
    for t_cut in np.unique(cut_t[todo]):
        group = todo[cut_t[todo] == t_cut]
        n = int(np.searchsorted(ft, t_cut, side="left"))
        b = sparse.csr_matrix(
            (np.ones(n, dtype=np.float32), (fs[:n], fi[:n])), shape=(len(shoppers), n_items)
        )
        pop = np.asarray(b.sum(axis=0)).ravel()
        pop_order = np.lexsort((np.arange(n_items), -pop))
        cat_order = np.lexsort((np.arange(n_items), -pop, cat_codes))
        cat_bounds = np.searchsorted(cat_codes[cat_order], np.arange(cat_codes.max() + 2))
        users = cut_s[group]
        histories: list[np.ndarray] = []
        bought_sets: list[np.ndarray] = []
        keep: list[bool] = []
        for u in users:
            lo, hi_ = bounds[u], bounds[u + 1]
            cut = lo + int(np.searchsorted(ht[lo:hi_], t_cut, side="left"))
            seq = hi[lo:cut][::-1]
            distinct = np.asarray(list(dict.fromkeys(seq.tolist())), dtype=np.int64)
            histories.append(distinct)
            bought_sets.append(distinct)
            keep.append(len(distinct) >= cfg.min_history)
        wants_co = strategy in ("mixed", "copurchase")
        item_based = wants_co and cfg.copurchase_similarity == "item"
        by_relevance = strategy == "mixed" and cfg.candidate_order == "relevance"
        co_lists = (
            _copurchase_rankings(b, users, cfg.copurchase_neighbors, k + 64)
            if wants_co and not item_based
            else [None] * len(users)
        )
        shown = [h[: cfg.history_cap] for h in histories]
        block = np.zeros((n_items, 0))
        for row, (gi, u) in enumerate(zip(group, users)):
            done += 1
            if progress is not None and done % _PROGRESS_EVERY == 0:
                progress(done, total)
            if (item_based or by_relevance) and row % _SCORE_CHUNK == 0:
                block = copurchase_scores(b, shown[row : row + _SCORE_CHUNK])
            if not keep[row]:
                continue
            together = block[:, row % _SCORE_CHUNK] if (item_based or by_relevance) else None
            excluded = np.zeros(n_items, dtype=bool)
            excluded[bought_sets[row]] = True
            pop_list = _take(pop_order, excluded, k)
            cat_list = (
                _category_ranking(bought_sets[row], cat_codes, cat_order, cat_bounds, excluded, k)
                if strategy in ("mixed", "category")
                else []
            )
            if item_based:
                co_list = _top_scored(together, pop, excluded, k)
            else:
                co_list = [j for j in (co_lists[row] or []) if not excluded[j]][:k]
            chosen = _blend(strategy, co_list, cat_list, pop_list, k, cfg.mixed_shares)
            if by_relevance:
                blended = {j: n for n, j in enumerate(chosen)}
                chosen = sorted(chosen, key=lambda j: (-together[j], -pop[j], blended[j]))
            as_of = pd.Timestamp(int(t_cut), unit="us").to_pydatetime()
            shopper = str(shoppers[u])
            out.append(
                Context(
                    context_id=context_id(shopper, as_of),
                    shopper_id=shopper,
                    as_of=as_of,
                    history=[str(item_ids[j]) for j in histories[row][: cfg.history_cap]],
                    candidates=[str(item_ids[j]) for j in chosen],
                    retrieval=strategy,
                    split=split_for(shopper, cfg.heldout_fraction, cfg.seed),
                )
            )
        if progress is not None:
            progress(done, total)
    out.sort(key=lambda c: c.context_id)
    return out


def _take(order: np.ndarray, excluded: np.ndarray, k: int) -> list[int]:
    """The first k entries of ``order`` that are not excluded."""
    if k <= 0:
        return []
    allowed = order[~excluded[order]]
    return allowed[:k].tolist()


def _category_ranking(
    bought: np.ndarray,
    cat_codes: np.ndarray,
    cat_order: np.ndarray,
    cat_bounds: np.ndarray,
    excluded: np.ndarray,
    k: int,
) -> list[int]:
    """Popular items in the shopper's categories, interleaved in proportion to how often they bought each."""
    if len(bought) == 0:
        return []
    cats, counts = np.unique(cat_codes[bought], return_counts=True)
    weights = counts / counts.sum()
    keyed: list[tuple[float, int, int]] = []
    for c, w in zip(cats, weights):
        members = cat_order[cat_bounds[c] : cat_bounds[c + 1]]
        for rank, j in enumerate(_take(members, excluded, k)):
            keyed.append(((rank + 1) / w, int(c), j))
    keyed.sort()
    return [j for _, _, j in keyed[:k]]


def _copurchase_rankings(b: sparse.csr_matrix, users: np.ndarray, neighbours: int, k: int) -> list[list[int]]:
    """For each user: items bought by their nearest neighbours (cosine over items bought before the cut)."""
    deg = np.asarray(b.sum(axis=1)).ravel()
    bt = b.T.tocsr()
    results: list[list[int]] = []
    for start in range(0, len(users), 256):
        chunk = users[start : start + 256]
        overlap = (b[chunk] @ bt).tocsr()
        overlap.eliminate_zeros()
        overlap.sort_indices()
        rows = np.repeat(np.arange(len(chunk)), np.diff(overlap.indptr))
        cols = overlap.indices
        denom = np.sqrt(np.maximum(deg[chunk][rows] * deg[cols], 1.0))
        sim = overlap.data / denom
        sim[cols == chunk[rows]] = 0.0  # not your own neighbour
        # Within each row: most similar first; the stable sort keeps ties in shopper-code order.
        order = np.argsort(rows * 4.0 + (2.0 - sim), kind="stable")
        rows_o, cols_o, sim_o = rows[order], cols[order], sim[order]
        first_of_row = np.searchsorted(rows_o, np.arange(len(chunk)))
        rank = np.arange(len(rows_o)) - first_of_row[rows_o]
        sel = (rank < neighbours) & (sim_o > 0)
        nn = sparse.csr_matrix((sim_o[sel], (rows_o[sel], cols_o[sel])), shape=(len(chunk), b.shape[0]))
        scores = (nn @ b).tocsr()
        for r in range(len(chunk)):
            lo, hi = scores.indptr[r], scores.indptr[r + 1]
            idx, val = scores.indices[lo:hi], scores.data[lo:hi]
            top = np.lexsort((idx, -val))
            results.append(idx[top][:k].tolist())
    return results


def _blend(
    strategy: str,
    co: list[int],
    cat: list[int],
    pop: list[int],
    k: int,
    shares: Sequence[float],
) -> list[int]:
    """Combine the rankings for a strategy, interleaving sources, backfilling with popularity, no repeats."""
    if strategy == "popularity":
        sources, weights = [pop], [1.0]
    elif strategy == "copurchase":
        sources, weights = [co, pop], [1.0, 1e-9]
    elif strategy == "category":
        sources, weights = [cat, pop], [1.0, 1e-9]
    else:
        sources, weights = [co, cat, pop], [max(float(w), 1e-9) for w in shares]
    quotas = _largest_remainder(k, weights)
    chosen: list[tuple[float, int, int]] = []
    seen: set[int] = set()
    positions = [0] * len(sources)
    taken = [0] * len(sources)
    # First each source up to its quota, then backfill from the sources in order.
    for phase in ("quota", "backfill"):
        for si, source in enumerate(sources):
            while positions[si] < len(source) and len(chosen) < k:
                if phase == "quota" and taken[si] >= quotas[si]:
                    break
                j = source[positions[si]]
                positions[si] += 1
                if j in seen:
                    continue
                seen.add(j)
                chosen.append(((taken[si] + 0.5) / weights[si], si, j))
                taken[si] += 1
    chosen.sort()
    return [j for _, _, j in chosen]


def copurchase_scores(bought: sparse.spmatrix, histories: Sequence[np.ndarray]) -> np.ndarray:
    """Items x contexts: how strongly each item is bought together with each context's history.

    score(i) = sum over history items h of co(i, h) / sqrt(buyers(i) * buyers(h)), item-item cosine on
    ``bought`` (shoppers x items, 1 where a shopper bought the item; only data before the cut). One
    formula for retrieval and for the evaluation's co-purchase baseline, so they cannot drift apart. A
    shopper's own row adds nothing to items they never bought.
    """
    x = sparse.csr_matrix(bought, dtype=np.float64)
    buyers = np.asarray(x.sum(axis=0)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(buyers, 1.0))
    rows = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if histories else np.zeros(0, int)
    cols = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    h = sparse.csr_matrix((inv[rows], (rows, cols)), shape=(x.shape[1], len(histories)))
    scores = np.asarray((x.T @ (x @ h)).todense()) * inv[:, None]
    # Rounded so that equal sums reached in a different order tie exactly and popularity decides.
    return np.round(scores, 12)


def _top_scored(scores: np.ndarray, pop: np.ndarray, excluded: np.ndarray, k: int) -> list[int]:
    """Up to k items with a positive score that are not excluded, best first (then popularity, then code)."""
    positive = np.flatnonzero((scores > 0) & ~excluded)
    order = positive[np.lexsort((positive, -pop[positive], -scores[positive]))]
    return order[:k].tolist()


def _largest_remainder(k: int, weights: Sequence[float]) -> list[int]:
    total = sum(weights)
    raw = [k * w / total for w in weights]
    quotas = [int(x) for x in raw]
    for idx in sorted(range(len(raw)), key=lambda n: (-(raw[n] - quotas[n]), n))[: k - sum(quotas)]:
        quotas[idx] += 1
    return quotas


# --- the service -------------------------------------------------------------------------------------


def build_contexts(
    store: Store,
    *,
    settings: Settings | None = None,
    as_of: datetime | str | None = None,
    strategy: str | None = None,
    limit: int | None = None,
    replace: bool = False,
    progress: ProgressCallback | None = None,
) -> ContextBuildReport:
    """Build and store contexts for the store's shoppers.

    ``as_of``: one cut time for every shopper; None gives each shopper the midnight before their last
    purchase day. ``limit``: at most this many new contexts, taking shoppers in a stable pseudo-random
    order. Existing context ids are kept unless ``replace``; even then a context that has lists stays as
    it is, since its lists, pairs and labels name its candidates (a rebuilt one would pair old answers with
    new candidates in every export and reward model). Reads in one unit of work, computes outside any
    transaction, writes in one.
    """
    settings = settings or get_settings()
    cfg = settings.contexts
    strategy = strategy or cfg.retrieval
    if strategy not in STRATEGIES:
        raise ContextBuildError(
            f"Unknown retrieval strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}."
        )
    started = time.perf_counter()
    with store.transaction() as con:
        purchases = catalog_repo.interactions_frame(con, events=["purchase"])
        catalog = catalog_repo.catalog_frame(con)
    if purchases.empty:
        raise ContextBuildError(
            "There are no purchases in the store; import interactions or run `init --demo` first."
        )
    purchases = purchases[["shopper_id", "item_id", "ts"]]

    if as_of is None:
        cuts = default_cuts(purchases)
    else:
        cut = pd.Timestamp(as_of)
        if cut.tzinfo is not None:
            cut = cut.tz_convert("UTC").tz_localize(None)
        cuts = pd.DataFrame({"shopper_id": sorted(purchases["shopper_id"].unique()), "as_of": cut})
    # Who has enough distinct items before their cut (vectorised), so that --limit counts real contexts.
    firsts = purchases.groupby(["shopper_id", "item_id"], sort=False)["ts"].min().reset_index()
    merged = firsts.merge(cuts, on="shopper_id")
    enough = merged[merged["ts"] < merged["as_of"]].groupby("shopper_id").size()
    eligible = cuts[cuts["shopper_id"].map(enough).fillna(0) >= cfg.min_history].copy()
    too_short = len(cuts) - len(eligible)
    eligible["context_id"] = [context_id(s, t) for s, t in zip(eligible["shopper_id"], eligible["as_of"])]
    skipped = 0
    if len(eligible):
        with store.transaction() as con:
            existing = contexts_repo.existing_context_ids(con, eligible["context_id"].tolist(), with_lists=replace)
        skipped = int(eligible["context_id"].isin(existing).sum())
        eligible = eligible[~eligible["context_id"].isin(existing)]
    if limit is not None:
        # A different salt than split_for: ordering by the split hash would pick only held-out shoppers.
        rank = [hashlib.sha256(f"limit:{cfg.seed}:{s}".encode()).hexdigest() for s in eligible["shopper_id"]]
        eligible = eligible.assign(_rank=rank).sort_values(["_rank", "context_id"]).head(max(int(limit), 0))

    contexts = compute_contexts(
        purchases, catalog, eligible[["shopper_id", "as_of"]], cfg=cfg, strategy=strategy, progress=progress
    )
    with store.transaction() as con:
        contexts_repo.insert_contexts_bulk(con, contexts)
    built = eligible[eligible["context_id"].isin({c.context_id for c in contexts})]
    after = purchases.merge(built[["shopper_id", "as_of"]], on="shopper_id")
    report = ContextBuildReport(
        built=len(contexts),
        skipped_existing=skipped,
        too_short=too_short,
        heldout=sum(c.split == "heldout" for c in contexts),
        strategy=strategy,
        seconds=time.perf_counter() - started,
        bought_after=int(after.loc[after["ts"] >= after["as_of"], "shopper_id"].nunique()),
        last_purchase=pd.Timestamp(purchases["ts"].max()).to_pydatetime(),
    )
    log.info(report.summary())
    return report


# --- evaluation only ---------------------------------------------------------------------------------


def future_purchases(store: Store, context: Context) -> set[str]:
    """EVALUATION ONLY: the items the context's shopper bought at or after its ``as_of``.

    This is exactly the information a context must not contain; use it to score recommendations offline
    (hit rate, NDCG against what the shopper really bought next), never to build prompts or candidates.
    """
    return future_purchases_many(store, [context]).get(context.context_id, set())


def future_purchases_many(store: Store, contexts: Sequence[Context]) -> dict[str, set[str]]:
    """EVALUATION ONLY: :func:`future_purchases` for many contexts in one query (context_id -> items)."""
    if not contexts:
        return {}
    cuts = pd.DataFrame(
        {
            "key": [c.context_id for c in contexts],
            "shopper_id": [c.shopper_id for c in contexts],
            "as_of": pd.to_datetime([c.as_of for c in contexts]),
        }
    )
    with store.transaction() as con:
        frame = catalog_repo.purchases_at_or_after(con, cuts)
    out: dict[str, set[str]] = {c.context_id: set() for c in contexts}
    for key, item in zip(frame["key"], frame["item_id"]):
        out[key].add(item)
    return out


def as_of_for(value: Any) -> pd.Timestamp:
    """Parse a user's ``--as-of`` value ("2011-09-01", "2011-09-01T12:00")."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ContextBuildError(
            f"--as-of {value!r} is not a date or date and time (e.g. 2011-09-01)."
        ) from exc
    if ts is pd.NaT:
        raise ContextBuildError(f"--as-of {value!r} is not a date.")
    return ts
