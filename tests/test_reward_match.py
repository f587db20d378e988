"""Match features (rlhf.reward.match) and the probe that reads them: what the answer text alone cannot
say about a shopper, read from the prompt the policy saw.

The decisive case: the SAME answer text is the better list for one shopper and the worse for another
(garden lists win for gardeners, kitchen lists for cooks). A probe that reads the answer alone cannot
learn that; one with the match features must.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf.prompts import make_view, render_prompt
from rlhf.settings import load_settings
from storage.records import CatalogItem

GARDEN = ["Steel Garden Trowel", "Oak Garden Rake", "Clay Flower Pot", "Rubber Watering Can"]
KITCHEN = ["Ceramic Tea Mug", "Linen Tea Towel", "Steel Saucepan", "Bamboo Cutting Board"]
GARDEN_LIST = "1. C01 | Good for them.\n2. C02 | Good for them."
KITCHEN_LIST = "1. C05 | Good for them.\n2. C06 | Good for them."


def _item(item_id: str, title: str, category: str, price: float = 9.99) -> CatalogItem:
    return CatalogItem(item_id=item_id, title=title, category=category, price=price)


def _prompt(tokenizer, shopper: int, likes: str) -> str:
    """A real prompt: candidates C01-C04 garden items, C05-C08 kitchen items, history of one kind."""
    cands = ([_item(f"G{shopper}_{k}", f"{t} {shopper}", "Garden") for k, t in enumerate(GARDEN)]
             + [_item(f"K{shopper}_{k}", f"{t} {shopper}", "Kitchen") for k, t in enumerate(KITCHEN)])
    pool = {"garden": [("Iron Garden Shears", "Garden"), ("Wicker Plant Basket", "Garden")],
            "kitchen": [("Glass Mixing Bowl", "Kitchen"), ("Steel Whisk", "Kitchen")],
            "both": [("Iron Garden Shears", "Garden"), ("Steel Whisk", "Kitchen")]}[likes]
    history = [_item(f"H{shopper}_{k}", t, cat) for k, (t, cat) in enumerate(pool)]
    return render_prompt(tokenizer, make_view(f"ctx{shopper}", f"s{shopper}", history, cands), 2, 2000)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _embed_by_category(texts):
    """A stand-in encoder: garden lines point one way, kitchen lines another."""
    return np.array([_unit([1, 0.1]) if "Garden" in t else _unit([0.1, 1]) for t in texts])


def test_rank_and_similarity_are_read_from_the_prompt(policy_tokenizer):
    from rlhf.reward.match import MATCH_FEATURES, match_features

    gardener = _prompt(policy_tokenizer, 1, "garden")
    answers = [GARDEN_LIST, KITCHEN_LIST, "1. C07 | x\n2. C08 | y"]
    f = match_features([gardener] * 3, answers, _embed_by_category)
    assert f.shape == (3, len(MATCH_FEATURES))
    rank, best, mean = f.T
    assert rank[0] == pytest.approx(1.0 - (1 / np.log2(3)) / (7 * (1 + 1 / np.log2(3))))  # C01, C02 of 8
    assert rank[0] > rank[1] > rank[2]  # higher in the retriever's order is higher
    assert best[0] == pytest.approx(1.0, abs=1e-6) and best[1] < 0.3  # like the garden history, or not
    assert mean[0] == pytest.approx(best[0], abs=1e-6)  # every history line is a garden line here
    cook = _prompt(policy_tokenizer, 2, "kitchen")
    g = match_features([cook, cook], [GARDEN_LIST, KITCHEN_LIST], _embed_by_category)
    assert g[1, 1] > g[0, 1]  # the same texts, the other way round for a cook
    both = _prompt(policy_tokenizer, 3, "both")
    h = match_features([both], [GARDEN_LIST], _embed_by_category)[0]
    assert h[1] == pytest.approx(1.0, abs=1e-6)  # the closest earlier purchase is a garden one
    assert h[2] == pytest.approx((1.0 + float(_unit([1, 0.1]) @ _unit([0.1, 1]))) / 2, abs=1e-6)  # the average


def test_invented_repeated_and_extra_lines_buy_nothing(policy_tokenizer):
    from rlhf.reward.match import match_features

    p = _prompt(policy_tokenizer, 1, "garden")
    one = "1. C01 | A."
    f = match_features([p] * 4, [one, one + "\n2. C01 | Again.", one + "\n2. C99 | Made up.", "No list at all."],
                       _embed_by_category)
    assert (f[1] < f[0]).all() and (f[2] < f[0]).all()  # a repeat or an unknown id counts as zero
    np.testing.assert_allclose(f[1], f[2])
    np.testing.assert_array_equal(f[3], 0.0)
    longer = match_features([p], [one + "\n2. C02 | B.\n3. C03 | C."], _embed_by_category)[0]
    assert longer[1] <= f[0, 1] + 1e-6  # a weighted mean: more lines of the same quality add nothing


def test_text_that_is_not_our_prompt_gets_zeros():
    from rlhf.reward.match import match_features

    f = match_features(["Pick items for a gardener.", ""], [GARDEN_LIST, GARDEN_LIST], _embed_by_category)
    np.testing.assert_array_equal(f, 0.0)
    with pytest.raises(ValueError, match="prompts"):
        match_features(["p"], [], _embed_by_category)


def _shopper_dependent_pairs(tokenizer, shoppers: range) -> pd.DataFrame:
    rows = []
    for s in shoppers:
        likes = "garden" if s % 2 == 0 else "kitchen"
        good, bad = (GARDEN_LIST, KITCHEN_LIST) if likes == "garden" else (KITCHEN_LIST, GARDEN_LIST)
        rows.append({"prompt": _prompt(tokenizer, s, likes), "chosen": good, "rejected": bad})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("match", [True, False])
def test_only_a_probe_with_match_features_learns_a_preference_that_depends_on_the_shopper(
        policy_tokenizer, tmp_path, match):
    from rlhf.reward.train import train_reward_model

    # The raw answer lines: the very same text for every shopper (resolved lines would name each shop's items).
    settings = load_settings(store={"data_dir": tmp_path / "data"},
                             reward_model={"method": "probe", "probe_match_features": match,
                                           "probe_input_format": "policy"})
    train = _shopper_dependent_pairs(policy_tokenizer, range(16))
    result = train_reward_model(train, settings=settings, output_dir=tmp_path / "out", progress=False)
    test = _shopper_dependent_pairs(policy_tokenizer, range(100, 110))
    chosen, rejected = result.scorer.score_pairs(test["prompt"].tolist(), test["chosen"].tolist(),
                                                 test["rejected"].tolist())
    accuracy = float(np.mean(chosen > rejected))
    if match:
        assert accuracy == 1.0
        assert result.summary()["match_features"] == ["rank", "max_similarity", "mean_similarity"]
    else:  # each text wins as often as it loses: read alone, the two lists are worth the same
        np.testing.assert_allclose(chosen, rejected, atol=1e-4)
        assert accuracy == 0.0  # no pair is ordered (ties count as wrong)
        assert result.summary()["match_features"] is None


def test_a_match_probe_reloads_with_identical_scores_and_an_old_card_reads_the_answer_alone(
        policy_tokenizer, tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from rlhf.reward.probe import HEAD_FILE
    from rlhf.reward.registry import load_reward_model_from_folder, save_reward_model
    from rlhf.reward.train import train_reward_model

    settings = load_settings(store={"data_dir": tmp_path / "data"}, reward_model={"method": "probe"})
    train = _shopper_dependent_pairs(policy_tokenizer, range(8))
    result = train_reward_model(train, settings=settings, output_dir=tmp_path / "out", progress=False)
    record = save_reward_model(result, rm_id="rm_match", store=None, settings=settings, metrics={})
    prompts, answers = train["prompt"].tolist(), train["chosen"].tolist()
    reloaded = load_reward_model_from_folder(record.path, settings=settings)
    assert reloaded.match
    np.testing.assert_allclose(reloaded.score(prompts, answers), result.scorer.score(prompts, answers), atol=1e-5)
    with pytest.raises(TypeError, match="score"):
        reloaded.score_ids(reloaded.encode(prompts, answers))

    folder = Path(record.path)
    card_file = folder / "card.json"
    card = json.loads(card_file.read_text())
    del card["training"]["match_features"]  # a model saved before the match features existed
    card_file.write_text(json.dumps(card))
    width = int(reloaded.model.config.hidden_size)
    save_file({"weight": torch.ones(width)}, str(folder / HEAD_FILE))
    old = load_reward_model_from_folder(record.path, settings=settings)
    assert not old.match
    np.testing.assert_allclose(old.score(prompts, answers), old.score_ids(old.encode(prompts, answers)), atol=1e-5)


GARDEN_REASONS = "1. C01 | Handy in the garden.\n2. C05 | Handy in the kitchen."
KITCHEN_REASONS = "1. C01 | Handy in the kitchen.\n2. C05 | Handy in the garden."


def _prompt_in_order(tokenizer, shopper: int, garden_first: bool) -> str:
    """C01 is a garden item and C05 a kitchen item, or the other way round; a history of both kinds."""
    garden = [_item(f"G{shopper}_{k}", f"{t} {shopper}", "Garden") for k, t in enumerate(GARDEN)]
    kitchen = [_item(f"K{shopper}_{k}", f"{t} {shopper}", "Kitchen") for k, t in enumerate(KITCHEN)]
    cands = garden + kitchen if garden_first else kitchen + garden
    history = [_item(f"H{shopper}_0", "Wool Blanket", "Home")]
    return render_prompt(tokenizer, make_view(f"ctx{shopper}", f"s{shopper}", history, cands), 2, 2000)


def test_reason_fit_reads_whether_each_reason_is_about_its_item(policy_tokenizer):
    from rlhf.reward.match import ALL_FEATURES, match_features

    garden_first = _prompt_in_order(policy_tokenizer, 1, True)
    kitchen_first = _prompt_in_order(policy_tokenizer, 2, False)
    asked: list[list[str]] = []

    def embed_reasons(texts):
        asked.append(list(texts))
        return _embed_by_category([t.replace("garden", "Garden") for t in texts])

    prompts = [garden_first, garden_first, kitchen_first, kitchen_first]
    answers = [GARDEN_REASONS, KITCHEN_REASONS, GARDEN_REASONS, KITCHEN_REASONS]
    f = match_features(prompts, answers, _embed_by_category, columns=("reason_fit",), embed_reasons=embed_reasons)
    assert f.shape == (4, 1)
    assert f[0, 0] > f[1, 0] and f[3, 0] > f[2, 0]  # the same texts, right for one order of items, wrong for the other
    assert asked == [["Handy in the garden.", "Handy in the kitchen."]]  # reasons go to their own encoder, once
    every = match_features(prompts, answers, _embed_by_category, columns=ALL_FEATURES)
    np.testing.assert_allclose(every[:, 3], match_features(prompts, answers, _embed_by_category,
                                                           columns=("reason_fit",))[:, 0])
    np.testing.assert_allclose(every[:, :3], match_features(prompts, answers, _embed_by_category))
    with pytest.raises(ValueError, match="Unknown match features"):
        match_features(prompts, answers, _embed_by_category, columns=("tone",))


def test_reason_fit_after_copy_reads_what_follows_a_copied_product_line(policy_tokenizer):
    """Copying a candidate's line from the prompt (its title, then its bracketed details) raises ``reason_fit``
    and earns nothing in ``reason_fit_after_copy``; words of its own after the copy are read as if alone."""
    from rlhf.reward.match import match_features

    prompt = _prompt_in_order(policy_tokenizer, 1, True)  # C01 Steel Garden Trowel 1, C05 Ceramic Tea Mug 1
    assert "C01: Steel Garden Trowel 1 (" in prompt  # the line a policy copies
    copied = "1. C01 | Steel Garden Trowel 1 (Garden, price 9.99)\n2. C05 | CERAMIC TEA MUG 1 (Kitchen"
    own = "1. C01 | Handy in the garden.\n2. C05 | Handy in the kitchen."
    both = "1. C01 | Steel Garden Trowel 1 (Garden) handy in the garden.\n2. C05 | Ceramic Tea Mug 1: Handy in the kitchen."

    def embed_reasons(texts):
        return _embed_by_category([t.replace("garden", "Garden") for t in texts])

    f = match_features([prompt] * 3, [copied, own, both], _embed_by_category,
                       columns=("reason_fit", "reason_fit_after_copy"), embed_reasons=embed_reasons)
    fit, after = f.T
    assert fit[0] == pytest.approx(1.0, abs=1e-6)  # a copy fits its item perfectly
    assert after[0] == 0.0  # and says nothing
    assert after[1] == pytest.approx(fit[1], abs=1e-6) and after[1] > 0.9  # no copy: the whole reason
    assert after[2] == pytest.approx(after[1], abs=1e-6)  # the reason's own words, after the copy


def test_only_a_probe_that_reads_reasons_learns_which_reason_fits_which_item(policy_tokenizer, tmp_path):
    """The same two answers (the same items, their reasons swapped) for shoppers whose candidate table
    puts a garden or a kitchen item first: each text wins as often as it loses, so only the reasons' fit
    to the items they sit next to can tell them apart. The card records the column and a reload scores alike."""
    import json

    from rlhf.errors import ModelNotFoundError
    from rlhf.reward.registry import load_reward_model_from_folder, save_reward_model
    from rlhf.reward.train import train_reward_model

    def pairs(shoppers: range) -> pd.DataFrame:
        return pd.DataFrame([{"prompt": _prompt_in_order(policy_tokenizer, s, s % 2 == 0),
                              "chosen": GARDEN_REASONS if s % 2 == 0 else KITCHEN_REASONS,
                              "rejected": KITCHEN_REASONS if s % 2 == 0 else GARDEN_REASONS} for s in shoppers])

    test = pairs(range(100, 110))
    accuracy, results = {}, {}
    for reads in (True, False):
        settings = load_settings(store={"data_dir": tmp_path / "data"},
                                 reward_model={"method": "probe", "probe_input_format": "policy",
                                               "probe_reason_features": reads})
        result = results[reads] = train_reward_model(pairs(range(16)), settings=settings,
                                                     output_dir=tmp_path / f"out_{reads}", progress=False)
        chosen, rejected = result.scorer.score_pairs(test["prompt"].tolist(), test["chosen"].tolist(),
                                                     test["rejected"].tolist())
        accuracy[reads] = float(np.mean(chosen > rejected))
    assert accuracy == {True: 1.0, False: 0.0}  # without reason_fit both answers score alike (a tie is wrong)
    assert results[True].summary()["match_features"] == ["rank", "max_similarity", "mean_similarity",
                                                          "reason_fit_after_copy"]

    record = save_reward_model(results[True], rm_id="rm_reasons", store=None, settings=settings, metrics={})
    reloaded = load_reward_model_from_folder(record.path, settings=settings)
    prompts, answers = test["prompt"].tolist(), test["chosen"].tolist()
    np.testing.assert_allclose(reloaded.score(prompts, answers), results[True].scorer.score(prompts, answers),
                               atol=1e-5)
    card_file = Path(record.path) / "card.json"
    card = json.loads(card_file.read_text())
    card["training"]["match_features"].append("tone")  # a head from a version with a column this one lacks
    card_file.write_text(json.dumps(card))
    with pytest.raises(ModelNotFoundError, match="tone"):
        load_reward_model_from_folder(record.path, settings=settings)
