"""Run control: identical seeds give identical metrics; a resumed run continues exactly; files and sinks."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.ppo.checkpoint import latest_checkpoint
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.rewards import ComposedReward, RewardTerm
from rlhf.ppo.trainer import PPOTrainer

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.models import load_tokenizer
    from rlhf.settings import load_settings

    return load_tokenizer(load_settings().model.policy)


def make_trainer(tokenizer, tmp_path=None, **kw) -> PPOTrainer:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        initializer_range=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=0,
    ))
    # Unconstrained sampling over the full 49k vocabulary; reward = share of ASCII-digit characters.
    reward = ComposedReward(
        [RewardTerm("digits", lambda b: [sum(c.isdigit() for c in r) / max(1, len(r)) for r in b.responses])],
        no_eos_penalty=-0.1,
    )
    cfg = dict(steps=4,  # noqa: C408
               batch_size=4, mini_batch_size=2, ppo_epochs=2, learning_rate=1e-2, temperature=0.9,
               max_new_tokens=5, lora_r=4, lora_alpha=8, adaptive_kl=True, target_kl=0.5, kl_horizon=50,
               seed=11, tensorboard=tmp_path is not None, checkpoint_every=2)
    cfg.update(kw)
    prompts = [{"prompt": f"User {i} likes item {i * 7}. Next:", "candidates": [str(i)]} for i in range(6)]
    return PPOTrainer(PPOConfig(**cfg), model, tokenizer, reward, prompts, output_dir=tmp_path)


def _comparable(history):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(_comparable(a), _comparable(b)):
        assert x.keys() == y.keys()
        for k in x:
            assert (math.isnan(x[k]) and math.isnan(y[k])) or x[k] == y[k], (k, x[k], y[k])


def test_identical_seeds_give_identical_metrics(tokenizer):
    a = make_trainer(tokenizer).train(2, progress=False)
    b = make_trainer(tokenizer).train(2, progress=False)
    _assert_same(a, b)
    c = make_trainer(tokenizer, seed=12).train(2, progress=False)
    assert _comparable(c) != _comparable(a)  # the seed matters (the comparison can fail)


def test_checkpoint_and_resume_continue_exactly(tokenizer, tmp_path):
    run = tmp_path / "run"
    sink_calls = []
    straight = make_trainer(tokenizer, run)
    straight.metrics_sinks.append(lambda step, m: sink_calls.append((step, m["reward/score"])))
    history = straight.train(progress=False)  # 4 steps, checkpoints at 2 and 4
    straight.close()
    assert [s for s, _ in sink_calls] == [1, 2, 3, 4]
    found = latest_checkpoint(run)
    assert found is not None and found.name == "step-000004"
    assert (run / "checkpoints" / "step-000002" / "adapter" / "adapter_config.json").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    resumed = make_trainer(tokenizer, tmp_path / "other")
    assert resumed.load(run / "checkpoints" / "step-000002") == 2
    rest = resumed.train(progress=False)
    _assert_same(rest, history[2:])
    # the resumed weights equal the uninterrupted run's weights
    for (name, p), (_, q) in zip(straight.unwrapped.named_parameters(), resumed.unwrapped.named_parameters()):
        assert torch.equal(p, q), name


def test_missing_checkpoint_is_a_clear_error(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer)
    with pytest.raises(FileNotFoundError, match="No PPO checkpoint"):
        trainer.load(tmp_path)
    (tmp_path / "checkpoints" / "step-000009.tmp").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None  # a half-written folder is never picked up


def test_metrics_reach_the_store_in_short_transactions(tokenizer, store):
    """Each step is one short write to training_metrics; non-finite values are stored as null."""
    from rlhf.ppo.product import store_metrics_sink
    from storage.rounds import training_metrics_frame

    trainer = make_trainer(tokenizer, checkpoint_every=0)
    trainer.metrics_sinks.append(store_metrics_sink(store, "ppo_test", "ppo"))
    trainer.train(2, progress=False)
    with store.transaction() as con:
        frame = training_metrics_frame(con, run_id="ppo_test")
    assert sorted(frame["step"].tolist()) == [1, 2]
    assert {"reward/score", "kl/mean", "policy/entropy", "policy/clip_fraction", "policy/approx_kl", "value/loss",
            "value/explained_variance", "response/length", "reward/validity_rate", "reward/digits"} <= set(frame.columns)
    assert frame["reward/score"].tolist() == [m["reward/score"] for m in trainer.history]
