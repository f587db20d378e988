"""A round's lists beside its parent's, shopper by shopper, with what each shopper bought after the cut."""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import pytest

from rlhf.side_by_side import round_policies, round_side_by_side
from storage.catalog import insert_interactions_frame, insert_items
from storage.contexts import insert_contexts
from storage.errors import NotFoundError
from storage.generations import insert_generations, upsert_policy
from storage.records import CatalogItem, Context, Generation, ListItem, Policy, RoundRecord
from storage.rounds import insert_evaluation, insert_round

CUT = datetime(2026, 3, 1)
ROUND = "round_1"


def _gen(gen_id: str, context_id: str, policy_id: str, items: list[str], *, round_id: str | None = None,
         valid: bool = True, reasons: list[str] | None = None) -> Generation:
    """A stored list; its reasons default to "reason for <id>", which names nothing of the item (off-topic)."""
    said = reasons or [f"reason for {i}" for i in items]
    return Generation(generation_id=gen_id, context_id=context_id, policy_id=policy_id, raw_text="",
                      items=[ListItem(i, r) for i, r in zip(items, said)], problems=[], is_valid=valid,
                      round_id=round_id)


@pytest.fixture
def shop(store):
    """Four held-out shoppers and one training shopper; 'new' (round_1) and its parent 'zero' list for them.

    Later purchases: s1 bought I05, s3 bought I07 (and returned nothing), s2 and s4 bought nothing.
    """
    items = [CatalogItem(f"I{i:02d}", f"Thing {i}", None, "Kitchen", 1.0 + i) for i in range(1, 13)]
    candidates = [f"I{i:02d}" for i in range(4, 12)]
    contexts = [Context(f"c{k}", f"s{k}", CUT, [f"I0{k}"], candidates, "test", split="heldout") for k in (1, 2, 3, 4)]
    contexts.append(Context("c9", "s9", CUT, ["I01"], candidates, "test", split="train"))
    bought = pd.DataFrame({"shopper_id": ["s1", "s3", "s1", "s3", "s2"], "item_id": ["I05", "I07", "I01", "I03", "I06"],
                           "event": ["purchase", "purchase", "purchase", "purchase", "view"],
                           "ts": [datetime(2026, 3, 5), datetime(2026, 3, 9), datetime(2026, 1, 2), datetime(2026, 1, 3),
                                  datetime(2026, 3, 2)], "quantity": [1, 1, 1, 1, 1]})
    generations = [
        _gen("g1_new_0", "c1", "new", ["I05", "I06"], round_id=ROUND,     # s1: the new policy finds I05 ...
             reasons=["A thing they will like", "reason for I06"]),        # (the first reason names the item)
        _gen("g1_new_1", "c1", "new", ["I06", "I08"], round_id=ROUND),    # ... in its first sample only
        _gen("g1_zero", "c1", "zero", ["I06", "I08"]),                    # ... and its parent does not
        _gen("g2_new", "c2", "new", ["I01", "I06"], round_id=ROUND, valid=False),  # I01: not a candidate
        _gen("g2_zero", "c2", "zero", ["I06", "I04"],
             reasons=["Thing 10 (Kitchen, 11.00)", "Thing 4 for their Thing 2"]),  # a neighbour's line; history
        _gen("g3_new", "c3", "new", ["I09", "I10"], round_id=ROUND),
        _gen("g3_zero", "c3", "zero", ["I09", "I07"]),                    # s3: the parent finds I07 at rank 2
        _gen("g4_new", "c4", "new", ["I09", "I10"], round_id=ROUND),      # s4: the parent has no list
        _gen("g9_new", "c9", "new", ["I05", "I06"], round_id=ROUND),      # a training shopper: not shown
    ]
    report = {"policy_id": "new", "previous_policy_id": "zero", "zero_shot_policy_id": "zero", "table": []}
    with store.transaction() as con:
        insert_items(con, items, source="test")
        insert_interactions_frame(con, bought, source="test")
        insert_contexts(con, contexts)
        upsert_policy(con, Policy("zero", kind="llm"))
        upsert_policy(con, Policy("new", kind="llm", parent_id="zero", round_id=ROUND))
        insert_generations(con, generations)
        insert_round(con, RoundRecord(round_id=ROUND, status="done", config={"generation": {"list_length": 2}}))
        insert_evaluation(con, "eval_1", report, policy_id="new", round_id=ROUND, dataset="heldout")
    return store


def test_shoppers_who_bought_later_come_first_where_the_lists_differ_most(shop, settings):
    shown = round_side_by_side(shop, settings, ROUND)
    # c4 (no parent list) and c9 (training) are left out; c1's new list hits at rank 1 (spread 1.0), c3's
    # parent at rank 2 (NDCG@2 = 1/log2(3) = 0.63); c2's shopper bought nothing after the cut (a view is
    # not a purchase): last.
    assert [s.context_id for s in shown] == ["c1", "c3", "c2"]
    c1, c3, c2 = shown
    assert [(c.policy_id, c.role) for c in c1.columns] == [("new", "new policy"), ("zero", "parent (zero-shot)")]
    assert [[i.item_id for i in c.shown.items] for c in c1.columns] == [["I05", "I06"], ["I06", "I08"]]  # first sample
    assert [c.bought_ranks for c in c1.columns] == [frozenset({1}), frozenset()]
    assert [c.ndcg for c in c1.columns] == [1.0, 0.0] and c1.ndcg_spread == 1.0
    assert [c.off_topic_ranks for c in c1.columns] == [frozenset({2}), frozenset({1, 2})]
    assert [i.item_id for i in c1.bought_later] == ["I05"] and [i.item_id for i in c1.history] == ["I01"]
    assert c3.columns[1].bought_ranks == frozenset({2})
    assert (c2.columns[1].copied_ranks, c2.columns[1].off_topic_ranks) == (frozenset({1}), frozenset())
    assert c3.columns[1].ndcg == pytest.approx(1 / math.log2(3)) and c3.ndcg_spread == pytest.approx(1 / math.log2(3))
    assert c2.bought_later == () and c2.ndcg_spread == 0.0
    new_c2 = c2.columns[0]
    assert not new_c2.is_valid and new_c2.shown.items[0].badges == ("not a candidate",)
    assert new_c2.shown.items[0].title == "Thing 1" and new_c2.shown.items[0].reason == "reason for I01"
    assert len(round_side_by_side(shop, settings, ROUND, limit=1)) == 1


def test_a_round_without_a_report_has_nothing_to_show_and_an_unknown_round_is_refused(shop, settings):
    with shop.transaction() as con:
        insert_round(con, RoundRecord(round_id="round_2", status="running"))
    assert round_side_by_side(shop, settings, "round_2") == []
    with pytest.raises(NotFoundError, match="No round with id 'round_unknown'"):
        round_side_by_side(shop, settings, "round_unknown")


def test_round_lists_prints_the_lists_with_what_was_bought_later(shop, settings):
    from typer.testing import CliRunner

    from rlhf.cli import app

    runner = CliRunner()
    data_dir = str(settings.store.data_dir)
    shown = runner.invoke(app, ["round", "lists", ROUND, "--shoppers", "2", "--data-dir", data_dir])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"Round {ROUND}: its lists beside its parent's and the zero-shot model's"
    assert [line.split(" (")[0] for line in lines if line.startswith("==")] == ["== shopper s1", "== shopper s3"]
    assert "== shopper s1 (context c1): 1 item bought before, 1 after the cut" in lines
    assert "  new policy new: NDCG 1.000, valid" in lines and "  parent (zero-shot) zero: NDCG 0.000, valid" in lines
    assert "    1. Thing 5  [bought later]  | A thing they will like" in lines
    assert "    2. Thing 6  [off-topic reason]  | reason for I06" in lines
    assert "    2. Thing 7  [bought later; off-topic reason]  | reason for I07" in lines  # s3's parent list
    everything = runner.invoke(app, ["round", "lists", "--data-dir", data_dir])  # the newest finished round
    assert everything.output.startswith(f"Round {ROUND}, the newest finished round: ")  # said, not left to guess
    assert "    1. Thing 1  [off-topic reason; not a candidate]  | reason for I01" in everything.output.splitlines()
    assert ("    1. Thing 6  [reason only names a product; describes another item]  | Thing 10 (Kitchen, 11.00)"
            in everything.output.splitlines())
    unknown = runner.invoke(app, ["round", "lists", "round_x", "--data-dir", data_dir])
    assert unknown.exit_code == 1 and "No round with id 'round_x'" in unknown.output


def test_roles_name_the_zero_shot_model_apart_from_a_trained_parent():
    report = {"policy_id": "p3", "previous_policy_id": "p2", "zero_shot_policy_id": "z"}
    assert round_policies(report) == [("p3", "new policy"), ("p2", "parent"), ("z", "zero-shot")]
    assert round_policies({"policy_id": "p1", "previous_policy_id": "z", "zero_shot_policy_id": "z"}) == [
        ("p1", "new policy"), ("z", "parent (zero-shot)")]
    assert round_policies({}) == []


def test_purchases_are_counted_as_the_round_counted_them(shop, settings):
    from storage.rounds import update_round

    with shop.transaction() as con:  # a round whose evaluation counted views as well as purchases
        update_round(con, ROUND, config={"generation": {"list_length": 2}, "rounds": {"eval_events": ["purchase", "view"]}})
    c2 = next(s for s in round_side_by_side(shop, settings, ROUND) if s.context_id == "c2")
    assert [i.item_id for i in c2.bought_later] == ["I06"]  # s2 viewed it after the cut
    assert [c.bought_ranks for c in c2.columns] == [frozenset({2}), frozenset({1})]
