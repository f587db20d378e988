"""Constrained decoding: the grammar on hand-written sequences, generated lists, and identical masks
for generation (logits processor) and teacher-forced recomputation (apply_constraint)."""

from __future__ import annotations

import pytest
import torch

from rlhf.constrained import ConstrainedListProcessor, apply_constraint, constraint_for_view, token_table
from rlhf.generate import generate_lists, left_pad
from rlhf.parsing import parse_list
from rlhf.prompts import EXAMPLE_REASON, copies_example, letters_and_digits, make_view, render_prompt
from storage.records import CatalogItem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(policy_tokenizer):
    return policy_tokenizer


@pytest.fixture(scope="module")
def tiny_model(tiny_policy):
    return tiny_policy


def _views(n: int, n_candidates: int = 6) -> list:
    cats = ["Kitchen", "Garden", "Toys"]
    items = [CatalogItem(f"SKU{i}", f"Thing {i}", None, cats[i % 3], 1.0 + i) for i in range(40)]
    return [make_view(f"ctx{v}", f"s{v}", items[v:v + 2], items[10 + v: 10 + v + n_candidates]) for v in range(n)]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_grammar_on_hand_written_completions(tokenizer):
    view = _views(1)[0]
    c = constraint_for_view(tokenizer, view, 2, max_reason_tokens=10)
    eos = tokenizer.eos_token_id
    assert c.follows(_ids(tokenizer, "1. C03 | Nice mug.\n2. C01 | Good.") + [eos])
    assert c.follows(_ids(tokenizer, "1. C03 | Nice mug.\n2. C01 | Good.\n") + [eos])
    assert not c.follows(_ids(tokenizer, "1. C03 | Nice.\n2. C03 | Again.") + [eos])  # duplicate id
    assert not c.follows(_ids(tokenizer, "1. C07 | Not offered."))  # only 6 candidates
    assert not c.follows(_ids(tokenizer, "1. C03 |\n"))  # a reason needs a word
    assert not c.follows(_ids(tokenizer, "1. C03 | Fine.") + [eos])  # EOS before the last line
    assert not c.follows(_ids(tokenizer, "2. C03 | Wrong rank."))
    assert not c.follows(_ids(tokenizer, "1. C03 | a | b"))  # no "|" inside a reason
    # In the reason's last 3 tokens before its cap (10 here) no new word may start; after the cap the
    # line must end: only the newline token is allowed.
    table = token_table(tokenizer)
    state = c.start()
    for tok in _ids(tokenizer, "1. C03 | one two three four five six seven"):
        state = c.advance(state, tok)
    assert state.reason_tokens == 7
    closing = c.allowed(state)
    eight, comma, teen = _ids(tokenizer, " eight")[0], _ids(tokenizer, ",")[0], _ids(tokenizer, "teen")[0]
    blank = _ids(tokenizer, " ")[0]  # a blank alone would let the next word start without one
    assert eight not in closing and blank not in closing
    assert comma in closing and teen in closing and table.newline_id in closing
    for _ in range(3):
        state = c.advance(state, comma)
    assert c.allowed(state).only == frozenset({table.newline_id})
    assert not c.follows(_ids(tokenizer, "1. C03 | one two three four five six seven eight nine ten"))


def test_constrained_lists_are_always_valid(tokenizer, tiny_model):
    views = _views(4)
    lists = generate_lists(tiny_model, tokenizer, views, n_items=3, samples_per_context=2, temperature=1.0,
                           top_p=1.0, top_k=0, max_new_tokens=60, max_reason_tokens=6, seed=3, constrained=True,
                           batch_size=4, progress=False)
    assert len(lists) == 8
    for g, view in zip(lists, [v for v in views for _ in range(2)]):
        assert g.context_id == view.context_id
        assert g.parsed.is_valid, (g.raw_text, g.parsed.problems)
        assert {i.item_id for i in g.parsed.items} <= set(view.candidate_ids)
        assert constraint_for_view(tokenizer, view, 3, 6).follows(g.completion_ids)
    unconstrained = generate_lists(tiny_model, tokenizer, views, n_items=3, samples_per_context=1, temperature=1.0,
                                   max_new_tokens=30, seed=3, constrained=False, batch_size=4, progress=False)
    assert not any(g.parsed.is_valid for g in unconstrained)  # a random model does not find the format alone


def test_processor_masks_equal_recomputed_masks(tokenizer, tiny_model):
    views = _views(3)
    prompts = [_ids(tokenizer, render_prompt(tokenizer, v, 2, 1024)) for v in views]
    input_ids, attention = left_pad(prompts, tokenizer.eos_token_id)
    width = input_ids.shape[1]
    constraints = [constraint_for_view(tokenizer, v, 2, max_reason_tokens=5) for v in views]
    torch.manual_seed(11)
    with torch.inference_mode():
        out = tiny_model.generate(
            input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=30, pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
            logits_processor=[ConstrainedListProcessor(constraints, width)],
            output_scores=True, return_dict_in_generate=True,
        )
    completion = out.sequences[:, width:]
    sampled = torch.stack(out.scores, dim=1)  # [B, T, V] scores after our processor
    eos = tokenizer.eos_token_id
    lengths = [(row == eos).nonzero()[0].item() + 1 if (row == eos).any() else len(row) for row in completion]
    completion_mask = torch.tensor([[1] * n + [0] * (completion.shape[1] - n) for n in lengths])
    with torch.inference_mode():
        logits = tiny_model(
            input_ids=out.sequences, attention_mask=torch.cat([attention, completion_mask], dim=1)
        ).logits[:, width - 1:-1, :]
    recomputed = apply_constraint(logits.float(), completion, constraints)
    n_checked = 0
    for b, n in enumerate(lengths):
        assert torch.equal(torch.isfinite(sampled[b, :n]), torch.isfinite(recomputed[b, :n]))
        finite = torch.isfinite(sampled[b, :n])
        assert torch.allclose(sampled[b, :n][finite], recomputed[b, :n][finite], atol=1e-3)
        assert constraints[b].follows(completion[b, :n].tolist())
        assert parse_list(tokenizer.decode(completion[b, :n - 1]), views[b], 2).is_valid
        n_checked += n
    assert n_checked > 20
    # Forced tokens (one allowed choice) have log-prob 0 under the constraint.
    logp = torch.log_softmax(recomputed, dim=-1).gather(-1, completion[..., None])[..., 0]
    forced = torch.isfinite(recomputed).sum(-1) == 1
    assert forced.any() and torch.allclose(logp[forced], torch.zeros_like(logp[forced]))


def test_apply_constraint_checks_shapes(tokenizer):
    c = constraint_for_view(tokenizer, _views(1)[0], 2)
    with pytest.raises(ValueError):
        apply_constraint(torch.zeros(1, 3, 10), torch.zeros(1, 4, dtype=torch.long), [c])
    with pytest.raises(ValueError):
        apply_constraint(torch.zeros(2, 3, 10), torch.zeros(2, 3, dtype=torch.long), [c])


def _walk(constraint, ids):
    """Advance through ``ids``; return (index of the first token the grammar refuses or None, state)."""
    state = constraint.start()
    for k, tok in enumerate(ids):
        if tok not in constraint.allowed(state):
            return k, state
        state = constraint.advance(state, tok)
    return None, state


def _refused_reason(tokenizer, reason: str):
    """A two-line list whose first reason is ``reason``: (the product's grammar, the ids, the index of the
    first token that grammar refuses or None); the grammar without the example rule accepts it all."""
    view = _views(1)[0]
    guarded = constraint_for_view(tokenizer, view, 2)
    ids = _ids(tokenizer, f"1. C03 | {reason}\n2. C01 | Good.") + [tokenizer.eos_token_id]
    assert constraint_for_view(tokenizer, view, 2, forbid_example=False).follows(ids)
    return guarded, ids, _walk(guarded, ids)[0]


@pytest.mark.parametrize("spelling", [
    EXAMPLE_REASON,
    EXAMPLE_REASON.lower(),
    "A teapot, to go with the mugs they bought LAST month!",
])
def test_the_prompts_example_reason_cannot_be_repeated(tokenizer, spelling):
    guarded, ids, refused = _refused_reason(tokenizer, spelling)
    assert not guarded.follows(ids)
    # The first three words are free ("A teapot to ..." can be a reason of its own); the fourth is not.
    said = tokenizer.decode(ids[:refused])
    assert said.endswith(" to") and "go" in tokenizer.decode(ids[refused:refused + 1])
    # The rule holds on every line; a reason that starts the same way and then says something of its
    # own is fine.
    assert not guarded.follows(_ids(tokenizer, "1. C03 | A teapot to match their green mugs.\n"
                                               f"2. C01 | {EXAMPLE_REASON}") + [tokenizer.eos_token_id])
    assert guarded.follows(_ids(tokenizer, "1. C03 | A teapot to match their green mugs.\n"
                                           "2. C01 | A teapot to brew loose tea.") + [tokenizer.eos_token_id])


def _words(text: str) -> list[str]:
    return [w for w in (letters_and_digits(x) for x in text.split()) if w]


def _five_example_words(reason: str) -> bool:
    """Five of the example's words in a row (the benchmarks' "near copy"; counted in words, while the
    grammar counts letters: an independent check)."""
    example, said = _words(EXAMPLE_REASON), _words(reason)
    runs = {tuple(example[i:i + 5]) for i in range(len(example) - 4)}
    return any(tuple(said[i:i + 5]) in runs for i in range(len(said) - 4))


def _shared_run(a: str, b: str) -> int:
    """The longest run of letters and digits that ``a`` and ``b`` share."""
    from difflib import SequenceMatcher

    a, b = letters_and_digits(a), letters_and_digits(b)
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


@pytest.mark.parametrize("near_copy", [
    "A teapot to drink with the mugs they bought last month.",
    "Perfect with the mugs they bought last month.",
    "Goes well with the MUGS, they bought last month",
])
def test_near_copies_of_the_example_are_cut_before_five_of_its_words(tokenizer, near_copy):
    _, ids, refused = _refused_reason(tokenizer, near_copy)
    assert refused is not None
    said = tokenizer.decode(ids[:refused]).split("|", 1)[1]
    with_next = tokenizer.decode(ids[:refused + 1]).split("|", 1)[1]
    # Refused at the token that makes the shared run longer than the longest that is not five words.
    assert _shared_run(said, EXAMPLE_REASON) <= 14 < _shared_run(with_next, EXAMPLE_REASON)
    assert not _five_example_words(said)


def test_reasons_that_share_a_few_of_the_examples_words_are_allowed(tokenizer):
    view = _views(1)[0]
    guarded = constraint_for_view(tokenizer, view, 2)
    # "to go with the" (4 words) and "they bought last" (3 words, 14 letters) are ordinary phrases.
    lines = "1. C03 | A mug to go with the teapot they own.\n2. C01 | Pairs with the kettle they bought last week."
    assert guarded.follows(_ids(tokenizer, lines) + [tokenizer.eos_token_id])
    assert _shared_run("Pairs with the kettle they bought last week.", EXAMPLE_REASON) == 14


NEAR_COPY = "A teapot to drink with the mugs they bought last month."  # seen on the Label page, 2026-12-05


@pytest.mark.parametrize("wanted", [EXAMPLE_REASON, NEAR_COPY])
def test_a_model_that_wants_to_copy_the_example_writes_its_own_reason(tokenizer, wanted):
    """Logits that always favour the next token of the example reason (or of a near copy of it),
    decoded greedily through the processor: every line still gets a valid reason that is neither the
    example nor five of its words in a row."""
    view = _views(1, n_candidates=6)[0]
    constraints = [constraint_for_view(tokenizer, view, 3)]
    processor = ConstrainedListProcessor(constraints, prompt_length=0)
    vocab = len(tokenizer)
    copy_path = _ids(tokenizer, f" {wanted}\n")
    ids: list[int] = []
    for _ in range(120):
        state = constraints[0].start()
        for tok in ids:
            state = constraints[0].advance(state, tok)
        logits = torch.zeros(1, vocab)
        if state.phase == "reason":  # the copy path's next token, scored far above the rest
            logits[0, copy_path[min(state.reason_tokens, len(copy_path) - 1)]] = 20.0
        nxt = int(processor(torch.tensor([ids], dtype=torch.long), logits).argmax())
        ids.append(nxt)
        if nxt == tokenizer.eos_token_id:
            break
    parsed = parse_list(tokenizer.decode(ids[:-1]), view, 3)
    assert ids[-1] == tokenizer.eos_token_id and parsed.is_valid, (tokenizer.decode(ids), parsed.problems)
    assert all(not copies_example(it.reason) and not _five_example_words(it.reason) for it in parsed.items)
    assert all(it.reason.lower().startswith("a teapot to") for it in parsed.items)  # it did try to copy


@pytest.mark.parametrize("forbid", [True, False])
def test_ppo_recomputes_log_probs_under_the_same_rule(tokenizer, forbid):
    """PPO's grammar comes from the generation settings, so a copy it could not have sampled gets
    log-prob -inf in the update exactly when generation forbids it."""
    from rlhf.ppo.product import ListGrammarConstraint
    from rlhf.settings import load_settings

    view = _views(1)[0]
    settings = load_settings(generation={"forbid_example": forbid})
    grammar = ListGrammarConstraint.from_settings(tokenizer, settings)
    lines = [f"1. C03 | {EXAMPLE_REASON}"] + [f"{k}. C0{k + 3 if k < 4 else k - 3} | Good." for k in range(2, 6)]
    assert grammar.n_items == 5 == len(lines)
    ids = _ids(tokenizer, "\n".join(lines)) + [tokenizer.eos_token_id]
    logits = grammar.apply(torch.zeros(1, len(ids), len(tokenizer)), torch.tensor([ids]),
                           [{"short_ids": view.short_ids}])
    picked = logits[0].gather(-1, torch.tensor(ids)[:, None])[:, 0]
    assert bool(torch.isfinite(picked).all()) is not forbid
