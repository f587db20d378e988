"""Prompt building: short ids, the chat template, the token budget, views from the store."""

from __future__ import annotations

from datetime import datetime

import pytest

from rlhf.models import get_tokenizer
from rlhf.prompts import (
    PromptTooLongError,
    attribute_details,
    build_context_view,
    build_messages,
    count_tokens,
    make_view,
    render_prompt,
    render_prompt_with_info,
    short_id_for,
)
from storage.catalog import insert_items
from storage.contexts import insert_contexts
from storage.records import CatalogItem, Context


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.settings import load_settings

    return get_tokenizer(load_settings().model.policy)


def _items(n: int, prefix: str = "I", tail: str = "") -> list[CatalogItem]:
    return [CatalogItem(f"{prefix}{i}", f"Product number {i} with a fairly long descriptive title" + tail, None,
                        "Kitchen" if i % 2 else "Garden", 1.5 + i) for i in range(n)]


def test_short_ids():
    assert [short_id_for(i, 20) for i in (0, 9, 19)] == ["C01", "C10", "C20"]
    assert short_id_for(0, 120) == "C001"
    view = make_view("c", "s", [], _items(3) + _items(1))  # duplicate candidate dropped
    assert view.short_ids == ["C01", "C02", "C03"] and view.short_to_item["C02"] == "I1"


def test_messages_list_history_candidates_and_format():
    view = make_view("c", "s", _items(2, "H"), _items(3))
    system, user = build_messages(view, 3)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert "C01: Product number 0" in text and "(Garden, price 1.50)" in text
    assert "- Product number 1 with a fairly long descriptive title (Kitchen, price 2.50)" in text
    assert "exactly 3 lines" in text and "<rank>. <candidate id> | <one-sentence reason>" in text


def test_render_prompt_uses_the_chat_template(tokenizer):
    view = make_view("c", "s", _items(2, "H"), _items(4))
    prompt = render_prompt(tokenizer, view, 2, 2000)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert render_prompt(tokenizer, view, 2, 2000) == prompt  # deterministic


def test_budget_drops_oldest_history_first_then_shortens_titles(tokenizer):
    history = [CatalogItem(f"H{i}", f"History item {i}") for i in range(30)]
    tail = ", made of recycled glass in a small workshop near the sea, sold in packs of two"
    view = make_view("c", "s", history, _items(5, tail=tail))
    full, info = render_prompt_with_info(tokenizer, view, 3, 10_000)
    assert info["history_kept"] == 30
    budget = count_tokens(tokenizer, full) - 60
    prompt, info = render_prompt_with_info(tokenizer, view, 3, budget)
    assert count_tokens(tokenizer, prompt) <= budget
    assert 0 < info["history_kept"] < 30 and not info["titles_shortened"]
    assert "History item 29" in prompt and "History item 0 " not in prompt  # most recent kept
    assert all(f"C0{k}:" in prompt for k in range(1, 6))  # candidates are never dropped
    no_history = render_prompt(tokenizer, make_view("c", "s", [], _items(5, tail=tail)), 3, 10_000)
    tight = count_tokens(tokenizer, no_history) - 5
    prompt, info = render_prompt_with_info(tokenizer, view, 3, tight)
    # Even without history it did not fit: titles are shortened (which may leave room for some history).
    assert info["titles_shortened"] and "…" in prompt and count_tokens(tokenizer, prompt) <= tight
    assert all(f"C0{k}:" in prompt for k in range(1, 6))
    with pytest.raises(PromptTooLongError, match="max_prompt_tokens"):
        render_prompt(tokenizer, view, 3, 50)


def test_view_from_store_skips_items_missing_from_the_catalogue(store):
    with store.transaction() as con:
        insert_items(con, _items(4))
        insert_contexts(con, [Context("ctx1", "s1", datetime(2024, 1, 1), ["I0", "GONE"], ["I1", "I2", "NOPE", "I3"])])
    view = build_context_view(store, "ctx1")
    assert [h.item_id for h in view.history] == ["I0"]
    assert view.candidate_ids == ["I1", "I2", "I3"] and view.short_ids == ["C01", "C02", "C03"]
    with store.transaction() as con:
        assert build_context_view(con, "ctx1") == view


def test_items_carry_the_named_attributes_unless_the_title_says_them():
    navy = CatalogItem("I1", "Oak lamp", None, "Lighting", 30.0,
                       {"color": "Navy", "material": "Oak", "rating": 4.5, "stock": 3, "tags": ["a"], "new": True})
    assert attribute_details(navy, ("rating", "color", "material", "tags", "new", "missing")) == [
        "rating 4.5", "color Navy"]  # the keys' order; oak is in the title; lists, flags and absent keys skipped
    assert attribute_details(navy, ()) == [] and attribute_details(CatalogItem("I2", "Mug"), ("color",)) == []
    view = make_view("c", "s", [navy], [navy, *_items(2)], attributes=("color", "rating"))
    text = build_messages(view, 2)[1]["content"]
    assert "- Oak lamp (Lighting, price 30.00; color Navy, rating 4.5)" in text
    assert "C01: Oak lamp (Lighting, price 30.00; color Navy, rating 4.5)" in text
    assert "C02: Product number 0 with a fairly long descriptive title (Garden, price 1.50)\n" in text
    bare = build_messages(make_view("c", "s", [navy], [navy], attributes=()), 1)[1]["content"]
    assert "- Oak lamp (Lighting, price 30.00)\n" in bare  # the format before attributes existed
    odd = CatalogItem("I3", "Mug", None, None, None, {"color": "Red, (dark); matte", "rating": 4})
    odd_text = build_messages(make_view("c", "s", [], [odd], attributes=("color", "rating")), 1)[1]["content"]
    assert "C01: Mug (color Red dark matte, rating 4)\n" in odd_text  # no category or price; values made safe


def test_views_take_the_attributes_from_the_settings(store, monkeypatch):
    from rlhf.settings import get_settings

    with store.transaction() as con:
        insert_items(con, [CatalogItem("I0", "Mug", None, "Kitchen", 2.0, {"color": "Red", "size": "L"})])
        insert_contexts(con, [Context("ctx1", "s1", datetime(2024, 1, 1), ["I0"], ["I0"])])
    assert build_context_view(store, "ctx1").attributes == tuple(get_settings().contexts.item_attributes)
    monkeypatch.setenv("RECFEEDBACK_CONTEXTS__ITEM_ATTRIBUTES", '["size"]')
    get_settings.cache_clear()
    try:
        view = build_context_view(store, "ctx1")
    finally:
        get_settings.cache_clear()
    assert view.attributes == ("size",) and "(Kitchen, price 2.00; size L)" in build_messages(view, 1)[1]["content"]


def test_described_title_is_the_title_the_prompt_wrote_before_its_details() -> None:
    """The reward model's reason column needs the titles a policy could copy; titles and details may hold
    brackets of their own."""
    from rlhf.prompts import _describe, described_title

    for title in ("SET OF 3 CAKE TINS (PANTRY DESIGN)", "Oak Frame", "Mug (large"):
        item = CatalogItem(item_id="i1", title=title, description=None, category="Kitchen (home)", price=4.95,
                           attributes={"material": "oak (solid)"})
        line = _describe(item, None, ["material"])
        assert line.startswith(title + " (") and described_title(line) == title
    assert described_title("Plain title") == "Plain title" and described_title("Odd)") == "Odd)"
