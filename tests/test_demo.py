"""The demo shop: size, determinism, hidden preferences that really drive the histories, accounts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf.auth import authenticate
from rlhf.demo import DEMO_ACCOUNTS, build_demo, demo_password, generate_shop, item_utility, list_utility
from rlhf.settings import load_settings
from storage import Store
from storage import catalog as catalog_repo
from storage import contexts as contexts_repo
from storage import users as users_repo
from storage.records import CatalogItem


def _tables(store: Store) -> dict[str, pd.DataFrame]:
    with store.transaction() as con:
        return {
            "items": catalog_repo.items_frame(con),
            "shoppers": catalog_repo.shoppers_frame(con),
            "interactions": catalog_repo.interactions_frame(con),
            "contexts": contexts_repo.contexts_frame(con),
            "users": pd.DataFrame([(u.annotator_id, u.role) for u in users_repo.list_annotators(con)]),
        }


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory) -> tuple[Store, Store, object]:
    """Two demo stores built independently from the same seed."""
    stores = []
    for name in ("a", "b"):
        settings = load_settings(store={"data_dir": tmp_path_factory.mktemp(name)})
        store = Store.from_settings(settings)
        # Accounts are a fixed list (checked below); hashing them twice would only cost time.
        report = build_demo(store, settings, with_accounts=name == "a")
        stores.append((store, report))
    return stores[0][0], stores[1][0], stores[0][1]


def test_same_seed_gives_identical_stores(demo_pair) -> None:
    a, b, _ = demo_pair
    ta, tb = _tables(a), _tables(b)
    assert list(map(tuple, ta.pop("users").to_numpy())) == sorted(DEMO_ACCOUNTS)
    tb.pop("users")
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)
    assert len(ta["contexts"]) > 0


def test_another_seed_gives_another_shop() -> None:
    s1 = generate_shop(load_settings(demo={"seed": 1, "n_items": 120, "n_shoppers": 40}))
    s2 = generate_shop(load_settings(demo={"seed": 2, "n_items": 120, "n_shoppers": 40}))
    assert not s1.interactions.equals(s2.interactions)
    assert list(s1.items["title"]) != list(s2.items["title"])


def test_the_shop_has_the_promised_size_and_shape(demo_pair) -> None:
    store, _, report = demo_pair
    t = _tables(store)
    items, shoppers, inter = t["items"], t["shoppers"], t["interactions"]
    assert len(items) >= 400 and items["category"].nunique() >= 10
    assert items["title"].is_unique and items["title"].str.len().between(8, 80).all()
    assert items["description"].str.len().between(20, 200).all()
    assert items["price"].between(1, 500).all()
    assert len(shoppers) >= 300 and shoppers["hidden_preferences"].notna().all()
    assert set(inter["event"]) == {"view", "purchase"}
    assert inter["shopper_id"].nunique() == len(shoppers)
    assert report.contexts == len(t["contexts"]) >= 250  # almost every shopper has an evaluable context
    # Every purchase follows a view of the same item by the same shopper.
    views = inter[inter.event == "view"].groupby(["shopper_id", "item_id"])["ts"].min()
    buys = inter[inter.event == "purchase"].set_index(["shopper_id", "item_id"])["ts"]
    assert (buys < views.reindex(buys.index)).sum() == 0


def test_histories_follow_the_hidden_preferences(demo_pair) -> None:
    """Purchased items are worth more to their buyer than the catalogue on average (ground truth holds)."""
    store, _, _ = demo_pair
    with store.transaction() as con:
        items = {i.item_id: i for i in catalog_repo.all_items(con)}
        shoppers = catalog_repo.all_shoppers(con)
        inter = catalog_repo.interactions_frame(con, events=["purchase"])
    bought = inter.groupby("shopper_id")["item_id"].apply(list).to_dict()
    lifts = []
    for s in shoppers:
        prefs = s.hidden_preferences
        mean_all = np.mean([item_utility(prefs, it) for it in items.values()])
        mean_bought = np.mean([item_utility(prefs, items[i]) for i in bought[s.shopper_id]])
        lifts.append(mean_bought - mean_all)
    assert np.mean(lifts) > 1.0 and np.mean(np.array(lifts) > 0) > 0.95
    # Category affinity shows in what they buy: the top category is the most bought one for most shoppers.
    hits = 0
    for s in shoppers:
        aff = s.hidden_preferences["category_affinity"]
        cats = pd.Series([items[i].category for i in bought[s.shopper_id]]).value_counts()
        hits += cats.index[0] == max(aff, key=aff.get)
    assert hits / len(shoppers) > 0.6


def test_item_and_list_utility() -> None:
    prefs = {
        "category_affinity": {"Kitchen": 0.8, "Travel": 0.2},
        "budget": 30.0,
        "price_sensitivity": 1.0,
        "liked": {"color": ["Navy"]},
        "disliked": {"color": ["Mustard"]},
        "quality_weight": 0.5,
    }
    base = CatalogItem(
        "a", "Knife", category="Kitchen", price=20.0, attributes={"color": "Ivory", "rating": 4.0}
    )
    assert item_utility(prefs, base) == pytest.approx(2.0)
    liked = CatalogItem(
        "b", "Knife", category="Kitchen", price=20.0, attributes={"color": "Navy", "rating": 4.0}
    )
    assert item_utility(prefs, liked) == pytest.approx(2.6)
    disliked = {"item_id": "c", "category": "Kitchen", "price": 20.0, "attributes": {"color": "Mustard"}}
    assert item_utility(prefs, disliked) == pytest.approx(1.2)
    pricey = CatalogItem("d", "Knife", category="Kitchen", price=60.0, attributes={"rating": 5.0})
    assert item_utility(prefs, pricey) == pytest.approx(2.0 - 1.5 * np.log(2.0) + 0.5)
    other = CatalogItem("e", "Bag", category="Travel", price=10.0)
    assert item_utility(prefs, other) == pytest.approx(0.5)
    # Position-discounted: the better item first scores higher; repeats and unknown ids add nothing.
    assert list_utility(prefs, [liked, other]) > list_utility(prefs, [other, liked])
    assert list_utility(prefs, [liked, other]) == pytest.approx(2.6 + 0.5 / np.log2(3))
    assert list_utility(prefs, [liked, liked, None]) == pytest.approx(2.6)


def test_demo_accounts_can_log_in(demo_pair) -> None:
    store, _, report = demo_pair
    assert {role for _, role in DEMO_ACCOUNTS} == {"annotator", "engineer", "manager", "admin"}
    assert [(u, r) for u, r, _ in report.accounts] == list(DEMO_ACCOUNTS)
    for user, role in DEMO_ACCOUNTS[:1] + DEMO_ACCOUNTS[-1:]:
        assert authenticate(store, user, demo_password(user)).role == role


def test_hidden_preferences_are_stored_as_json_objects(demo_pair) -> None:
    store, _, _ = demo_pair
    with store.transaction() as con:
        frame = catalog_repo.shoppers_frame(con)
    prefs = json.loads(frame["hidden_preferences"].iloc[0])
    assert {"category_affinity", "budget", "price_sensitivity", "liked", "disliked"} <= set(prefs)
    assert sum(prefs["category_affinity"].values()) == pytest.approx(1.0, abs=0.05)


def test_generating_the_shop_is_pure(tmp_path: Path) -> None:
    settings = load_settings(store={"data_dir": tmp_path}, demo={"n_items": 120, "n_shoppers": 60})
    a, b = generate_shop(settings), generate_shop(settings)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert not (tmp_path / "recfeedback.duckdb").exists()


def test_the_vectorised_utility_matrix_equals_item_utility() -> None:
    from rlhf.demo import utility_matrix

    shop = generate_shop(load_settings(demo={"n_items": 120, "n_shoppers": 40}))
    items = shop.items.assign(attributes=[json.loads(a) for a in shop.items["attributes"]])
    prefs = [json.loads(p) for p in shop.shoppers["hidden_preferences"]]
    matrix = utility_matrix(prefs, items)
    records = items.to_dict("records")
    expected = np.array([[item_utility(p, r) for r in records] for p in prefs])
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-12)
