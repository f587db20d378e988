"""Contexts: history before the cut, candidates never bought, no use of any later interaction."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from rlhf import importing
from rlhf.contexts import (
    ContextBuildError,
    build_contexts,
    context_id,
    future_purchases,
    future_purchases_many,
    split_for,
)
from rlhf.demo import generate_shop
from rlhf.settings import load_settings
from storage import Store
from storage import catalog as catalog_repo
from storage import contexts as contexts_repo
from storage.records import Context


def _write(store: Store, settings, items: pd.DataFrame, inter: pd.DataFrame, shoppers=None) -> None:
    clean_items = importing.validate_catalog(items, limits=settings.imports)
    clean_inter = importing.validate_interactions(
        inter, known_items=pd.Index(clean_items["item_id"]), limits=settings.imports
    )
    importing.write_dataset(
        store, items=clean_items, interactions=clean_inter, shoppers=shoppers, limits=settings.imports
    )


def _contexts(store: Store) -> list[Context]:
    with store.transaction() as con:
        return contexts_repo.list_contexts(con)


def _tiny_shop(store: Store, settings) -> None:
    """Six items in two categories; 'a' and 'b' share taste, 'b' also bought Z; 'c' buys popular stuff."""
    items = pd.DataFrame(
        {
            "item_id": ["X", "Y", "Z", "P", "Q", "R"],
            "title": ["Item X", "Item Y", "Item Z", "Item P", "Item Q", "Item R"],
            "category": ["mugs", "mugs", "mugs", "lamps", "lamps", "lamps"],
            "price": [5, 6, 7, 30, 40, 50],
        }
    )
    rows = [
        ("a", "X", "2024-01-01 10:00"),
        ("a", "Y", "2024-01-02 10:00"),
        ("a", "X", "2024-01-03 10:00"),
        ("a", "Q", "2024-02-01 10:00"),  # after the cut
        ("b", "X", "2024-01-01 09:00"),
        ("b", "Y", "2024-01-01 09:30"),
        ("b", "Z", "2024-01-01 09:40"),
        ("c", "P", "2024-01-01 08:00"),
        ("c", "Q", "2024-01-01 08:10"),
        ("c", "R", "2024-01-01 08:20"),
        ("d", "P", "2024-01-01 07:00"),
        ("d", "Q", "2024-01-05 07:00"),
        ("e", "R", "2024-01-20 07:00"),
    ]
    inter = pd.DataFrame(rows, columns=["shopper_id", "item_id", "ts"]).assign(event="purchase", quantity=1)
    _write(store, settings, items, inter)


def test_history_and_candidates_on_a_tiny_shop(store, settings, monkeypatch) -> None:
    import rlhf.contexts

    monkeypatch.setattr(rlhf.contexts, "_PROGRESS_EVERY", 2)
    _tiny_shop(store, settings)
    cut = datetime(2024, 1, 10)
    reports: list[tuple[int, int]] = []
    report = build_contexts(store, settings=settings, as_of=cut, strategy="copurchase",
                            progress=lambda done, total: reports.append((done, total)))
    contexts = {c.shopper_id: c for c in _contexts(store)}
    assert report.built == 4 and report.too_short == 1  # 'e' has nothing before the cut
    # From zero (so a bar's rate is true), within the one cut, to the end.
    assert reports[0] == (0, 4) and (2, 4) in reports and reports[-1] == (4, 4)
    a = contexts["a"]
    assert a.context_id == "ctx_a_202401100000" == context_id("a", cut)
    assert a.history == ["X", "Y"]  # most recent first, distinct (X bought again on 01-03)
    assert a.candidates[0] == "Z"  # bought by 'b', who shares X and Y with 'a'
    assert not {"X", "Y"} & set(a.candidates)
    assert set(a.candidates) == {"Z", "P", "Q", "R"}  # backfilled by popularity, K larger than the shop
    assert a.retrieval == "copurchase" and a.as_of == cut
    assert contexts["d"].history == ["Q", "P"]


def test_the_build_says_how_many_shoppers_bought_after_the_cut_and_warns_when_none_did(store, settings) -> None:
    _tiny_shop(store, settings)
    inside = build_contexts(store, settings=settings, as_of=datetime(2024, 1, 4), strategy="popularity")
    # a, b and c have two items before the cut; a alone buys again (Q on 02-01).
    assert inside.built == 3 and inside.bought_after == 1
    assert "1 of them bought again after the cut" in inside.summary()
    late = build_contexts(store, settings=settings, as_of=datetime(2024, 3, 1), strategy="popularity")
    assert late.built == 4 and late.bought_after == 0  # d too now; e never has two items
    assert "None of their shoppers bought anything after the cut (the last purchase is on 2024-02-01)" in late.summary()


def test_category_and_popularity_strategies(store, settings) -> None:
    _tiny_shop(store, settings)
    cut = datetime(2024, 1, 10)
    build_contexts(store, settings=settings, as_of=cut, strategy="category")
    a = {c.shopper_id: c for c in _contexts(store)}["a"]
    assert a.candidates[0] == "Z"  # the only mug left: 'a' only bought mugs
    build_contexts(store, settings=settings, as_of=cut, strategy="popularity", replace=True)
    c = {c.shopper_id: c for c in _contexts(store)}["a"]
    assert c.candidates == ["P", "Q", "R", "Z"]  # 2, 2, 1, 1 buyers before the cut; ties by id
    assert c.retrieval == "popularity"
    with pytest.raises(ContextBuildError, match="Unknown retrieval strategy 'magic'"):
        build_contexts(store, settings=settings, strategy="magic")


def test_replace_keeps_a_context_that_already_has_lists(store, settings) -> None:
    """`contexts build --replace` rebuilt contexts whose lists, pairs and labels name their candidates: every
    export then paired old answers with new candidates."""
    from storage import generations as gen_repo
    from storage.records import Generation, Policy

    _tiny_shop(store, settings)
    cut = datetime(2024, 1, 10)
    build_contexts(store, settings=settings, as_of=cut, strategy="category")
    before = {c.shopper_id: c for c in _contexts(store)}
    with store.transaction() as con:
        gen_repo.upsert_policy(con, Policy("p"))
        gen_repo.insert_generations(con, [Generation("g1", before["a"].context_id, "p", "", [], [], True)])
    report = build_contexts(store, settings=settings, as_of=cut, strategy="popularity", replace=True)
    after = {c.shopper_id: c for c in _contexts(store)}
    assert after["a"] == before["a"] and after["a"].retrieval == "category"  # it has lists: left as it was
    assert all(after[s].retrieval == "popularity" for s in after if s != "a")  # the others were rebuilt
    assert report.skipped_existing == 1 and "kept 1 existing (with --replace: those with lists)" in report.summary()


def test_no_leakage_later_interactions_change_nothing(tmp_path: Path) -> None:
    """A store with the full history and one cut at as_of give identical contexts at as_of."""
    settings = load_settings(store={"data_dir": tmp_path / "x"}, demo={"n_items": 120, "n_shoppers": 80})
    shop = generate_shop(settings)
    cut = pd.Timestamp("2025-03-20")
    inter = shop.interactions
    past = inter[inter["ts"] < cut]
    # The full store also gets interactions exactly AT the cut, by everybody, on popular items.
    at_cut = past.drop_duplicates("shopper_id").assign(
        ts=cut, item_id=shop.items["item_id"].iloc[0], event="purchase"
    )
    full = pd.concat([inter, at_cut], ignore_index=True)
    stores = {}
    for name, frame in (("past", past), ("full", full)):
        s = Store(tmp_path / name / "s.duckdb")
        _write(s, settings, shop.items, frame)
        for strategy in ("mixed", "copurchase", "category", "popularity"):
            build_contexts(s, settings=settings, as_of=cut, strategy=strategy, replace=True)
            stores.setdefault(name, []).append(_contexts(s))
    assert stores["past"] == stores["full"]
    assert len(stores["full"][0]) > 40


def _copurchase_oracle(before: pd.DataFrame, history: list[str], item: str) -> float:
    """Item-item cosine of ``item`` with each history item, summed, counted from ``before`` with pandas."""
    buyers = before.groupby("item_id")["shopper_id"].agg(set)
    mine = buyers.get(item, set())
    return sum(len(mine & buyers.get(h, set())) / max(len(mine) * len(buyers.get(h, set())), 1) ** 0.5
               for h in history)


def test_mixed_candidates_are_ordered_by_copurchase_with_the_history(tmp_path: Path) -> None:
    """'relevance' order: the same candidates as the interleaved blend, ranked by item-item co-purchase
    with the shown history (checked against a pandas count from the purchases before the cut), then
    popularity."""
    shown: dict[str, list[Context]] = {}
    for order in ("relevance", "interleaved"):
        settings = load_settings(store={"data_dir": tmp_path / order}, demo={"n_items": 120, "n_shoppers": 80},
                                 contexts={"candidate_order": order, "history_cap": 4})
        shop = generate_shop(settings)
        store = Store.from_settings(settings)
        _write(store, settings, shop.items, shop.interactions)
        build_contexts(store, settings=settings, as_of="2025-03-20")
        shown[order] = _contexts(store)
    purchases = shop.interactions[shop.interactions["event"] == "purchase"]
    before = purchases[purchases["ts"] < pd.Timestamp("2025-03-20")]
    buyers = before.groupby("item_id")["shopper_id"].nunique()
    reordered = 0
    for ranked, blended in zip(shown["relevance"], shown["interleaved"], strict=True):
        assert ranked.context_id == blended.context_id and ranked.history == blended.history
        assert sorted(ranked.candidates) == sorted(blended.candidates)
        keys = [(round(_copurchase_oracle(before, ranked.history, c), 9), int(buyers.get(c, 0)))
                for c in ranked.candidates]
        assert keys == sorted(keys, reverse=True), ranked.context_id
        reordered += ranked.candidates != blended.candidates
    assert reordered > len(shown["relevance"]) // 2


def test_copurchase_retrieval_ranks_as_the_evaluation_baseline(tmp_path: Path) -> None:
    """With the whole history shown, the co-purchase strategy's first N candidates score exactly what the
    evaluation's co-purchase baseline picks for that shopper: one formula for both."""
    from rlhf.evaluation import copurchase_lists

    settings = load_settings(store={"data_dir": tmp_path}, demo={"n_items": 120, "n_shoppers": 80},
                             contexts={"history_cap": 500})
    shop = generate_shop(settings)
    store = Store.from_settings(settings)
    _write(store, settings, shop.items, shop.interactions)
    cut = pd.Timestamp("2025-03-20")
    build_contexts(store, settings=settings, as_of=cut, strategy="copurchase")
    contexts = _contexts(store)
    purchases = shop.interactions[shop.interactions["event"] == "purchase"]
    before = purchases[purchases["ts"] < cut]
    baseline = copurchase_lists({c.context_id: c.history for c in contexts}, purchases, cut, 5)
    for c in contexts:
        ours = [round(_copurchase_oracle(before, c.history, i), 9) for i in c.candidates[:5]]
        theirs = [round(_copurchase_oracle(before, c.history, i), 9) for i in baseline[c.context_id]]
        assert ours == theirs, c.context_id
    assert sum(c.candidates[:5] == baseline[c.context_id] for c in contexts) > len(contexts) // 2


def test_candidates_never_bought_before_and_history_before_cut(tmp_path: Path) -> None:
    settings = load_settings(store={"data_dir": tmp_path}, demo={"n_items": 160, "n_shoppers": 100})
    shop = generate_shop(settings)
    store = Store.from_settings(settings)
    _write(store, settings, shop.items, shop.interactions)
    build_contexts(store, settings=settings)  # default cuts: midnight before each last purchase day
    contexts = _contexts(store)
    purchases = shop.interactions[shop.interactions["event"] == "purchase"]
    futures = future_purchases_many(store, contexts)
    k = settings.contexts.n_candidates
    for c in contexts:
        mine = purchases[purchases["shopper_id"] == c.shopper_id]
        before = mine[mine["ts"] < c.as_of]
        bought_before = set(before["item_id"])
        assert len(c.candidates) == k and len(set(c.candidates)) == k
        assert not bought_before & set(c.candidates)
        assert set(c.history) <= bought_before and len(c.history) == len(set(c.history))
        assert len(c.history) == min(len(bought_before), settings.contexts.history_cap)
        recency = before.groupby("item_id")["ts"].max().loc[c.history]
        assert recency.is_monotonic_decreasing
        assert c.as_of == mine["ts"].max().floor("D").to_pydatetime()
        assert futures[c.context_id] == set(mine[mine["ts"] >= c.as_of]["item_id"]) != set()
    assert future_purchases(store, contexts[0]) == futures[contexts[0].context_id]


def test_splits_ids_limit_and_existing_contexts(tmp_path: Path) -> None:
    settings = load_settings(store={"data_dir": tmp_path}, demo={"n_items": 120, "n_shoppers": 200})
    shop = generate_shop(settings)
    store = Store.from_settings(settings)
    _write(store, settings, shop.items, shop.interactions)
    first = build_contexts(store, settings=settings, limit=7)
    assert first.built == 7
    again = build_contexts(store, settings=settings)
    assert again.skipped_existing == 7 and again.built + 7 == len(_contexts(store))
    contexts = _contexts(store)
    heldout = [c for c in contexts if c.split == "heldout"]
    assert 0.1 < len(heldout) / len(contexts) < 0.3
    assert all(c.split == split_for(c.shopper_id, 0.2, settings.contexts.seed) for c in contexts)
    # Rebuilding with --replace gives the same contexts (deterministic).
    build_contexts(store, settings=settings, replace=True)
    assert _contexts(store) == contexts


def test_no_purchases_is_a_clear_error(store, settings) -> None:
    with pytest.raises(ContextBuildError, match="no purchases"):
        build_contexts(store, settings=settings)


def test_contexts_on_the_uci_data(store, settings, shared_data: Path) -> None:
    importing.import_online_retail(store, shared_data / "uci_online_retail", settings=settings)
    cut = datetime(2011, 9, 1)
    report = build_contexts(store, settings=settings, as_of=cut, limit=150)
    assert report.built == 150
    assert 0.05 < report.heldout / report.built < 0.4  # a limited build is a fair sample of both splits
    contexts = _contexts(store)
    sample = contexts[:40]
    with store.transaction() as con:
        inter = catalog_repo.interactions_frame(con)
    inter = inter[inter["shopper_id"].isin({c.shopper_id for c in sample})]
    for c in sample:
        mine = inter[inter["shopper_id"] == c.shopper_id]
        assert not set(mine[mine["ts"] < cut]["item_id"]) & set(c.candidates)
        assert len(c.candidates) == 20 and 2 <= len(c.history) <= 20


def test_contexts_round_trip_through_the_store(store) -> None:
    one = Context("ctx_a_202401010000", "a", datetime(2024, 1, 1), ["X", "Y"], ["Z", "P"], "mixed", "train")
    many = [
        Context(
            f"ctx_{n}_202402010930",
            str(n),
            datetime(2024, 2, 1, 9, 30),
            [f"h{n}"],
            ["c1", "c2"],
            "popularity",
            "heldout" if n % 2 else "train",
        )
        for n in range(50)
    ]
    with store.transaction() as con:
        contexts_repo.insert_contexts(con, [one])
        contexts_repo.insert_contexts_bulk(con, many)
    with store.transaction() as con:
        assert contexts_repo.get_context(con, one.context_id) == one
        assert contexts_repo.list_contexts(con, split="heldout") == [
            c for c in sorted(many, key=lambda c: c.context_id) if c.split == "heldout"
        ]
        assert contexts_repo.existing_context_ids(con, [one.context_id, "nope"]) == {one.context_id}
        assert contexts_repo.count_contexts(con) == 51
