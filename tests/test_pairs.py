"""Pair strategies, baseline lists, and the generate / pairs CLI on a store."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pandas as pd
import pytest

from rlhf.baselines import make_baseline_generations
from rlhf.errors import RecFeedbackError
from rlhf.pairs import INVALID_PENALTY, STRATEGY_PRIORITY, lists_identical, make_pairs, plan_pairs
from storage.catalog import insert_interactions_frame, insert_items
from storage.contexts import insert_contexts
from storage.generations import (
    generations_for_policies,
    insert_generations,
    list_pairs,
    list_policies,
    upsert_policy,
)
from storage.records import CatalogItem, Context, Generation, ListItem, Policy

ITEMS = [CatalogItem(f"I{i}", f"Item {i}", None, "Kitchen" if i < 10 else "Garden", 1.0 + i) for i in range(20)]


def gen(gid: str, context: str, policy: str, items: list[str], *, reasons: str = "because", valid: bool = True):
    return Generation(gid, context, policy, "\n".join(items), [ListItem(i, reasons) for i in items],
                      [] if valid else [{"kind": "too_few", "detail": "", "position": None}], valid)


def _ids_counter():
    n = iter(range(10_000))
    return lambda prefix: f"{prefix}_{next(n)}"


# -- pure planning -------------------------------------------------------------------------------------


def test_same_policy_pairs_two_different_samples_and_skips_identical_and_empty():
    gens = [
        gen("a1", "c1", "p", ["I1", "I2"]), gen("a2", "c1", "p", ["I2", "I1"]),       # differ in order
        gen("b1", "c2", "p", ["I1", "I2"]), gen("b2", "c2", "p", ["I1", "I2"]),       # identical
        gen("e1", "c3", "p", []), gen("e2", "c3", "p", ["I3"]),                       # one empty
    ]
    pairs, report = plan_pairs("same_policy", gens, None, set(), overlap_target=3, new_id=_ids_counter())
    assert [(p.context_id, {p.gen_a, p.gen_b}) for p in pairs] == [("c1", {"a1", "a2"})]
    assert pairs[0].strategy == "same_policy" and pairs[0].overlap_target == 3
    assert pairs[0].priority == STRATEGY_PRIORITY["same_policy"] and "two samples of p" in pairs[0].selection_reason
    assert report.skipped_identical == 1 and report.skipped_empty == 1 and report.created == 1


def test_identical_means_same_items_order_and_reasons():
    assert lists_identical(gen("x", "c", "p", ["I1"], reasons="Nice  MUG"), gen("y", "c", "p", ["I1"], reasons="nice mug"))
    assert not lists_identical(gen("x", "c", "p", ["I1"], reasons="a"), gen("y", "c", "p", ["I1"], reasons="b"))


def test_existing_pairs_limit_per_context_and_invalid_penalty():
    gens = [gen(f"g{k}", "c1", "p", [f"I{k}"], valid=k != 2) for k in range(4)]
    existing = {("g0", "g1"), ("g1", "g0")}
    pairs, report = plan_pairs("same_policy", gens, None, existing, overlap_target=2, per_context=2,
                               new_id=_ids_counter())
    keys = [frozenset((p.gen_a, p.gen_b)) for p in pairs]
    assert frozenset(("g0", "g1")) not in keys and len(pairs) == 2 and report.skipped_existing == 1
    assert all(p.priority == STRATEGY_PRIORITY["same_policy"] for p in pairs)  # valid lists are preferred
    pairs, _ = plan_pairs("same_policy", gens, None, set(), overlap_target=2, per_context=10, limit=6,
                          new_id=_ids_counter())
    assert len(pairs) == 6
    with_invalid = [p for p in pairs if "g2" in (p.gen_a, p.gen_b)]
    assert with_invalid and all(p.priority == pytest.approx(0.8 - INVALID_PENALTY) for p in with_invalid)


def test_cross_policy_pairs_need_both_policies_and_shuffle_sides():
    mine = [gen(f"n{k}", f"c{k}", "new", ["I1", "I2"]) for k in range(30)]
    theirs = [gen(f"o{k}", f"c{k}", "old", ["I2", "I3"]) for k in range(29)]  # c29 has no old list
    pairs, report = plan_pairs("new_vs_previous", mine, theirs, set(), overlap_target=3, new_id=_ids_counter())
    assert len(pairs) == 29 and report.contexts_considered == 29
    assert all({p.gen_a[0], p.gen_b[0]} == {"n", "o"} for p in pairs)
    a_is_new = sum(p.gen_a.startswith("n") for p in pairs)
    assert 0 < a_is_new < 29  # the new policy is not always side A
    # The coin follows the lists, not their ids: the same lists under other ids take the same sides.
    renamed = [dataclasses.replace(g, generation_id=f"x{g.generation_id}") for g in mine]
    again, _ = plan_pairs("new_vs_previous", renamed, theirs, set(), overlap_target=3, new_id=_ids_counter())
    assert [p.gen_a.startswith("x") for p in again] == [p.gen_a.startswith("n") for p in pairs]
    with pytest.raises(RecFeedbackError, match="strategy"):
        plan_pairs("best_of_both", mine, None, set(), overlap_target=3)


# -- on a store ----------------------------------------------------------------------------------------


@pytest.fixture
def shop(store):
    """Four items bought by many shoppers before the cut; I13 bought a lot only AFTER the cut."""
    rows = []
    for s in range(6):
        rows.append((f"x{s}", "I11", "purchase", datetime(2024, 1, 2)))
        rows.append((f"x{s}", "I1", "purchase", datetime(2024, 1, 2)))  # co-bought with history item I1
    for s in range(3):
        rows.append((f"y{s}", "I12", "purchase", datetime(2024, 1, 3)))
        rows.append((f"y{s}", "I14", "purchase", datetime(2024, 1, 3)))
        rows.append((f"y{s}", "I15", "purchase", datetime(2024, 1, 3)))
    rows.append(("z0", "I15", "purchase", datetime(2024, 1, 3)))
    rows.append(("z1", "I15", "purchase", datetime(2024, 1, 3)))
    rows.append(("z1", "I15", "view", datetime(2024, 1, 3)))
    rows += [(f"late{s}", "I13", "purchase", datetime(2024, 3, 1)) for s in range(20)]
    frame = pd.DataFrame(rows, columns=["shopper_id", "item_id", "event", "ts"]).assign(quantity=1)
    with store.transaction() as con:
        insert_items(con, ITEMS)
        insert_interactions_frame(con, frame)
        insert_contexts(con, [
            Context(f"c{k}", "me", datetime(2024, 2, 1), ["I1", "I2"], ["I11", "I12", "I13", "I14", "I15"])
            for k in range(3)
        ])
    return store


def test_baselines_rank_candidates_with_template_reasons_and_no_future_data(shop, settings):
    settings = settings.model_copy(update={"generation": settings.generation.model_copy(update={"list_length": 3})})
    pop = make_baseline_generations(shop, settings, "baseline-popularity", context_ids=["c0"])
    co = make_baseline_generations(shop, settings, "copurchase", context_ids=["c0"])
    with shop.transaction() as con:
        (p,) = generations_for_policies(con, [pop.policy_id])
        (c,) = generations_for_policies(con, [co.policy_id])
        kinds = {x.policy_id: x.kind for x in list_policies(con)}
    assert kinds == {"baseline-popularity": "baseline", "baseline-copurchase": "baseline"}
    # Buyers before the cut: I11 6, I15 5, I12 3, I14 3; I13's 20 buyers come after the cut.
    assert [i.item_id for i in p.items] == ["I11", "I15", "I12"] and p.is_valid
    assert p.items[0].reason == "Popular in Garden: bought by 6 shoppers."
    assert p.raw_text.splitlines()[0] == "1. C01 | Popular in Garden: bought by 6 shoppers."
    assert c.items[0].item_id == "I11" and c.items[0].reason == "Often bought together with Item 1."
    again = make_baseline_generations(shop, settings, "baseline-popularity", context_ids=["c0"])
    assert again.n_generations == 0  # one baseline list per context


def _policy_lists(store, policy: str, parent: str | None = None, lists=None) -> None:
    with store.transaction() as con:
        upsert_policy(con, Policy(policy, kind="llm", base_model="m", parent_id=parent))
        insert_generations(con, lists or [])


def test_make_pairs_strategies_on_a_store(shop, settings):
    _policy_lists(shop, "old", lists=[gen(f"o{k}", f"c{k}", "old", ["I12", "I14"]) for k in range(3)])
    _policy_lists(shop, "new", parent="old", lists=[
        *(gen(f"n{k}a", f"c{k}", "new", ["I11", "I15"]) for k in range(3)),
        *(gen(f"n{k}b", f"c{k}", "new", ["I15", "I11"]) for k in range(2)),
        gen("n2b", "c2", "new", ["I11", "I15"]),  # identical to n2a
    ])
    same = make_pairs(shop, settings, strategy="same_policy")  # default: the latest LLM policy
    assert same.policy_id == "new" and same.created == 2 and same.skipped_identical == 1
    assert make_pairs(shop, settings, strategy="same_policy").created == 0  # never twice the same pair
    prev = make_pairs(shop, settings, strategy="new_vs_previous", policy_id="new", limit=2)
    assert prev.other_policy_id == "old" and prev.created == 2
    base = make_pairs(shop, settings, strategy="vs_baseline", policy_id="new", baseline="copurchase")
    assert base.other_policy_id == "baseline-copurchase" and base.created == 3
    with shop.transaction() as con:
        pairs = list_pairs(con)
    assert len(pairs) == 7 and {p.overlap_target for p in pairs} == {settings.queue.overlap_target}
    assert {p.strategy for p in pairs} == {"same_policy", "new_vs_previous", "vs_baseline"}
    assert all(p.status == "open" and p.selection_reason for p in pairs)
    with pytest.raises(RecFeedbackError, match="no previous policy"):
        make_pairs(shop, settings, strategy="new_vs_previous", policy_id="old")
    with pytest.raises(RecFeedbackError, match="No policy"):
        make_pairs(shop, settings, strategy="same_policy", policy_id="ghost")


def test_cli_generate_baseline_and_pairs_make(shop, settings, monkeypatch):
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(settings.store.data_dir))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        out = runner.invoke(app, ["generate", "--policy-id", "baseline-popularity", "--contexts", "2"])
        assert out.exit_code == 0, out.output
        assert "2 lists for 2 contexts from baseline-popularity: 2 valid" in out.output
        out = runner.invoke(app, ["pairs", "make", "--strategy", "same_policy"])
        assert out.exit_code == 1 and "no policy yet" in out.output.lower()
        _policy_lists(shop, "p1", lists=[gen("g1", "c0", "p1", ["I11"]), gen("g2", "c0", "p1", ["I12"])])
        out = runner.invoke(app, ["pairs", "make", "--strategy", "same_policy", "--policy", "p1"])
        assert out.exit_code == 0 and "1 new same_policy pair (p1) over 1 context;" in out.output, out.output
        assert "held-out" not in out.output
        # Lists on a held-out shopper's context (a round's evaluation lists): the CLI says what their labels do.
        with shop.transaction() as con:
            con.execute("UPDATE contexts SET split = 'heldout' WHERE context_id = 'c1'")
        _policy_lists(shop, "p1", lists=[gen("g3", "c1", "p1", ["I11"]), gen("g4", "c1", "p1", ["I12"])])
        out = runner.invoke(app, ["pairs", "make", "--strategy", "same_policy", "--policy", "p1"])
        assert out.exit_code == 0 and "1 of them is on held-out shoppers" in out.output, out.output
        out = runner.invoke(app, ["pairs", "make", "--strategy", "sideways"])
        assert out.exit_code == 1 and "Unknown pair strategy" in out.output
    finally:
        get_settings.cache_clear()
