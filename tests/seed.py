"""Put a small shop with pairs to label into a store (tests and benchmarks).

Builds catalogue items, one context per pair, two generations per pair from one policy, and the pairs
themselves, through the storage repositories only. Deterministic for a given seed. Independent of the
demo shop and of real generation, so queue and app tests do not wait on a model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from storage import Store
from storage import queue as queue_repo
from storage.catalog import insert_items
from storage.contexts import insert_contexts
from storage.generations import insert_generations, insert_pairs, upsert_policy
from storage.records import CatalogItem, Context, Generation, ListItem, Pair, Policy

CATEGORIES = ("Kitchen", "Garden", "Toys", "Stationery", "Lighting", "Textiles")
EVIL_TITLE = "<script>alert(1)</script> **bold** Mug"
PASSWORD = "correct-horse-1"


@dataclass
class Seeded:
    pair_ids: list[str]
    gold_ids: list[str] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # name -> role
    password: str = PASSWORD


def seed_store(
    store: Store,
    *,
    n_pairs: int = 10,
    n_gold: int = 0,
    overlap_target: int = 3,
    priorities: Sequence[float] | None = None,
    list_length: int = 5,
    n_candidates: int = 12,
    evil_title: bool = False,
    problems: bool = True,
    users: dict[str, str] | None = None,
    seed: int = 0,
    prefix: str = "p",
    grounded_sides: str = "",
    copied_sides: str = "",
    own_line_sides: str = "",
    same_items_pairs: int = 0,
) -> Seeded:
    """Seed ``n_pairs`` regular pairs (+ ``n_gold`` gold pairs, expected answer 'A') and optional users.

    ``priorities`` gives each regular pair's priority (default: descending n..1). With ``evil_title`` the
    first item of every list is titled :data:`EVIL_TITLE` (markup and script that must show as text).
    With ``problems`` every third generation carries parser problems and a non-candidate item. Reasons are
    off-topic (about neither the item nor the history, :mod:`rlhf.reasons`) except on the sides named in
    ``grounded_sides`` ("a", "b" or "ab"), whose reasons name their item's title, and ``copied_sides``, whose
    reasons copy another candidate's line from the prompt (title, then details in brackets), and
    ``own_line_sides``, whose reasons are their own item's line and nothing else. The first
    ``same_items_pairs`` pairs have the same items in the same order on both sides (only the reasons differ).
    """
    rng = random.Random(seed)
    n_items = max(40, n_candidates * 3)
    items = [
        CatalogItem(
            item_id=f"{prefix}I{i:04d}",
            title=EVIL_TITLE if (evil_title and i == 0) else f"{rng.choice(['Blue', 'Red', 'Oak', 'Steel'])} "
            f"{rng.choice(['mug', 'lamp', 'kite', 'notebook', 'rug', 'spade'])} no. {i}",
            description="A thing for the demo.", category=CATEGORIES[i % len(CATEGORIES)],
            price=round(1.5 + (i * 7919 % 400) / 10, 2),
            # shown after the price (contexts.item_attributes); n_buyers is not, and "Blue" often is in the title
            attributes={"color": ("Navy", "Blue", "Ivory")[i % 3], "rating": round(3.0 + (i % 21) / 10, 1),
                        "n_buyers": i},
        )
        for i in range(n_items)
    ]
    titles = {it.item_id: it.title for it in items}
    total = n_pairs + n_gold
    base = datetime(2026, 1, 1)
    contexts, generations, pairs = [], [], []
    chosen: list[str] = []  # side a's items, which side b repeats in the first ``same_items_pairs`` pairs
    for k in range(total):
        ids = [it.item_id for it in items]
        rng.shuffle(ids)
        history = ids[:4]
        candidates = ids[4:4 + n_candidates]
        if evil_title and items[0].item_id not in candidates:
            candidates[0] = items[0].item_id
        ctx = f"{prefix}ctx{k:05d}"
        contexts.append(Context(ctx, f"shopper{k % 7}", base + timedelta(days=k), history, candidates, "seed"))
        gens = []
        for side in ("a", "b"):
            same = side == "b" and k < same_items_pairs
            chosen = list(chosen) if same else rng.sample(candidates, list_length)
            if evil_title and not same:
                chosen = [items[0].item_id] + [c for c in chosen if c != items[0].item_id][: list_length - 1]
            gen_problems: list[dict] = []
            if problems and not same and (k + (side == "b")) % 3 == 0:
                chosen[-1] = history[0]  # a real item that is not a candidate
                gen_problems = [{"kind": "not_a_candidate", "detail": history[0], "position": list_length}]
            others = [c for c in candidates if c not in chosen]  # what a copied reason names instead
            gen_id = f"{prefix}gen{k:05d}{side}"
            gens.append(gen_id)
            generations.append(Generation(
                generation_id=gen_id, context_id=ctx, policy_id="seed-policy",
                raw_text="\n".join(f"{r + 1}. {c} | reason {side}{r} <b>for</b> *{c}*" for r, c in enumerate(chosen)),
                items=[ListItem(c, f"The {titles[c]} suits them" if side in grounded_sides
                                else f"{titles[others[r]]} (kitchen, price 9.99)" if side in copied_sides
                                else f"{titles[c]} (kitchen, price 9.99)" if side in own_line_sides
                                else f"Reason {side}{r}: goes with **their** <i>history</i>") for r, c in enumerate(chosen)],
                problems=gen_problems, is_valid=not gen_problems,
            ))
        is_gold = k >= n_pairs
        if is_gold:
            priority = 0.0
        elif priorities is not None:
            priority = float(priorities[k])
        else:
            priority = float(n_pairs - k)
        pairs.append(Pair(
            pair_id=f"{prefix}{'gold' if is_gold else 'pair'}{k:05d}", context_id=ctx, gen_a=gens[0], gen_b=gens[1],
            strategy="seed", priority=priority, overlap_target=overlap_target, is_gold=is_gold,
            selection_reason="seed",
        ))
    with store.transaction() as con:
        insert_items(con, items, source="seed")
        insert_contexts(con, contexts)
        upsert_policy(con, Policy("seed-policy", kind="baseline"))
        insert_generations(con, generations)
        insert_pairs(con, pairs)
        for p in pairs:
            if p.is_gold:
                queue_repo.set_gold(con, p.pair_id, "A", note="seeded")
    seeded = Seeded(
        pair_ids=[p.pair_id for p in pairs if not p.is_gold], gold_ids=[p.pair_id for p in pairs if p.is_gold]
    )
    if users:
        from rlhf.auth import create_user

        for name, role in users.items():
            create_user(store, name, PASSWORD, role)
            seeded.users[name] = role
    return seeded


#: A small catalogue of varied title lengths (different prompt lengths give real left padding).
SMALL_ITEMS = [
    CatalogItem(f"SKU{i}", f"Thing {i}" + " extra words" * (i % 4), None, ["Kitchen", "Garden"][i % 2], 2.0 + i)
    for i in range(30)
]


def seed_contexts(store: Store, n_contexts: int = 3) -> None:
    """SMALL_ITEMS and ``n_contexts`` contexts without lists: the last one held out, the rest train."""
    with store.transaction() as con:
        insert_items(con, SMALL_ITEMS)
        insert_contexts(con, [
            Context(f"ctx{v}", f"s{v}", datetime(2024, 1, 1 + v), [i.item_id for i in SMALL_ITEMS[:2 + v]],
                    [i.item_id for i in SMALL_ITEMS[10 + v:16 + v]],
                    split="heldout" if v == n_contexts - 1 else "train")
            for v in range(n_contexts)
        ])
