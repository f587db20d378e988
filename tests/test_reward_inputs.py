"""What the reward model reads: answers with their items named, the prompt reduced to the history."""

from __future__ import annotations

import pytest

from rlhf.prompts import make_view, prompt_sections, render_prompt
from rlhf.reward.backbones import encode_pair
from rlhf.reward.inputs import HISTORY_TITLE, resolve_answer, reward_inputs
from storage.records import CatalogItem


def _view(n_history: int = 3):
    history = [CatalogItem(f"H{i}", f"Old purchase {i}", None, "Garden", 3.0 + i) for i in range(n_history)]
    candidates = [CatalogItem("85123A", "White hanging heart T-light holder", None, "Home", 2.55),
                  CatalogItem("22423", "Regency cakestand 3 tier", None, "Kitchen", 12.75),
                  CatalogItem("84879", "Assorted colour bird ornament: large", None, None, 1.69)]
    return make_view("ctx1", "s1", history, candidates)


def test_prompt_sections_read_back_what_render_prompt_wrote(policy_tokenizer):
    prompt = render_prompt(policy_tokenizer, _view(), 5, 1536)
    sections = prompt_sections(prompt)
    assert sections is not None
    assert sections.history == ["Old purchase 0 (Garden, price 3.00)", "Old purchase 1 (Garden, price 4.00)",
                                "Old purchase 2 (Garden, price 5.00)"]
    assert sections.candidates == {"C01": "White hanging heart T-light holder (Home, price 2.55)",
                                   "C02": "Regency cakestand 3 tier (Kitchen, price 12.75)",
                                   "C03": "Assorted colour bird ornament: large (price 1.69)"}
    empty = prompt_sections(render_prompt(policy_tokenizer, _view(0), 5, 1536))
    assert empty is not None and empty.history == [] and len(empty.candidates) == 3
    assert prompt_sections("Which argument is more convincing?") is None


def test_resolved_inputs_name_every_item_and_keep_invalid_ids_visible(policy_tokenizer):
    prompt = render_prompt(policy_tokenizer, _view(), 5, 1536)
    answer = "1. C02 | Goes with the tea set.\n2. C09 | Invented.\n3. C01\nsome trailing chatter"
    p, r = reward_inputs(prompt, answer)
    assert p.startswith(HISTORY_TITLE) and "Old purchase 2 (Garden, price 5.00)" in p
    assert "Candidate products" not in p and "C01" not in p
    assert r.splitlines() == ["1. C02 Regency cakestand 3 tier (Kitchen, price 12.75) | Goes with the tea set.",
                              "2. C09 (not a candidate) | Invented.",
                              "3. C01 White hanging heart T-light holder (Home, price 2.55)",
                              "some trailing chatter"]
    assert reward_inputs(prompt, answer, "policy") == (prompt, answer)
    assert reward_inputs("Is this reply harmless?", "Yes.") == ("Is this reply harmless?", "Yes.")
    with pytest.raises(ValueError, match="input format"):
        reward_inputs(prompt, answer, "titles")
    assert resolve_answer("1) C01 | x", {"C01": "Mug"}) == "1) C01 Mug | x"


def test_a_small_window_keeps_the_history_and_the_items_in_resolved_form(policy_tokenizer):
    """At a MiniLM-sized budget the raw prompt loses its history (cut from the left); the resolved one
    keeps the most recent purchases and every item of the answer."""
    view = _view(12)
    prompt = render_prompt(policy_tokenizer, view, 5, 1536)
    answer = "1. C02 | For baking.\n2. C01 | For the garden shed."
    raw = policy_tokenizer.decode(encode_pair(policy_tokenizer, prompt, answer, 200, "decoder"))
    resolved = policy_tokenizer.decode(encode_pair(policy_tokenizer, *reward_inputs(prompt, answer), 200, "decoder"))
    assert "Old purchase 11" not in raw and "Regency" not in raw.split("1. C02")[-1]
    assert "Old purchase 11" in resolved and "1. C02 Regency cakestand 3 tier" in resolved


def test_a_long_prompt_is_cut_without_a_false_indexing_error_warning():
    """MiniLM's tokenizer warns that a text over 512 tokens 'will result in indexing errors'; encode_pair
    cuts it to the budget itself, so that warning would only alarm the engineer reading the logs."""
    import logging

    from transformers.utils import logging as hf_logging

    from rlhf.models import load_tokenizer
    from rlhf.reward.backbones import minilm_folder

    tokenizer = load_tokenizer(str(minilm_folder()))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logging.get_logger().addHandler(handler)
    try:
        ids = encode_pair(tokenizer, "an old purchase, " * 400, "1. C01 | A mug for tea.", 256, "encoder")
    finally:
        hf_logging.get_logger().removeHandler(handler)
    assert len(ids) <= 256 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert not [r for r in records if "sequence length" in r.getMessage()]


def test_scoring_an_unknown_policy_or_generation_is_refused_by_name(store, settings):
    """`rm score --policy-id nope` said "No generations to score." and exited 0, as if the policy had none."""
    from rlhf.errors import RecFeedbackError
    from rlhf.reward.score import score_generations
    from tests.seed import seed_store

    seed_store(store, n_pairs=2)
    with pytest.raises(RecFeedbackError, match="No policy 'nope'"):
        score_generations(store, None, settings, policy_id="nope")  # refused before any model is used
    with pytest.raises(RecFeedbackError, match="No generation 'gen_nope' in the store"):
        score_generations(store, None, settings, generation_ids=["gen_nope"])
