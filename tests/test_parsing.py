"""Parsing model output into lists: crafted near-misses and hypothesis properties (never raises)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from rlhf.parsing import PROBLEM_KINDS, parse_list
from rlhf.prompts import make_view
from storage.records import CatalogItem

CANDIDATES = [f"SKU{i:03d}" for i in range(20)]
MAPPING = {f"C{i + 1:02d}": sku for i, sku in enumerate(CANDIDATES)}
CATALOG = set(CANDIDATES) | {"SKU900", "SKU901"}


def kinds(parsed) -> list[str]:
    return [p["kind"] for p in parsed.problems]


def test_well_formed_list_is_valid_and_maps_short_ids_to_real_ids():
    text = "1. C07 | Goes with the mugs.\n2. C01 | A classic.\n3. C12 | Cheap and useful."
    parsed = parse_list(text, MAPPING, 3)
    assert parsed.is_valid and parsed.problems == []
    assert [i.item_id for i in parsed.items] == ["SKU006", "SKU000", "SKU011"]
    assert [i.reason for i in parsed.items] == ["Goes with the mugs.", "A classic.", "Cheap and useful."]
    assert parsed.short_ids == ["C07", "C01", "C12"] and parsed.n_valid == 3


def test_accepts_a_context_view_and_a_plain_candidate_list():
    items = [CatalogItem(s, f"Item {s}") for s in CANDIDATES[:3]]
    view = make_view("ctx", "shop", [], items)
    for mapping in (view, CANDIDATES[:3]):
        parsed = parse_list("1. C02 | ok then", mapping, 1)
        assert parsed.is_valid and parsed.items[0].item_id == "SKU001"


def test_near_miss_formats_still_parse():
    text = (
        "- c7: goes with the mugs\n"
        "**2.** C01 - a classic\n"
        "3) [C3] | handy\n"
        "Blue teapot (C04) - matches the kettle\n"
        "5. SKU010 | the real id works too"
    )
    parsed = parse_list(text, MAPPING, 5)
    assert [i.item_id for i in parsed.items] == ["SKU006", "SKU000", "SKU002", "SKU003", "SKU010"]
    assert parsed.is_valid, parsed.problems
    assert parsed.items[3].reason == "matches the kettle"


def test_each_problem_kind_is_reported_with_its_line():
    text = (
        "Here are my picks:\n"          # 1 unparseable
        "1. C07 | good\n"               # 2 ok
        "2. C99 | invented\n"           # 3 unknown_id
        "3. SKU900 | real but not offered\n"  # 4 not_a_candidate
        "4. C07 | again\n"              # 5 duplicate
        "5. C02 |\n"                    # 6 missing_reason
    )
    parsed = parse_list(text, MAPPING, 3, catalog_ids=CATALOG)
    by_kind = {p["kind"]: p["position"] for p in parsed.problems}
    assert by_kind == {"unparseable": 1, "unknown_id": 3, "not_a_candidate": 4, "duplicate": 5,
                       "missing_reason": 6, "too_few": None}
    assert [i.item_id for i in parsed.items] == ["SKU006", "SKU001"]
    assert parsed.items[1].reason == "" and not parsed.is_valid and parsed.n_valid == 2


def test_the_prompts_example_reason_copied_is_a_problem_and_a_reason_of_its_own_is_not():
    from rlhf.prompts import EXAMPLE_REASON

    text = (
        f"1. C07 | {EXAMPLE_REASON}\n"
        "2. C01 | a teapot to go with the MUGS they bought, last month\n"  # the same words: a copy
        "3. C12 | A teapot to go with the cups they bought last month."    # its own words: fine
    )
    parsed = parse_list(text, MAPPING, 3)
    assert [(p["kind"], p["position"]) for p in parsed.problems] == [("copied_example", 1), ("copied_example", 2)]
    assert [i.item_id for i in parsed.items] == ["SKU006", "SKU000", "SKU011"]  # the items are kept
    assert not parsed.is_valid and parsed.n_valid == 3
    assert parse_list("1. C07 | Goes with the teapot they bought last month.", MAPPING, 1).is_valid


def test_annotators_see_a_badge_on_an_item_whose_reason_was_copied():
    from rlhf.annotation import shown_list
    from rlhf.prompts import EXAMPLE_REASON

    items = {s: CatalogItem(s, f"Item {s}") for s in CANDIDATES[:2]}
    gen = {"items": [{"item_id": "SKU000", "reason": EXAMPLE_REASON}, {"item_id": "SKU001", "reason": "Cheap."}],
           "problems": parse_list(f"1. C01 | {EXAMPLE_REASON}\n2. C02 | Cheap.", MAPPING, 2).problems}
    shown = shown_list(gen, items, set(CANDIDATES))
    assert [i.badges for i in shown.items] == [("copied example reason",), ()]
    assert shown.problems == ("copied example reason",)


TITLED = [CatalogItem("SKU000", "Oak Picture Frame"), CatalogItem("SKU001", "Oak Wall Hanging"),
          CatalogItem("SKU002", "Oak Picture Frame, Large"), CatalogItem("SKU003", "Mug"),
          CatalogItem("SKU004", "Tea Towel")]


def test_a_reason_that_begins_with_another_candidates_title_is_a_problem():
    # SmolLM2's real failure: C01's reason is C02's catalogue row, a false title and price for C01.
    text = (
        "1. C01 | OAK WALL-HANGING (Home Decor, price 20.99)\n"   # another's title, any case or punctuation
        "2. C02 | Oak wall hanging: warm wood for the hall.\n"    # its own title: fine
        "3. C03 | Oak Picture Frame, large enough for posters.\n"  # C01's title begins its own: fine
        "4. C05 | Mug sized and easy to fold.\n"                  # 'Mug' is too short to be a description
        "5. C04 | Tea towels to go with it."                      # another's title, as a plural
    )
    view = make_view("ctx", "shop", [], TITLED)
    parsed = parse_list(text, view, 5)
    assert [(p["kind"], p["position"]) for p in parsed.problems] == [
        ("other_item_reason", 1), ("other_item_reason", 5)]
    assert "SKU001" in parsed.problems[0]["detail"] and "SKU004" in parsed.problems[1]["detail"]
    assert [i.item_id for i in parsed.items] == ["SKU000", "SKU001", "SKU002", "SKU004", "SKU003"]  # kept
    assert not parsed.is_valid and parsed.n_valid == 5
    # The same titles given by id with a plain mapping; without titles the rule cannot be checked.
    titles = {c.item_id: c.title for c in TITLED}
    mapping = dict(view.short_to_item)
    assert parse_list(text, mapping, 5, titles=titles).problems == parsed.problems
    assert parse_list(text, mapping, 5).is_valid
    assert parse_list("1. C02 | Oak Wall Hanging, solid oak.", view, 1).is_valid
    assert parse_list("1. C02 | Warm wood to match the Oak Picture Frame.", view, 1).is_valid  # a mention


def test_annotators_see_a_badge_on_an_item_that_describes_another():
    from rlhf.annotation import shown_list

    items = {c.item_id: c for c in TITLED}
    reasons = ["Oak Wall Hanging (Home Decor, price 20.99)", "Oak Wall Hanging for the hall."]
    gen = {"items": [{"item_id": "SKU000", "reason": reasons[0]}, {"item_id": "SKU001", "reason": reasons[1]}],
           "problems": parse_list(f"1. C01 | {reasons[0]}\n2. C02 | {reasons[1]}",
                                  make_view("c", "s", [], TITLED), 2).problems}
    shown = shown_list(gen, items, set(items))
    assert [i.badges for i in shown.items] == [("describes another item",), ()]
    assert shown.problems == ("describes another item",)


def test_without_catalogue_a_real_unknown_id_is_unknown():
    assert kinds(parse_list("1. SKU900 | x", MAPPING, 1)) == ["unknown_id", "too_few"]


def test_too_many_keeps_the_first_n():
    text = "\n".join(f"{k}. C{k:02d} | reason {k}" for k in range(1, 8))
    parsed = parse_list(text, MAPPING, 5)
    assert len(parsed.items) == 5 and kinds(parsed) == ["too_many"]
    assert "2 items" in parsed.problems[0]["detail"]


def test_empty_and_odd_inputs():
    assert kinds(parse_list("", MAPPING, 5)) == ["unparseable", "too_few"]
    assert kinds(parse_list(None, MAPPING, 2)) == ["unparseable", "too_few"]
    assert parse_list("1. C01 | x", None, 1).problems  # no mapping: nothing is a candidate
    assert parse_list("1. C01 | fine", MAPPING, "not a number").n_expected == 0


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400), st.integers(min_value=0, max_value=8))
def test_arbitrary_text_never_raises_and_keeps_invariants(text, n):
    parsed = parse_list(text, MAPPING, n, catalog_ids=CATALOG)
    ids = [i.item_id for i in parsed.items]
    assert len(ids) <= n and len(set(ids)) == len(ids)
    assert set(ids) <= set(CANDIDATES)
    assert parsed.n_valid == len(ids)
    assert parsed.is_valid == (not parsed.problems)
    assert all(p["kind"] in PROBLEM_KINDS for p in parsed.problems)


_line_chars = st.sampled_from(list(string.ascii_letters + string.digits + " |:-.*()[]#C\t") + ["\n", "é", "—"])


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(_line_chars, max_size=40),
    st.builds(lambda k, c, r: f"{k}. C{c:02d} | {r}", st.integers(0, 30), st.integers(0, 30),
              st.text(_line_chars, max_size=20)),
), max_size=12))
def test_list_shaped_noise_never_raises(lines):
    for titles in (None, {sku: f"Item C{i:02d} {'|' * (i % 3)}" for i, sku in enumerate(CANDIDATES)}):
        parsed = parse_list("\n".join(lines), MAPPING, 5, titles=titles)
        assert parsed.is_valid == (not parsed.problems) and len(parsed.items) <= 5
        assert all(p["kind"] in PROBLEM_KINDS for p in parsed.problems)


_reason = st.text(string.ascii_letters + " ,.'", min_size=1, max_size=50).filter(lambda s: any(c.isalnum() for c in s))


@hsettings(max_examples=200, deadline=None)
@given(st.permutations(list(MAPPING)), st.integers(1, 6), st.lists(_reason, min_size=6, max_size=6))
def test_well_formed_lists_round_trip(order, n, reasons):
    chosen = order[:n]
    text = "\n".join(f"{k}. {s} | {r}" for k, (s, r) in enumerate(zip(chosen, reasons), start=1))
    parsed = parse_list(text, MAPPING, n)
    assert parsed.is_valid, parsed.problems
    assert [i.item_id for i in parsed.items] == [MAPPING[s] for s in chosen]
    assert [i.reason for i in parsed.items] == [" ".join(r.split()).strip(" *_\"'`|:-–—") for r in reasons[:n]]


def test_annotators_see_a_badge_on_a_reason_that_only_copies_a_product_line():
    from rlhf.annotation import COPIED_LINE_BADGE, shown_list

    items = {c.item_id: c for c in TITLED}
    reasons = ["Oak Picture Frame (Home Decor, price 9.99)",                 # its own line, nothing else: a copy
               "Tea Towel (Kitchen, price 3.00) to match their morning cups",  # the copy, then about the shopper
               "A mug for the tea they drink",                                 # no copy
               "Oak Towel Frame (Home Decor, price 12.99)"]                    # a product line under an invented name
    gen = {"items": [{"item_id": i, "reason": r} for i, r in zip(("SKU000", "SKU004", "SKU003", "SKU001"), reasons)],
           "problems": []}
    history = [CatalogItem("H1", "Morning Cups")]
    shown = shown_list(gen, items, set(items), history=history)
    assert [i.badges for i in shown.items] == [(COPIED_LINE_BADGE,), (), (), (COPIED_LINE_BADGE,)]
    assert shown.problems == ()  # a badge for the annotator, not a parser problem: validity is unchanged
    assert [i.badges for i in shown_list(gen, items, set(items)).items] == [(), (), (), ()]  # no history: not judged
