"""Batched sampling: left padding, reproducibility, stored generations, and the real default model."""

from __future__ import annotations

from datetime import datetime

import pytest
from seed import SMALL_ITEMS, seed_contexts

from rlhf.generate import default_policy_id, generate_for_store, generate_lists, left_pad
from rlhf.prompts import make_view
from storage.catalog import insert_items
from storage.contexts import insert_contexts
from storage.generations import count_generations, generations_for_policies, list_policies
from storage.records import CatalogItem, Context

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(policy_tokenizer):
    return policy_tokenizer


@pytest.fixture(scope="module")
def tiny_model(tiny_policy):
    return tiny_policy


def _views(n: int) -> list:
    # Different history lengths -> different prompt lengths -> real left padding in a batch.
    return [make_view(f"ctx{v}", f"s{v}", SMALL_ITEMS[: 1 + 3 * v], SMALL_ITEMS[10 + v: 16 + v]) for v in range(n)]


def test_left_pad_builds_the_mask_from_lengths_not_the_pad_id():
    ids, mask = left_pad([[5, 2, 7], [2]], pad_id=2)  # 2 is also a real token inside the first row
    assert ids.tolist() == [[5, 2, 7], [2, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_greedy_equals_one_by_one(tokenizer, tiny_model):
    views = _views(3)
    kwargs = {"n_items": 2, "samples_per_context": 1, "temperature": 0.0, "max_new_tokens": 12, "constrained": False,
                  "progress": False}
    heard: dict[int, list[int]] = {3: [], 1: []}  # lists sampled so far, after each batch (a round's progress)
    batched = generate_lists(tiny_model, tokenizer, views, batch_size=3, on_batch=heard[3].append, **kwargs)
    single = generate_lists(tiny_model, tokenizer, views, batch_size=1, on_batch=heard[1].append, **kwargs)
    assert [g.completion_ids for g in batched] == [g.completion_ids for g in single]
    assert heard == {3: [3], 1: [1, 2, 3]}
    assert len({g.prompt_tokens for g in batched}) == 3  # the batch really was padded


def test_sampling_is_reproducible_and_rows_keep_input_order(tokenizer, tiny_model):
    views = _views(2)
    kwargs = {"n_items": 2, "samples_per_context": 3, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 16,
                  "max_reason_tokens": 4, "constrained": True, "batch_size": 4, "progress": False}
    first = generate_lists(tiny_model, tokenizer, views, seed=5, **kwargs)
    again = generate_lists(tiny_model, tokenizer, views, seed=5, **kwargs)
    other = generate_lists(tiny_model, tokenizer, views, seed=6, **kwargs)
    assert [(g.context_id, g.sample_index) for g in first] == [(v.context_id, s) for v in views for s in range(3)]
    assert [g.raw_text for g in first] == [g.raw_text for g in again]
    assert [g.raw_text for g in first] != [g.raw_text for g in other]
    assert len({g.raw_text for g in first}) > 1  # samples of one context differ
    for g in first:
        assert g.prompt.endswith("<|im_start|>assistant\n") and g.completion_tokens == len(g.completion_ids)


def test_generate_for_store_writes_generations_and_the_policy(store, settings, tokenizer, tiny_model):
    seed_contexts(store)
    settings = settings.model_copy(update={"generation": settings.generation.model_copy(
        update={"list_length": 2, "max_new_tokens": 32, "max_reason_tokens": 5, "samples_per_context": 2})})
    run = generate_for_store(store, settings, "pol-test", model=tiny_model, tokenizer=tokenizer, progress=False)
    assert run.n_contexts == 2 and run.n_generations == 4  # train split only, 2 samples each
    assert run.n_valid == 4  # constrained by default
    with store.transaction() as con:
        gens = generations_for_policies(con, ["pol-test"])
        policies = {p.policy_id: p for p in list_policies(con)}
    assert policies["pol-test"].kind == "llm" and policies["pol-test"].base_model == settings.model.policy
    assert sorted(g.context_id for g in gens) == ["ctx0", "ctx0", "ctx1", "ctx1"]
    for g in gens:
        assert g.is_valid and g.problems == [] and len(g.items) == 2 and g.raw_text.startswith("1. C")
        assert {i.item_id for i in g.items} <= {f"SKU{k}" for k in range(10, 18)}
        assert g.sampling["constrained"] is True and g.sampling["temperature"] == 0.8
        assert g.sampling["forbid_example"] is settings.generation.forbid_example is True
        assert g.sampling["seed"] == settings.generation.seed and len(g.sampling["prompt_sha1"]) == 16
        assert g.prompt_tokens > 100 and 0 < g.completion_tokens <= 32
    # Again: only contexts without lists of this policy are sampled (none left in train).
    again = generate_for_store(store, settings, "pol-test", model=tiny_model, tokenizer=tokenizer, progress=False)
    assert again.n_generations == 0
    held = generate_for_store(store, settings, "pol-test", split="heldout", samples_per_context=1,
                              constrained=False, model=tiny_model, tokenizer=tokenizer, progress=False)
    assert held.n_generations == 1
    with store.transaction() as con:
        assert count_generations(con, policy_id="pol-test") == 5
        (g,) = [x for x in generations_for_policies(con, ["pol-test"]) if x.context_id == "ctx2"]
    assert g.sampling["constrained"] is False and not g.is_valid and g.problems  # random weights, no format


def test_generate_for_store_unknown_context_is_a_clear_error(store, settings, tokenizer, tiny_model):
    from storage import NotFoundError

    seed_contexts(store)
    with pytest.raises(NotFoundError, match="nope"):
        generate_for_store(store, settings, "p", context_ids=["nope"], model=tiny_model, tokenizer=tokenizer)
    # A baseline writes template lists without a model: it refuses an unknown context the same way
    # (it said "nothing to do: every context already has lists").
    with pytest.raises(NotFoundError, match="nope"):
        generate_for_store(store, settings, "baseline-popularity", context_ids=["ctx0", "nope"])


def test_default_policy_id_names_the_model(settings):
    assert default_policy_id(settings.model.policy).startswith("base-smollm2-135m-instruct")


def test_real_default_model_writes_a_valid_list(store, settings):
    """The real SmolLM2-135M-Instruct from the wheel, constrained, on a context from a tiny catalogue."""
    from rlhf.models import policy_from_settings

    items = [
        CatalogItem("MUG1", "White ceramic coffee mug", None, "Kitchen", 6.5),
        CatalogItem("TEA1", "Loose leaf green tea, 100 g", None, "Kitchen", 8.0),
        CatalogItem("KET1", "Electric kettle, 1.7 litre", None, "Kitchen", 29.0),
        CatalogItem("SPO1", "Set of four teaspoons", None, "Kitchen", 9.0),
        CatalogItem("GLV1", "Gardening gloves", None, "Garden", 12.0),
        CatalogItem("POT1", "Glazed teapot, 1 litre", None, "Kitchen", 24.0),
    ]
    with store.transaction() as con:
        insert_items(con, items)
        insert_contexts(con, [Context("real1", "s1", datetime(2024, 5, 1), ["MUG1", "TEA1"],
                                      ["KET1", "SPO1", "GLV1", "POT1"])])
    model, _ = policy_from_settings(settings)
    assert policy_from_settings(settings)[0] is model  # loaded once per process
    settings = settings.model_copy(update={"generation": settings.generation.model_copy(
        update={"list_length": 2, "max_new_tokens": 40, "max_reason_tokens": 8, "samples_per_context": 1})})
    run = generate_for_store(store, settings, context_ids=["real1"], progress=False)
    assert run.policy_id == default_policy_id(settings.model.policy) and run.n_generations == 1
    with store.transaction() as con:
        (g,) = generations_for_policies(con, [run.policy_id])
    assert g.is_valid, (g.raw_text, g.problems)
    assert [i.item_id for i in g.items] and {i.item_id for i in g.items} <= {"KET1", "SPO1", "GLV1", "POT1"}
    assert all(any(ch.isalpha() for ch in i.reason) for i in g.items)


def test_bootstrap_queue_fills_the_queue_with_pairs_of_fresh_lists(store, settings, tokenizer, tiny_model):
    from rlhf.pairs import bootstrap_queue, lists_identical
    from storage.generations import get_generations, list_pairs

    seed_contexts(store)
    settings = settings.model_copy(update={"generation": settings.generation.model_copy(
        update={"list_length": 2, "max_new_tokens": 32, "max_reason_tokens": 5})})
    reports = bootstrap_queue(store, settings, 2, policy_id="pol-boot", model=tiny_model, tokenizer=tokenizer,
                              progress=False)
    assert sum(r.created for r in reports) == 2
    with store.transaction() as con:
        pairs = list_pairs(con)
        gens = get_generations(con, [g for p in pairs for g in (p.gen_a, p.gen_b)])
    assert len(pairs) == 2 and {p.context_id for p in pairs} == {"ctx0", "ctx1"}
    for p in pairs:
        a, b = gens[p.gen_a], gens[p.gen_b]
        assert a.context_id == b.context_id == p.context_id and a.policy_id == b.policy_id == "pol-boot"
        assert not lists_identical(a, b)
        assert p.overlap_target == settings.queue.overlap_target


@pytest.mark.parametrize(("flag", "shown"), [([], True), (["--no-progress"], False)])
def test_generate_command_shows_its_progress_bar_unless_told_not_to(tmp_path, monkeypatch, flag, shown):
    """`generate --no-progress` for logs and scripts, as `round run` and `pairs bootstrap` have it."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from rlhf import generate as generate_module
    from rlhf import runtime
    from rlhf.cli import app
    from rlhf.settings import get_settings

    asked: dict = {}

    def fake_generate_for_store(store, settings, policy_id, **kwargs):
        asked.update(kwargs)
        return SimpleNamespace(generation_ids=[], policy_id="p")

    monkeypatch.setattr(generate_module, "generate_for_store", fake_generate_for_store)
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    from storage import Store

    Store(tmp_path / "data" / "recfeedback.duckdb")  # generate writes into a store; it does not make one
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    try:
        result = CliRunner().invoke(app, ["generate", *flag])
    finally:
        get_settings.cache_clear()
        runtime._open_store.cache_clear()
    assert result.exit_code == 0, result.output
    assert asked["progress"] is shown
