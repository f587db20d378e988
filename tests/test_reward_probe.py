"""The small-data reward model (rlhf.reward.probe): its objective, its choice by label count, and the
real path with the packaged MiniLM encoder: store -> snapshot -> probe -> held-out evaluation -> registry.

The learnable preference is test_reward_dataset's: the list whose reasons contain a keyword wins.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_reward_dataset import KEYWORD, build_preference_store

from rlhf.settings import load_settings
from storage import Store

N_CONTEXTS = 40


def test_fit_recovers_the_preference_direction_and_predicts_fresh_pairs():
    from rlhf.reward.probe import fit_bradley_terry

    rng = np.random.default_rng(0)
    w_true = rng.normal(size=16)
    w_true /= np.linalg.norm(w_true) / 3.0

    def draw(n):
        d = rng.normal(size=(n, 16))
        p = 1.0 / (1.0 + np.exp(-(d @ w_true)))
        first_wins = rng.random(n) < p
        return np.where(first_wins[:, None], d, -d), d  # chosen - rejected, and the raw pair

    diffs, _ = draw(3000)
    w, losses = fit_bradley_terry(diffs, l2=0.25)
    assert losses[0] == pytest.approx(np.log(2.0))  # w starts at zero
    assert losses[1] < losses[0] - 0.2
    assert float(w @ w_true / np.linalg.norm(w) / np.linalg.norm(w_true)) > 0.95
    _, fresh = draw(2000)
    agree = np.mean(np.sign(fresh @ w) == np.sign(fresh @ w_true))
    assert agree > 0.93


def test_margins_and_l2_move_the_fit_the_way_the_objective_says():
    from rlhf.reward.probe import fit_bradley_terry

    rng = np.random.default_rng(1)
    diffs = np.abs(rng.normal(size=(200, 4))) * np.array([1.0, 0.5, 0.0, 0.0])  # separable on two features
    plain, _ = fit_bradley_terry(diffs, l2=1.0)
    with_margin, _ = fit_bradley_terry(diffs, np.full(len(diffs), 2.0), l2=1.0)
    strong_l2, _ = fit_bradley_terry(diffs, l2=100.0)

    def gap(w):
        return float(np.mean(diffs @ w))

    assert gap(with_margin) > gap(plain) + 0.5  # a margin asks for a larger score gap
    assert np.linalg.norm(strong_l2) < 0.5 * np.linalg.norm(plain)
    assert np.allclose(plain[2:], 0.0, atol=1e-6)  # features that never differ get no weight


@pytest.mark.parametrize(("method", "n", "expected"), [
    ("auto", 10, "probe"), ("auto", 1999, "probe"), ("auto", 2000, "lora"), ("lora", 10, "lora"),
    ("probe", 10**6, "probe"),
])
def test_the_method_follows_the_setting_and_the_label_count(method, n, expected):
    from rlhf.reward.train import choose_method

    settings = load_settings(reward_model={"method": method, "probe_max_examples": 2000})
    assert choose_method(settings, n) == expected


@pytest.fixture(scope="module")
def probe_model(tmp_path_factory):
    """A probe trained through the round's entry point on a keyword preference, with the real MiniLM."""
    from rlhf.reward.train import train_from_store

    root = tmp_path_factory.mktemp("probe")
    settings = load_settings(
        store={"data_dir": root / "data"},
        reward_model={"method": "auto", "probe_backbone": "minilm", "min_examples": 4, "heldout_fraction": 0.3,
                      "backbone": "policy"},
    )
    store = Store.from_settings(settings)
    votes = {i: [("ann1", "A" if i % 2 == 0 else "B", 1 + i % 3)] for i in range(N_CONTEXTS)}
    build_preference_store(store, n_contexts=N_CONTEXTS, votes=votes, keyword_side=None)
    return settings, store, train_from_store(settings, store=store, progress=False)


def test_auto_trains_a_probe_on_few_labels_that_generalises_to_heldout_contexts(probe_model):
    settings, _, record = probe_model
    card = record.card
    assert card["training"]["method"] == "probe"
    assert record.backbone == "minilm"  # the probe's encoder, not reward_model.backbone ('policy')
    assert card["training"]["input_format"] == settings.reward_model.probe_input_format
    assert card["objective"].startswith("Bradley-Terry") and "frozen" in card["objective"]
    losses = [h["loss"] for h in card["loss_history"]]
    assert losses[-1] < losses[0] - 0.05
    heldout = record.metrics["heldout"]
    assert heldout["n"] >= 8
    assert record.metrics["heldout_accuracy"] >= 0.8, heldout
    folder = settings.data_dir / "reward_models" / record.rm_id
    assert (folder / "head.safetensors").is_file() and not (folder / "adapter").exists()


def test_a_saved_probe_reloads_with_identical_scores_in_any_batch(probe_model):
    from rlhf.reward.probe import ProbeScorer
    from rlhf.reward.registry import load_reward_model

    _, store, record = probe_model
    scorer = load_reward_model(store, record.rm_id)
    assert isinstance(scorer, ProbeScorer)
    prompts = ["Pick items.", "", "Pick items for a gardener."]
    responses = [f"1. C03 | A {KEYWORD} trowel.", "1. C01 | Mug.", "1. C02 | It is plain.\n2. C04 | Lamp."]
    once = scorer.score(prompts, responses, batch_size=3)
    np.testing.assert_allclose(scorer.score(prompts[::-1], responses[::-1], batch_size=1), once[::-1], atol=1e-5)
    ra, rb = scorer.score_pairs(["p"], [f"1. C01 | It is {KEYWORD}."], ["1. C01 | It is plain."])
    assert ra[0] > rb[0]  # the learned preference, on a pair it never saw
    p = scorer.preference_probability(["p"], [f"1. C01 | It is {KEYWORD}."], ["1. C01 | It is plain."])
    assert 0.5 < p[0] < 1.0
    stats = scorer.score_stats
    assert stats is not None and stats["std"] > 0


def test_a_probe_folder_with_a_broken_head_is_a_clear_error(probe_model, tmp_path):
    import shutil

    import torch
    from safetensors.torch import save_file

    from rlhf.errors import ModelNotFoundError
    from rlhf.reward.registry import load_reward_model_from_folder

    settings, _, record = probe_model
    copy = tmp_path / "copy"
    shutil.copytree(record.path, copy)
    save_file({"weight": torch.zeros(7)}, str(copy / "head.safetensors"))
    with pytest.raises(ModelNotFoundError, match="shape"):
        load_reward_model_from_folder(copy, settings=settings)
    (copy / "head.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="without its head"):
        load_reward_model_from_folder(copy, settings=settings)
    card = json.loads((copy / "card.json").read_text())
    assert card["training"]["method"] == "probe"


def test_a_decoder_backbone_works_as_the_probe_encoder(tiny_policy, policy_tokenizer, tmp_path):
    """Any backbone spec may be the probe's encoder: a (tiny) Llama folder, padding masked out of the mean."""
    import pandas as pd

    from rlhf.reward.registry import load_reward_model_from_folder, save_reward_model
    from rlhf.reward.train import train_reward_model

    folder = tmp_path / "tiny_llama"
    tiny_policy.save_pretrained(folder)
    policy_tokenizer.save_pretrained(folder)
    settings = load_settings(store={"data_dir": tmp_path / "data"}, reward_model={"method": "probe"})
    frame = pd.DataFrame({"prompt": ["p"] * 6, "chosen": [f"1. C0{i} | It is {KEYWORD}." for i in range(1, 7)],
                          "rejected": [f"1. C0{i} | It is plain and dull." for i in range(1, 7)]})
    result = train_reward_model(frame, settings=settings, output_dir=tmp_path / "out", backbone=str(folder),
                                progress=False)
    assert result.method == "probe" and result.backbone.kind == "decoder"
    texts = ["1. C01 | Short.", f"1. C02 | A much longer reason that is {KEYWORD} for this shopper.\n2. C03 | Mug."]
    alone = [float(result.scorer.score(["p"], [t], batch_size=1)[0]) for t in texts]
    together = result.scorer.score(["p", "p"], texts, batch_size=2)  # the short one is padded here
    np.testing.assert_allclose(together, alone, atol=1e-5)
    record = save_reward_model(result, rm_id="rm_dec", store=None, settings=settings, metrics={})
    np.testing.assert_allclose(load_reward_model_from_folder(record.path, settings=settings).score(["p", "p"], texts),
                               together, atol=1e-5)


def test_the_training_page_says_which_reward_model_a_round_will_train():
    from rlhf.reward.train import method_summary

    auto = method_summary(load_settings(reward_model={"method": "auto", "probe_max_examples": 1500}))
    assert "probe" in auto and "1,500" in auto and "LoRA" in auto
    assert "probe" not in method_summary(load_settings(reward_model={"method": "lora"}))
    assert "LoRA" not in method_summary(load_settings(reward_model={"method": "probe"}))
    assert "match features" in auto
    assert "match" not in method_summary(load_settings(reward_model={"method": "probe", "probe_match_features": False}))
