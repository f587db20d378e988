"""Non-LLM baseline lists, stored as generations so they can be paired against the policy.

A baseline chooses among the SAME candidates the policy saw (so the A/B comparison is fair) and
writes its list in the policy's output format with template reasons:

- ``popularity`` (policy ``baseline-popularity``): candidates by distinct buyers before the context's
  ``as_of``; reason "Popular in Kitchen: bought by 12 shoppers."
- ``copurchase`` (policy ``baseline-copurchase``): candidates by how many other shoppers bought them
  together with an item of this shopper's history (before ``as_of``), popularity breaking ties;
  reason "Often bought together with Blue ceramic mug."

Only interactions strictly before each context's ``as_of`` are used (no leakage from the future).
Public API: :data:`BASELINES`, :func:`baseline_policy_id`, :func:`baseline_list`,
:func:`make_baseline_generations`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from rlhf.errors import RecFeedbackError
from rlhf.parsing import parse_list
from rlhf.prompts import ContextView, format_list_line

if TYPE_CHECKING:
    from rlhf.generate import GenerationRun

BASELINES: tuple[str, ...] = ("popularity", "copurchase")


def baseline_policy_id(name: str) -> str:
    """``baseline-popularity`` / ``baseline-copurchase``."""
    name = name.removeprefix("baseline-")
    if name not in BASELINES:
        raise RecFeedbackError(f"Unknown baseline {name!r}: choose one of {', '.join(BASELINES)}.")
    return f"baseline-{name}"


@dataclass(frozen=True)
class BaselineList:
    """A baseline's choice for one context, as text in the policy format and as (item, reason)."""

    raw_text: str
    items: list[tuple[str, str]]


def _title(view: ContextView, item_id: str) -> str:
    item = view.item(item_id)
    return " ".join(item.title.split()) if item else item_id


def baseline_list(name: str, view: ContextView, history_ids: Sequence[str], before: pd.DataFrame,
                  shopper_id: str, n_items: int) -> BaselineList:
    """The ``name`` baseline's list for one context from interactions ``before`` (already cut)."""
    order = list(range(len(view.candidates)))
    cands = view.candidate_ids
    buyers: dict[str, int] = {}
    if not before.empty:
        among = before[before["item_id"].isin(set(cands))]
        buyers = among.groupby("item_id")["shopper_id"].nunique().to_dict()
    if name == "popularity":
        ranked = sorted(order, key=lambda i: (-buyers.get(cands[i], 0), i))
        chosen = [cands[i] for i in ranked[:n_items]]
        reasons = []
        for item_id in chosen:
            item = view.item(item_id)
            where = f" in {item.category}" if item and item.category else ""
            n = buyers.get(item_id, 0)
            reasons.append(f"Popular{where}: bought by {n} shopper{'s' if n != 1 else ''}." if n
                           else f"A well-rated pick{where}.")
    elif name == "copurchase":
        history = list(dict.fromkeys(history_ids))
        item_buyers: dict[str, set[str]] = defaultdict(set)
        if not before.empty:
            relevant = before[(before["shopper_id"] != shopper_id) & before["item_id"].isin(set(cands) | set(history))]
            for s, i in zip(relevant["shopper_id"], relevant["item_id"]):
                item_buyers[i].add(s)
        best_with: dict[str, tuple[int, str | None]] = {}
        for c in cands:
            scores = Counter({h: len(item_buyers.get(c, set()) & item_buyers.get(h, set())) for h in history})
            top = max(history, key=lambda h: (scores[h], -history.index(h)), default=None)
            best_with[c] = (scores[top] if top else 0, top)
        ranked = sorted(order, key=lambda i: (-best_with[cands[i]][0], -buyers.get(cands[i], 0), i))
        chosen = [cands[i] for i in ranked[:n_items]]
        reasons = []
        for item_id in chosen:
            count, partner = best_with[item_id]
            if count and partner:
                reasons.append(f"Often bought together with {_title(view, partner)}.")
            else:
                item = view.item(item_id)
                reasons.append(f"Popular{' in ' + item.category if item and item.category else ''} with similar shoppers.")
    else:
        raise RecFeedbackError(f"Unknown baseline {name!r}: choose one of {', '.join(BASELINES)}.")
    shorts = view.item_to_short
    text = "\n".join(format_list_line(k, shorts[i], r) for k, (i, r) in enumerate(zip(chosen, reasons), start=1))
    return BaselineList(text, list(zip(chosen, reasons)))


def make_baseline_generations(
    store: Any,
    settings: Any,
    policy_id: str,
    *,
    context_ids: Sequence[str] | None = None,
    n_contexts: int | None = None,
    split: str | None = "train",
    round_id: str | None = None,
) -> GenerationRun:
    """Store baseline lists for contexts that have none yet from this baseline; returns a GenerationRun.

    Contexts: ``context_ids`` (those without a list of this baseline), else up to ``n_contexts``
    (settings.generation.contexts_per_run) contexts of ``split`` without one.
    """
    import time

    from rlhf.generate import GenerationRun, SamplingParams
    from rlhf.prompts import build_context_views
    from storage.catalog import interactions_frame
    from storage.contexts import get_contexts
    from storage.generations import (
        contexts_without_generations,
        find_policy,
        generations_for_policies,
        insert_generations,
        upsert_policy,
    )
    from storage.ids import new_id
    from storage.records import Generation, Policy

    name = policy_id.removeprefix("baseline-")
    policy_id = baseline_policy_id(name)
    n_items = settings.generation.list_length
    started = time.perf_counter()
    with store.transaction() as con:
        if context_ids is not None:
            done = {g.context_id for g in generations_for_policies(con, [policy_id], context_ids=list(context_ids))}
            wanted = [c for c in dict.fromkeys(context_ids) if c not in done]
        else:
            limit = n_contexts if n_contexts is not None else settings.generation.contexts_per_run
            wanted = contexts_without_generations(con, policy_id, split=split, limit=limit)
        contexts = get_contexts(con, wanted)
        ordered = [contexts[c] for c in wanted if c in contexts]
        views = build_context_views(con, ordered, attributes=settings.contexts.item_attributes)
        latest = max((c.as_of for c in ordered), default=None)
        before = interactions_frame(con, before=latest) if latest is not None else pd.DataFrame()
    generations = []
    for context, view in zip(ordered, views):
        cut = before[before["ts"] < context.as_of] if not before.empty else before
        made = baseline_list(name, view, context.history, cut, context.shopper_id, n_items)
        parsed = parse_list(made.raw_text, view, n_items)
        generations.append(Generation(
            generation_id=new_id("gen"), context_id=context.context_id, policy_id=policy_id,
            raw_text=made.raw_text, items=list(parsed.items), problems=list(parsed.problems),
            is_valid=parsed.is_valid, sampling={"baseline": name, "n_items": n_items}, prompt_tokens=None,
            completion_tokens=None, round_id=round_id,
        ))
    with store.transaction() as con:
        if find_policy(con, policy_id) is None:
            upsert_policy(con, Policy(policy_id=policy_id, kind="baseline", base_model=None,
                                      metrics={"description": f"{name} order among the candidates"}))
        insert_generations(con, generations)
    return GenerationRun(
        policy_id=policy_id, generation_ids=[g.generation_id for g in generations], n_contexts=len(generations),
        n_valid=sum(g.is_valid for g in generations), seconds=time.perf_counter() - started, completion_tokens=0,
        params=SamplingParams.from_settings(settings, samples_per_context=1, constrained=False),
    )
