"""Our PPO trainer on a tiny Llama with the real SmolLM2 tokenizer: reference, masks, and learning.

The learning task mirrors the product ("reward when a given candidate is listed first"): decoding is
constrained to the ten digit tokens + EOS (through the trainer's ``logits_mask_fn`` hook, which must
then also be applied to every log-prob), and the reward is 1 when the first generated token is "7".
A random policy gets it ~1 time in 11. PPO must push the rate up clearly within 20 iterations while
the KL to the reference stays bounded; with the advantage sign flipped (a broken policy gradient)
the same run must NOT improve.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.models import activation_checkpointing
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.rewards import ComposedReward, RewardTerm, token_reward
from rlhf.ppo.trainer import PPOTrainer, TokenSetConstraint, bf16_in_hardware

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.models import load_tokenizer
    from rlhf.settings import load_settings

    return load_tokenizer(load_settings().model.policy)


def tiny_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0,
    )
    return LlamaForCausalLM(cfg)


def digit_task(tokenizer):
    """(prompts, constraint, target id): chat prompts, a digits+EOS constraint, reward on '7' first."""
    digits = [tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)]
    mask_fn = TokenSetConstraint([*digits, tokenizer.eos_token_id], len(tokenizer))

    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": f"Shopper {i}: pick an item number."}],
                                      tokenize=False, add_generation_prompt=True)
        for i in range(16)
    ]
    return prompts, mask_fn, digits[7]


def config(**kw) -> PPOConfig:
    base = dict(steps=20,  # noqa: C408
                 batch_size=16, mini_batch_size=8, ppo_epochs=2, learning_rate=5e-3, temperature=1.0,
                max_new_tokens=4, lora_r=8, lora_alpha=16, init_kl_coef=0.05, adaptive_kl=False, seed=3,
                tensorboard=False, checkpoint_every=0,
                bf16=False)  # fp32 on every machine: these tests compare exact numbers; bf16 has its own test
    base.update(kw)
    return PPOConfig(**base)


def test_reference_is_the_base_model_and_kl_is_zero_at_init(tokenizer):
    prompts, mask_fn, _target = digit_task(tokenizer)
    model = tiny_model(tokenizer)
    probe = tokenizer(prompts[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = model(**probe).logits.clone()
    digits = [tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)]
    # A reward that varies across any batch (the first digit's value), so one step must move the adapter.
    reward = ComposedReward([RewardTerm("first_digit", lambda b: [
        digits.index(ids[0]) / 9 if ids and ids[0] in digits else 0.0 for ids in b.response_ids])])
    trainer = PPOTrainer(config(steps=1), model, tokenizer, reward, prompts, logits_mask_fn=mask_fn)
    policy = trainer.policy
    with torch.no_grad():
        with policy.disable_adapter():
            ref_logits = policy(**probe).logits
        actor_logits = policy(**probe).logits
    assert torch.equal(ref_logits, base_logits)  # adapter disabled == the base weights
    assert torch.allclose(actor_logits, base_logits, atol=1e-6)  # LoRA starts as the identity

    rollout, raw = trainer.rollout(trainer._next_examples())
    assert torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-6)
    assert raw["kl_sum"].abs().max().item() < 1e-5

    trainer.step()
    with torch.no_grad():
        with policy.disable_adapter():
            ref_after = policy(**probe).logits
        actor_after = policy(**probe).logits
    assert torch.equal(ref_after, base_logits)  # training moved the adapter only: one copy of the weights
    assert not torch.allclose(actor_after, base_logits, atol=1e-4)


def test_smollm2_pad_eos_trap_is_handled(tokenizer):
    """SmolLM2 pads with <|im_end|>, its EOS, which also sits inside every chat prompt."""
    prompts, mask_fn, target = digit_task(tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the trap is real for this tokenizer
    trainer = PPOTrainer(config(steps=1), tiny_model(tokenizer), tokenizer, token_reward(target),
                         [prompts[0], prompts[1] + "Please hurry."], logits_mask_fn=mask_fn)
    assert trainer.tokenizer.pad_token_id != trainer.tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"  # the caller's tokenizer is not modified
    rollout, _ = trainer.rollout(trainer.examples)
    eos = tokenizer.eos_token_id
    prompt = rollout.sequences[:, : rollout.prompt_length]
    prompt_mask = rollout.attention_mask[:, : rollout.prompt_length]
    # every <|im_end|> inside the prompts is attended to; only left padding is masked
    assert (prompt == eos).any()
    assert bool((prompt_mask[prompt == eos] == 1).all())
    assert prompt_mask[0, 0].item() == 0 and prompt_mask[1].all()
    # response masks end at the first EOS, inclusive
    responses = rollout.sequences[:, rollout.prompt_length :]
    for row, mask in zip(responses, rollout.response_mask):
        n = int(mask.sum())
        hits = (row == eos).nonzero().flatten().tolist()
        assert n == (hits[0] + 1 if hits else row.numel())


def _run(tokenizer, sign: float, **kw) -> list[dict[str, float]]:
    prompts, mask_fn, target = digit_task(tokenizer)
    trainer = PPOTrainer(config(**kw), tiny_model(tokenizer), tokenizer, token_reward(target), prompts,
                         logits_mask_fn=mask_fn, _advantage_sign=sign)
    assert trainer.autocast_dtype == (torch.bfloat16 if kw.get("bf16") else None) or torch.cuda.is_available()
    return trainer.train(progress=False)


@pytest.mark.parametrize("bf16", [
    False,
    pytest.param(True, marks=pytest.mark.skipif(
        torch.cuda.is_available() or not bf16_in_hardware("cpu"),
        reason="bf16 autocast on CPU needs AMX or AVX512-BF16")),
])
def test_ppo_learns_a_programmatic_reward_with_bounded_kl(tokenizer, bf16):
    """In fp32, and under the bf16 autocast that a CPU with native bf16 trains with by default."""
    history = _run(tokenizer, +1.0, bf16=bf16)
    rewards = [m["reward/score"] for m in history]
    first, last = rewards[0], sum(rewards[-5:]) / 5  # rewards[0] is sampled before any update
    assert first < 0.35, rewards  # a random policy rarely starts with "7" (about 1 in 11)
    assert last >= 0.7 and last - first >= 0.4, rewards
    kls = [m["kl/mean"] for m in history]
    assert max(kls[-5:]) < 8.0, kls  # moved away from the reference, but boundedly
    for m in history:
        assert not any(math.isnan(v) for k, v in m.items() if k != "value/explained_variance"), m


def test_a_broken_policy_gradient_does_not_learn(tokenizer):
    """The same run with the advantage sign flipped must not improve: the learning test can fail."""
    history = _run(tokenizer, -1.0)
    rewards = [m["reward/score"] for m in history]
    assert sum(rewards[-5:]) / 5 <= 0.15, rewards


def test_constrained_decoding_uses_the_same_mask_for_sampling_and_log_probs(tokenizer):
    """With the product's list grammar (rlhf.constrained), every sampled token is allowed under the
    recomputed mask (finite log-prob), forced tokens get log-prob 0, and the KL at init is still 0."""
    from rlhf.ppo.product import ListGrammarConstraint

    short_ids = [f"C{i:02d}" for i in range(1, 9)]
    prompts = [{"prompt": tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Shopper {i}: list 2 of C01..C08 with reasons."}],
        tokenize=False, add_generation_prompt=True), "short_ids": short_ids} for i in range(4)]
    constraint = ListGrammarConstraint(tokenizer, n_items=2, max_reason_tokens=4)
    trainer = PPOTrainer(config(batch_size=4, mini_batch_size=2, max_new_tokens=24), tiny_model(tokenizer),
                         tokenizer, token_reward(0), prompts, logits_mask_fn=constraint)
    rollout, raw = trainer.rollout(trainer.examples)
    mask = rollout.response_mask.bool()
    assert torch.isfinite(rollout.logprobs[mask]).all()
    assert (rollout.logprobs[mask] <= 0).all()
    assert (rollout.logprobs[mask] == 0).any()  # e.g. the forced rank "1." and separators
    assert raw["kl_sum"].abs().max().item() < 1e-5
    texts = tokenizer.batch_decode(rollout.sequences[:, rollout.prompt_length:], skip_special_tokens=True)
    assert all(t.startswith("1. C0") for t in texts), texts  # the grammar was applied while sampling


def test_grpo_runs_on_the_same_reward_and_prompts(tokenizer, tmp_path):
    """--algo grpo: TRL's GRPOTrainer gets our reward function, prompts and metadata, and our sinks."""
    from rlhf.ppo.grpo import build_trl_trainer

    seen_examples, logged = [], []

    def term(batch):
        seen_examples.extend(batch.examples)
        return [float(len(ids)) for ids in batch.response_ids]

    prompts = [{"prompt": f"User {i} likes item {i}. Next:", "candidates": [str(i)]} for i in range(4)]
    cfg = config(steps=1, batch_size=4, mini_batch_size=2, num_generations=2, ppo_epochs=1, max_new_tokens=3,
                 tensorboard=False)
    trainer = build_trl_trainer(cfg, tiny_model(tokenizer), tokenizer,
                                ComposedReward([RewardTerm("length", term)], no_eos_penalty=-1.0), prompts,
                                output_dir=tmp_path, algo="grpo",
                                metrics_sinks=[lambda step, m: logged.append(m)])
    trainer.train()
    assert {ex["prompt"] for ex in seen_examples} <= {p["prompt"] for p in prompts}
    assert all(ex["candidates"] == [ex["prompt"].split()[1]] for ex in seen_examples)  # metadata travels intact
    assert any("reward/length" in m and "reward/no_eos" in m for m in logged)


def test_product_reward_reads_the_real_parser():
    """rlhf.parsing's verdict feeds the structural terms (integration with the parser, no model)."""
    from rlhf.ppo.product import list_structure
    from rlhf.ppo.rewards import ListStructure

    ex = {"short_to_item": {"C01": "A", "C02": "B", "C03": "C"}, "candidates": ["A", "B", "C"]}
    assert list_structure("1. C01 | nice\n2. C02 | good", ex, 2) == ListStructure(2, 2, 0, True, 2, 0)
    messy = "1. C01 | nice\n2. C01 | again\n3. C09 | bad\n4. C03 | ok\n5. C02 | more"
    assert list_structure(messy, ex, 2) == ListStructure(n_listed=5, n_candidate=4, n_duplicate=1, is_valid=False,
                                                         n_kept=2, n_bad_reason=0)


def test_a_reason_copied_from_the_prompt_costs_reward():
    """The parser's copied-example and missing-reason verdicts reach the own_reasons term, and through it
    the score PPO maximises: constrained decoding cannot stop a copy, so the reward must."""
    from rlhf.ppo.product import build_product_reward, list_structure
    from rlhf.ppo.rewards import ListStructure, RewardBatch
    from rlhf.prompts import EXAMPLE_REASON
    from rlhf.settings import load_settings

    ex = {"short_to_item": {"C01": "A", "C02": "B", "C03": "C"}, "candidates": ["A", "B", "C"]}
    own = "1. C01 | Matches the blue mugs in their basket.\n2. C02 | They buy tea often."
    copied = f"1. C01 | Matches the blue mugs in their basket.\n2. C02 | {EXAMPLE_REASON.upper()}"
    missing = "1. C01 | Matches the blue mugs in their basket.\n2. C02 | ..."
    assert list_structure(own, ex, 2).n_bad_reason == 0
    assert list_structure(copied, ex, 2) == ListStructure(2, 2, 0, False, n_kept=2, n_bad_reason=1)
    assert list_structure(missing, ex, 2).n_bad_reason == 1
    # A reason that is another candidate's catalogue row counts too, once the example knows the titles.
    titled = {**ex, "candidate_titles": {"A": "Blue Mug", "B": "Oak Wall Hanging", "C": "Tea Towel"}}
    other = "1. C01 | Oak Wall Hanging (Home Decor, price 20.99)\n2. C02 | They buy tea often."
    assert list_structure(other, titled, 2) == ListStructure(2, 2, 0, False, n_kept=2, n_bad_reason=1)
    assert list_structure(own, titled, 2).n_bad_reason == 0

    settings = load_settings(generation={"list_length": 2})
    reward = build_product_reward(None, settings)
    texts = [own, copied, missing]
    out = reward(RewardBatch(prompts=[""] * 3, responses=texts, examples=[ex] * 3, ended=[True] * 3))
    assert out.parts["own_reasons"] == [1.0, 0.5, 0.5]
    assert out.valid == [True, False, False]
    w = settings.ppo.structure_weight
    assert out.scores[0] - out.scores[1] == pytest.approx(w * 0.5 / 4)


def test_own_reasons_can_count_a_copied_product_line_as_no_reason():
    """With ppo.own_reasons_count_copies, a reason that only copies a candidate's line (its own or a
    neighbour's, title and bracketed details, SmolLM2's habit on UCI) costs own_reasons as the evaluation
    counts it; a copy followed by a grounded reason does not, nor does anything when the setting is off."""
    from rlhf.ppo.product import build_product_reward, list_structure, ppo_example
    from rlhf.ppo.rewards import RewardBatch
    from rlhf.prompts import make_view
    from rlhf.settings import load_settings
    from storage.records import CatalogItem

    candidates = [CatalogItem("22384", "LUNCH BAG PINK POLKADOT", category="kitchen & dining"),
                  CatalogItem("20725", "LUNCH BAG RED RETROSPOT", category="kitchen & dining"),
                  CatalogItem("48194", "DOORMAT HEARTS", category="home decor")]
    history = [CatalogItem("21931", "JUMBO STORAGE BAG SUKI", category="bags")]
    ex = ppo_example(make_view("ctx", "shop", history, candidates), "the prompt")
    grounded = "1. C01 | Goes with the jumbo storage bag they bought.\n2. C03 | A doormat for their new home."
    own_copy = "1. C01 | LUNCH BAG PINK POLKADOT (kitchen & dining, price 1.65)\n2. C03 | A doormat for their new home."
    neighbour = "1. C02 | LUNCH BAG PINK (kitchen & dining\n2. C03 | A doormat for their new home."
    copy_then_reason = "1. C01 | LUNCH BAG PINK POLKADOT for the jumbo storage fan.\n2. C03 | A doormat for their new home."
    copy_then_category = "1. C01 | LUNCH BAG PINK POLKADOT for dining out.\n2. C03 | A doormat for their new home."
    other_item = "1. C01 | LUNCH BAG RED RETROSPOT (kitchen & dining, price 1.65)\n2. C03 | A doormat for their new home."
    counts = {name: list_structure(text, ex, 2, count_copies=True).n_copied_reason
              for name, text in [("grounded", grounded), ("own_copy", own_copy), ("neighbour", neighbour),
                                 ("copy_then_reason", copy_then_reason), ("copy_then_category", copy_then_category),
                                 ("other_item", other_item)]}
    assert counts == {"grounded": 0, "own_copy": 1, "neighbour": 1, "copy_then_reason": 0, "copy_then_category": 0,
                      "other_item": 0}
    assert list_structure(other_item, ex, 2, count_copies=True).n_bad_reason == 1  # the parser's, counted once
    assert list_structure(own_copy, ex, 2).n_copied_reason == 0  # off: counted only when asked
    assert list_structure(own_copy, ex, 2, count_copies=True).is_valid  # a reward term, not a parser verdict

    texts = [grounded, own_copy, neighbour]
    batch = RewardBatch(prompts=[""] * 3, responses=texts, examples=[ex] * 3, ended=[True] * 3)
    for count, expected in [(False, [1.0, 1.0, 1.0]), (True, [1.0, 0.5, 0.5])]:
        settings = load_settings(generation={"list_length": 2}, ppo={"own_reasons_count_copies": count})
        assert build_product_reward(None, settings)(batch).parts["own_reasons"] == expected


def test_gradient_checkpointing_saves_memory_without_changing_the_update(tokenizer):
    """The product turns it on (settings.ppo); the same seed must give the same adapter after a step."""
    from rlhf.settings import load_settings

    assert PPOConfig.from_settings(load_settings().ppo).gradient_checkpointing
    prompts, mask_fn, _target = digit_task(tokenizer)
    digits = [tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)]
    reward = ComposedReward([RewardTerm("first_digit", lambda b: [  # varies within a batch: the step moves
        digits.index(ids[0]) / 9 if ids and ids[0] in digits else 0.0 for ids in b.response_ids])])
    adapters = []
    for checkpointing in (False, True):
        trainer = PPOTrainer(config(steps=1, gradient_checkpointing=checkpointing), tiny_model(tokenizer), tokenizer,
                             reward, prompts, logits_mask_fn=mask_fn)
        assert activation_checkpointing(trainer.policy) == checkpointing
        trainer.step()
        adapters.append({k: v.detach().clone() for k, v in trainer.policy.named_parameters() if "lora_" in k})
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, value in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], value, atol=1e-6, rtol=1e-5, msg=name)
    moved = [not torch.allclose(v, 0 * v) for k, v in adapters[0].items() if "lora_B" in k]
    assert any(moved)  # the step did update the adapter (LoRA B starts at zero)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule")
def test_ppo_autocasts_to_bf16_only_on_a_cpu_that_computes_it_natively(tokenizer, monkeypatch):
    prompts, mask_fn, target = digit_task(tokenizer)
    for native, bf16, expected in [(False, True, None), (True, False, None), (True, True, torch.bfloat16)]:
        monkeypatch.setattr("rlhf.models.cpu_has_native_bf16", lambda native=native: native)
        trainer = PPOTrainer(config(steps=1, bf16=bf16), tiny_model(tokenizer), tokenizer, token_reward(target),
                             prompts, logits_mask_fn=mask_fn)
        assert trainer.autocast_dtype == expected, (native, bf16)
        assert trainer.accelerator.mixed_precision == "no"  # accelerate's process-wide state is left alone


def test_ppo_examples_carry_the_titles_the_parser_needs():
    """PPO's examples (generation's views) bring the candidates' titles, so the structural reward
    parses as generation does and a reason describing another candidate costs own_reasons."""
    from rlhf.ppo.product import list_structure, ppo_example
    from rlhf.prompts import make_view
    from storage.records import CatalogItem

    view = make_view("ctx", "shop", [], [CatalogItem("A", "Blue Mug"), CatalogItem("B", "Oak Wall Hanging")])
    ex = ppo_example(view, "the prompt")
    assert ex["prompt"] == "the prompt" and ex["short_to_item"] == {"C01": "A", "C02": "B"}
    assert list_structure("1. C01 | Oak Wall Hanging, price 20.99\n2. C02 | For the hall.", ex, 2).n_bad_reason == 1
    assert list_structure("1. C01 | For their tea.\n2. C02 | For the hall.", ex, 2).is_valid
