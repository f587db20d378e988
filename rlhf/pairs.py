"""Choosing which two lists annotators compare, and putting those pairs in the labelling queue.

Strategies (:data:`STRATEGIES`):

- ``same_policy``: two samples of one policy for a context (what a reward model learns most from
  early on: same prompt, same model, different choices);
- ``new_vs_previous``: the policy's list against its parent policy's list (did the round help?);
- ``vs_baseline``: the policy's list against a non-LLM baseline (popularity or co-purchase order
  among the same candidates, made on demand by :mod:`rlhf.baselines`).

Rules, whatever the strategy: a generation with no usable item is never paired (there is nothing to
compare); two lists with the same items in the same order and the same reasons are skipped; a pair of
generations that is already in the queue (either order) is never added again; at most
``per_context`` new pairs per context and ``limit`` per call. Valid lists are preferred; a pair with
an invalid list gets a lower priority. Each pair stores its strategy, priority, the
settings.queue.overlap_target and a ``selection_reason`` saying why it was made.

Public API: :func:`plan_pairs` (pure, no store), :func:`make_pairs` (store), :func:`lists_identical`,
:data:`STRATEGY_PRIORITY`, :class:`PairReport`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, product
from typing import Any

from rlhf.errors import RecFeedbackError
from storage.records import Generation, Pair

STRATEGIES: tuple[str, ...] = ("same_policy", "new_vs_previous", "vs_baseline")

#: Base priority per strategy (the queue serves higher first; active learning may re-rank later).
STRATEGY_PRIORITY: dict[str, float] = {"new_vs_previous": 1.0, "same_policy": 0.8, "vs_baseline": 0.6}
#: Subtracted when either list has a problem: such pairs are still useful, but less informative.
INVALID_PENALTY = 0.3


@dataclass
class PairReport:
    """What :func:`make_pairs` did, for the CLI and the app."""

    strategy: str
    policy_id: str | None
    other_policy_id: str | None
    pair_ids: list[str] = field(default_factory=list)
    contexts_considered: int = 0
    skipped_identical: int = 0
    skipped_existing: int = 0
    skipped_empty: int = 0
    #: New pairs on held-out shoppers' contexts: their labels evaluate (the reward model, the human win
    #: rate) and never train (:mod:`rlhf.reward.dataset`).
    on_heldout: int = 0

    @property
    def created(self) -> int:
        return len(self.pair_ids)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def lists_identical(a: Generation, b: Generation) -> bool:
    """Same items in the same order with the same reasons (case and spacing ignored)."""
    key_a = [(i.item_id, _normal(i.reason)) for i in a.items]
    key_b = [(i.item_id, _normal(i.reason)) for i in b.items]
    if not key_a and not key_b:
        return _normal(a.raw_text) == _normal(b.raw_text)
    return key_a == key_b


def _preference(g: Generation) -> tuple[int, int]:
    return (0 if g.is_valid else 1, -len(g.items))


def plan_pairs(
    strategy: str,
    generations: Sequence[Generation],
    others: Sequence[Generation] | None,
    existing: set[tuple[str, str]],
    *,
    overlap_target: int,
    limit: int | None = None,
    per_context: int = 1,
    round_id: str | None = None,
    seed: int = 0,
    new_id: Any = None,
) -> tuple[list[Pair], PairReport]:
    """The pairs a strategy would add (pure: nothing is stored).

    ``generations`` are the policy's; ``others`` the second policy's (parent or baseline), or None
    for ``same_policy``. ``existing`` holds (gen_a, gen_b) keys already queued, in both orders.
    A/B order is shuffled with a seeded coin per pair (:func:`_swap`) so that neither side is always the
    new policy.
    """
    if strategy not in STRATEGIES:
        raise RecFeedbackError(f"Unknown pair strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}.")
    if new_id is None:
        from storage.ids import new_id
    report = PairReport(strategy, generations[0].policy_id if generations else None,
                        others[0].policy_id if others else None)
    mine: dict[str, list[Generation]] = defaultdict(list)
    theirs: dict[str, list[Generation]] = defaultdict(list)
    for g in generations:
        mine[g.context_id].append(g)
    for g in others or ():
        theirs[g.context_id].append(g)
    taken = set(existing)
    pairs: list[Pair] = []
    for context_id in sorted(mine):
        if limit is not None and len(pairs) >= limit:
            break
        usable = sorted((g for g in mine[context_id] if g.items), key=_preference)
        report.skipped_empty += len(mine[context_id]) - len(usable)
        if strategy == "same_policy":
            candidates: Iterable[tuple[Generation, Generation]] = combinations(usable, 2)
        else:
            if context_id not in theirs:
                continue
            other_usable = sorted((g for g in theirs[context_id] if g.items), key=_preference)
            report.skipped_empty += len(theirs[context_id]) - len(other_usable)
            candidates = product(usable, other_usable)
        report.contexts_considered += 1
        made_here = 0
        # Pairs of two valid lists first (stable: otherwise in sample order).
        for a, b in sorted(candidates, key=lambda ab: (not ab[0].is_valid) + (not ab[1].is_valid)):
            if made_here >= per_context or (limit is not None and len(pairs) >= limit):
                break
            if (a.generation_id, b.generation_id) in taken:
                report.skipped_existing += 1
                continue
            if lists_identical(a, b):
                report.skipped_identical += 1
                continue
            priority = STRATEGY_PRIORITY[strategy] - (0 if a.is_valid and b.is_valid else INVALID_PENALTY)
            reason = _reason(strategy, a, b)
            if _swap(seed, strategy, context_id, a, b):
                a, b = b, a
            pairs.append(Pair(
                pair_id=new_id("pair"), context_id=context_id, gen_a=a.generation_id, gen_b=b.generation_id,
                strategy=strategy, priority=round(priority, 4), overlap_target=overlap_target,
                selection_reason=reason, round_id=round_id,
            ))
            taken |= {(a.generation_id, b.generation_id), (b.generation_id, a.generation_id)}
            made_here += 1
    report.pair_ids = [p.pair_id for p in pairs]
    return pairs, report


def _swap(seed: int, strategy: str, context_id: str, a: Generation, b: Generation) -> bool:
    """Whether to put ``b`` on side A: a seeded coin per pair of lists, drawn from what the lists say
    rather than their ids, so that one seed orders the same pairs the same way in every run."""
    return random.Random(f"{seed}|{strategy}|{context_id}|{a.raw_text}|{b.raw_text}").random() < 0.5


def _reason(strategy: str, a: Generation, b: Generation) -> str:
    if strategy == "same_policy":
        return f"two samples of {a.policy_id}"
    if strategy == "new_vs_previous":
        return f"{a.policy_id} against its parent {b.policy_id}"
    return f"{a.policy_id} against {b.policy_id}"


def latest_llm_policy(con: Any) -> str | None:
    """The most recently registered LLM policy (the usual subject of ``pairs make``)."""
    from storage.generations import list_policies

    llm = [p for p in list_policies(con) if p.kind == "llm"]
    return llm[-1].policy_id if llm else None


def make_pairs(
    store: Any,
    settings: Any,
    *,
    strategy: str,
    policy_id: str | None = None,
    baseline: str = "popularity",
    limit: int | None = None,
    per_context: int = 1,
    context_ids: Sequence[str] | None = None,
    round_id: str | None = None,
) -> PairReport:
    """Add pairs of stored generations to the queue; see the module docstring for the rules.

    ``policy_id`` defaults to the latest LLM policy. ``vs_baseline`` first stores the baseline's
    lists for the policy's contexts that lack one. Everything new is written in one transaction.
    """
    from rlhf.baselines import baseline_policy_id, make_baseline_generations
    from storage.contexts import get_contexts
    from storage.generations import (
        existing_pair_keys,
        find_policy,
        generations_for_policies,
        insert_pairs,
    )

    if strategy not in STRATEGIES:
        raise RecFeedbackError(f"Unknown pair strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}.")
    with store.transaction() as con:
        policy_id = policy_id or latest_llm_policy(con)
        if policy_id is None:
            raise RecFeedbackError("There is no policy yet: run `recfeedback generate` first.")
        policy = find_policy(con, policy_id)
        if policy is None:
            raise RecFeedbackError(f"No policy {policy_id!r}. `recfeedback generate --policy-id ...` creates one.")
        other_id: str | None = None
        if strategy == "new_vs_previous":
            if not policy.parent_id:
                raise RecFeedbackError(
                    f"Policy {policy_id!r} has no previous policy (it was not trained from another one); "
                    "use --strategy same_policy or vs_baseline."
                )
            other_id = policy.parent_id
        mine = generations_for_policies(con, [policy_id], context_ids=context_ids)
    if not mine:
        raise RecFeedbackError(f"Policy {policy_id!r} has no lists yet: run `recfeedback generate` first.")
    if strategy == "vs_baseline":
        other_id = baseline_policy_id(baseline)
        contexts = sorted({g.context_id for g in mine})
        make_baseline_generations(store, settings, other_id, context_ids=contexts, round_id=round_id)
    with store.transaction() as con:
        others = generations_for_policies(con, [other_id], context_ids=context_ids) if other_id else None
        pairs, report = plan_pairs(
            strategy, mine, others, existing_pair_keys(con), overlap_target=settings.queue.overlap_target,
            limit=limit, per_context=per_context, round_id=round_id, seed=settings.generation.seed,
        )
        insert_pairs(con, pairs)
        splits = get_contexts(con, sorted({p.context_id for p in pairs}))
    report.on_heldout = sum(1 for p in pairs if p.context_id in splits and splits[p.context_id].split == "heldout")
    report.policy_id, report.other_policy_id = policy_id, other_id
    return report


def bootstrap_queue(
    store: Any,
    settings: Any,
    n_pairs: int,
    *,
    policy_id: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> list[PairReport]:
    """A first batch of about ``n_pairs`` pairs written by the real policy (setup, first start).

    Samples two lists for ``n_pairs`` contexts that have none from the policy, pairs the two
    samples (``same_policy``), and tops up with ``vs_baseline`` pairs for contexts whose two samples
    were identical. Returns the reports of the strategies it ran.
    """
    from rlhf.generate import generate_for_store

    run = generate_for_store(store, settings, policy_id, n_contexts=n_pairs, samples_per_context=2,
                             model=model, tokenizer=tokenizer, progress=progress)
    if not run.generation_ids:
        return []
    contexts = None if run.n_contexts == 0 else sorted({c for c in _contexts_of(store, run.generation_ids)})
    reports = [make_pairs(store, settings, strategy="same_policy", policy_id=run.policy_id, limit=n_pairs,
                          context_ids=contexts)]
    missing = n_pairs - reports[0].created
    if missing > 0:
        reports.append(make_pairs(store, settings, strategy="vs_baseline", policy_id=run.policy_id,
                                  limit=missing, context_ids=contexts))
    return reports


def _contexts_of(store: Any, generation_ids: Sequence[str]) -> set[str]:
    from storage.generations import get_generations

    with store.transaction() as con:
        return {g.context_id for g in get_generations(con, list(generation_ids)).values()}
