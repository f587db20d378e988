"""Reward-model training end to end with a tiny backbone (real tokenizer, real TRL/PEFT), plus metrics.

A tiny LlamaForSequenceClassification is built from a config with SmolLM2's real tokenizer and saved to
a folder, which then serves as the backbone spec. The preference is learnable: the list whose reasons
contain a keyword wins. Training must lower the loss and reach clearly-above-chance accuracy on
held-out CONTEXTS; the registry must reload the model with identical scores.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from round_support import tiny_model  # noqa: F401
from test_reward_dataset import KEYWORD, build_preference_store

from rlhf.reward.evaluate import (
    annotator_agreement,
    evaluate_dataset,
    expected_calibration_error,
    pairwise_metrics,
)
from rlhf.settings import load_settings
from storage import Store
from storage.reward_models import list_reward_models

N_CONTEXTS = 56


@pytest.fixture(scope="module")
def tiny_backbone(tiny_model):  # noqa: F811
    """A 2-layer Llama with the real SmolLM2 tokenizer, saved as a local model folder (the rounds' tiny policy)."""
    return tiny_model


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory):
    """One training run through the round's entry point: snapshot -> dataset -> train -> evaluate -> registry."""
    from rlhf.reward.train import train_from_store

    root = tmp_path_factory.mktemp("rm")
    settings = load_settings(
        store={"data_dir": root / "data"},
        reward_model={
            "method": "lora", "backbone": tiny_backbone, "epochs": 2, "learning_rate": 5e-3, "batch_size": 8, "max_length": 96,
            "lora_r": 8, "lora_alpha": 16, "logging_steps": 2, "min_examples": 4, "heldout_fraction": 0.3,
            "warmup_ratio": 0.0, "seed": 3,
        },
    )
    store = Store.from_settings(settings)
    # Alternate the keyword side so that "always prefer A" cannot score.
    votes = {i: [("ann1", "A" if i % 2 == 0 else "B", 1 + i % 3), ("ann2", "A" if i % 2 == 0 else "B", 2)]
             for i in range(N_CONTEXTS)}
    build_preference_store(store, n_contexts=N_CONTEXTS, votes=votes, gold={0: "A"}, keyword_side=None)
    record = train_from_store(settings, store=store, progress=False)
    return settings, store, record


def test_training_lowers_the_loss_and_beats_chance_on_heldout_contexts(trained):
    _, _, record = trained
    card = record.card
    losses = [h["loss"] for h in card["loss_history"]]
    assert len(losses) >= 4
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.1, losses
    heldout = record.metrics["heldout"]
    assert heldout["n"] >= 8
    assert record.metrics["heldout_accuracy"] >= 0.8, heldout
    assert 0.0 <= record.metrics["heldout_ece"] <= 1.0
    assert set(heldout["accuracy_by_strength"]) <= {"1", "2", "3"}
    assert record.metrics["gold"]["n"] == 1


def test_model_card_and_store_row(trained):
    settings, store, record = trained
    folder = settings.data_dir / "reward_models" / record.rm_id
    card = json.loads((folder / "card.json").read_text())
    assert card["rm_id"] == record.rm_id
    assert card["data"]["snapshot_id"].startswith("snap_")
    assert (settings.data_dir / "snapshots" / card["data"]["snapshot_id"] / "manifest.json").is_file()
    assert card["data"]["counts"]["examples_train"] + card["data"]["counts"]["examples_heldout"] == N_CONTEXTS - 1
    assert card["settings"]["reward_model"]["learning_rate"] == 5e-3
    assert card["backbone"]["kind"] == "decoder"
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert any((folder / "runs").rglob("events.out.tfevents*")), "TensorBoard logs are missing"
    with store.transaction() as con:
        rows = list_reward_models(con)
    assert [r.rm_id for r in rows] == [record.rm_id]
    assert rows[0].metrics["heldout_accuracy"] == record.metrics["heldout_accuracy"]
    annotators = record.metrics["annotator_agreement"]
    assert set(annotators) == {"ann1", "ann2"}


def test_registry_reload_gives_identical_scores(trained, tiny_backbone):
    import pandas as pd

    from rlhf.reward.registry import load_reward_model, save_reward_model
    from rlhf.reward.train import train_reward_model

    settings, store, _ = trained
    frame = pd.DataFrame({
        "prompt": ["Pick items.", "Pick items."] * 4,
        "chosen": [f"1. C01 | It is {KEYWORD}."] * 8, "rejected": ["1. C02 | It is plain."] * 8, "margin": 0.5,
    })
    heard: list[tuple[int, int]] = []  # (step, total): a background round's live progress
    result = train_reward_model(frame, settings=settings, output_dir=settings.data_dir / "rt", max_steps=2,
                                progress=False, on_step=lambda step, total: heard.append((step, total)))
    assert heard == [(1, 2), (2, 2)]
    prompts = ["Pick items for a gardener.", "", "Pick items."]
    responses = [f"1. C03 | A {KEYWORD} trowel.", "1. C01 | Mug.", "1. C02 | It is plain.\n2. C04 | Lamp."]
    before = result.scorer.score(prompts, responses, batch_size=2)
    record = save_reward_model(result, rm_id="rm_roundtrip", store=store, settings=settings, metrics={})
    loaded = load_reward_model(store, "rm_roundtrip")
    after = loaded.score(prompts, responses, batch_size=3)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    # Batch size and order do not change a score (padding is masked, the last real token is read).
    np.testing.assert_allclose(loaded.score(prompts[::-1], responses[::-1], batch_size=1), after[::-1], atol=1e-5)
    latest = load_reward_model(store)  # the latest registered model
    assert latest.rm_id == "rm_roundtrip" == record.rm_id
    # The card records what the model reads; a card from before input formats existed means raw texts.
    assert record.card["training"]["input_format"] == loaded.input_format == settings.reward_model.input_format
    folder = settings.data_dir / "reward_models" / "rm_roundtrip"
    card = json.loads((folder / "card.json").read_text())
    del card["training"]["input_format"]
    (folder / "card.json").write_text(json.dumps(card))
    assert load_reward_model(store, "rm_roundtrip").input_format == "policy"


def test_the_scorer_reads_real_prompts_in_its_input_format(trained, tmp_path):
    """A policy prompt is rewritten before encoding (ids resolved), and a 'policy' scorer reads it raw."""
    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.registry import load_reward_model
    from storage.snapshot import read_snapshot, write_snapshot

    settings, store, record = trained
    scorer = load_reward_model(store, record.rm_id)
    assert scorer.input_format == "resolved"
    write_snapshot(store, tmp_path / "snap")
    row = build_reward_dataset(read_snapshot(tmp_path / "snap"), settings).train.iloc[0]
    prompt, text = row["prompt"], row["chosen"]
    assert text.startswith("1. C01 |")
    resolved = scorer.tokenizer.decode(scorer.encode([prompt], [text])[0])
    scorer.input_format = "policy"
    raw = scorer.tokenizer.decode(scorer.encode([prompt], [text])[0])
    assert "1. C01 |" in raw and "Item number" not in raw.split("1. C01 |")[-1]
    assert "1. C01 |" not in resolved and "1. C01 Item number" in resolved


def test_reloaded_model_reproduces_its_recorded_metrics(trained):
    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.registry import load_reward_model
    from storage.snapshot import read_snapshot

    settings, store, record = trained
    scorer = load_reward_model(store, record.rm_id)
    snap = read_snapshot(settings.data_dir / "snapshots" / record.card["data"]["snapshot_id"])
    metrics = evaluate_dataset(scorer, build_reward_dataset(snap, settings))
    assert metrics["heldout"]["mean_gap"] == pytest.approx(record.metrics["heldout"]["mean_gap"], abs=1e-4)
    assert metrics["heldout_accuracy"] == record.metrics["heldout_accuracy"]


def test_card_records_the_score_spread_ppo_normalises_by(trained):
    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.registry import load_reward_model
    from storage.snapshot import read_snapshot

    settings, store, record = trained
    scorer = load_reward_model(store, record.rm_id)
    pairs = build_reward_dataset(read_snapshot(settings.data_dir / "snapshots" / record.card["data"]["snapshot_id"]),
                                 settings).pairs
    pairs = pairs[pairs["split"] == "train"]
    texts = {(p, t) for p, a, b in zip(pairs["prompt"], pairs["text_a"], pairs["text_b"]) for t in (a, b)}
    scores = scorer.score([p for p, _ in texts], [t for _, t in texts])
    stats = scorer.score_stats
    assert stats["n"] == len(texts) > 2
    assert stats["mean"] == pytest.approx(float(np.mean(scores)), abs=1e-4)
    assert stats["std"] == pytest.approx(float(np.std(scores)), abs=1e-4) and stats["std"] > 0


def test_too_few_labels_is_a_clear_error(tiny_backbone, settings, store):
    from rlhf.reward.train import RewardTrainingError, train_from_store

    settings = settings.model_copy(update={"reward_model": settings.reward_model.model_copy(
        update={"backbone": tiny_backbone, "min_examples": 50})})
    build_preference_store(store, n_contexts=3)
    with pytest.raises(RewardTrainingError, match="Collect more"):
        train_from_store(settings, store=store, progress=False)
    with store.transaction() as con:
        assert list_reward_models(con) == []


def test_metric_functions():
    m = pairwise_metrics([2.0, 1.0, 0.0, 3.0], [1.0, 2.0, 0.0, 0.0], [1, 2, None, 3])
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert m["accuracy_by_strength"]["1"] == {"n": 1, "accuracy": 1.0}
    assert m["accuracy_by_strength"]["unknown"]["accuracy"] == 0.5
    # Perfectly calibrated: in the 0.9-confidence bin, 90% right.
    p = np.array([0.9] * 9 + [0.1])
    assert expected_calibration_error(p) == pytest.approx(0.0, abs=1e-9)
    # Over-confident: always 0.99 sure, right half the time.
    assert expected_calibration_error(np.array([0.99, 0.01] * 50)) == pytest.approx(0.49, abs=1e-6)
    assert math.isnan(expected_calibration_error([]))


def test_annotator_agreement():
    import pandas as pd

    labels = pd.DataFrame({
        "pair_id": ["p1", "p1", "p2", "p2", "p3"], "annotator_id": ["a", "b", "a", "b", "a"],
        "choice": ["A", "A", "B", "A", "tie"],
    })
    scores = pd.DataFrame({"pair_id": ["p1", "p2", "p3"], "r_a": [1.0, 0.0, 0.0], "r_b": [0.0, 1.0, 1.0]})
    out = annotator_agreement(labels, scores)
    assert out["a"] == {"n": 2, "model_agreement": 1.0, "peer_agreement": 0.5}
    assert out["b"]["model_agreement"] == 0.5
