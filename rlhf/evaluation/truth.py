"""What the held-out shoppers bought later (the targets), read from the store once, and which held-out
contexts a round evaluates. Targets are never model inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from rlhf.evaluation.baselines import popularity_ranking


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
