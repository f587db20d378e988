"""The pure pieces of PPO against hand-computed values (no model needed)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.ppo import core
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.rewards import (
    ComposedReward,
    ListStructure,
    RewardBatch,
    RewardTerm,
    product_reward,
    structure_scores,
    token_reward,
)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_masked_mean_var_ignore_padding_even_when_it_is_inf():
    x = t([[1.0, 2.0, 3.0, float("-inf")]])
    m = t([[1, 1, 1, 0]])
    assert core.masked_mean(x, m).item() == pytest.approx(2.0)
    assert core.masked_var(x, m).item() == pytest.approx(1.0)  # unbiased: ((1)+(0)+(1))/2
    assert core.masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    assert core.masked_sum(x, m).item() == pytest.approx(6.0)
    assert core.masked_mean(x, m, dim=1).tolist() == pytest.approx([2.0])


def test_masked_whiten_is_zero_mean_unit_variance_on_the_mask_and_zero_elsewhere():
    x = t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, 0.0]])
    m = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = core.masked_whiten(x, m)
    assert core.masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert core.masked_var(w, m).item() == pytest.approx(1.0, abs=1e-5)
    assert w[0, 3].item() == 0.0 and w[1, 2].item() == 0.0
    # hand value: values 1..5, mean 3, unbiased var 2.5
    assert w[0, 0].item() == pytest.approx((1 - 3) / math.sqrt(2.5), rel=1e-5)
    unshifted = core.masked_whiten(x, m, shift_mean=False)
    assert core.masked_mean(unshifted, m).item() == pytest.approx(3.0, rel=1e-5)


def test_logprobs_and_entropy():
    logits = torch.randn(2, 3, 7)
    labels = torch.randint(0, 7, (2, 3))
    expected = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(core.logprobs_from_logits(logits, labels), expected, atol=1e-6)
    uniform = torch.zeros(1, 1, 8)
    assert core.entropy_from_logits(uniform).item() == pytest.approx(math.log(8))
    masked = torch.tensor([[[0.0, 0.0, float("-inf"), float("-inf")]]])
    assert core.entropy_from_logits(masked).item() == pytest.approx(math.log(2))


def test_kl_estimators_by_hand():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert core.kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    # k3: r = 0.25/0.5 = 0.5 -> (0.5 - 1) - log 0.5
    assert core.kl_estimate(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2), rel=1e-6)
    assert core.kl_estimate(ref, ref, "k1").item() == 0.0
    assert core.kl_estimate(ref, ref, "k3").item() == 0.0
    assert core.kl_estimate(ref, logp, "k3").item() >= 0  # k3 is never negative
    with pytest.raises(ValueError):
        core.kl_estimate(logp, ref, "k2")  # type: ignore[arg-type]


def test_kl_penalized_rewards_put_the_score_on_the_last_real_token():
    logp = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    ref = t([[-1.5, -1.0, -2.0], [-1.0, -1.0, -1.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    rewards, kl = core.kl_penalized_rewards(t([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 2.0, 0.0, 0.0, 0.0, -1.0])


def test_gae_on_a_tiny_example():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]])
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])  # Monte-Carlo return 1 minus V 0.5
    assert ret.flatten().tolist() == pytest.approx([1.0, 1.0, 1.0])
    adv, _ = core.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # δ2 = 1 - .5 = .5 ; δ1 = .9*.5 - .5 = -.05 ; δ0 = -.05
    # A2 = .5 ; A1 = -.05 + .45*.5 = .175 ; A0 = -.05 + .45*.175 = .02875
    assert adv.flatten().tolist() == pytest.approx([0.02875, 0.175, 0.5])


def test_gae_stops_at_the_end_of_the_response():
    rewards, values, mask = t([[0.0, 1.0, 7.0]]), t([[0.2, 0.4, 9.0]]), t([[1, 1, 0]])
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # the padded step's reward and value are ignored: A1 = 1 - .4, A0 = 0 + .4 - .2 + .6
    assert adv.flatten().tolist() == pytest.approx([0.8, 0.6, 0.0])
    assert ret.flatten().tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_clipped_policy_loss_by_hand():
    mask = t([[1, 1]])
    old = t([[0.0, 0.0]])
    new = t([[math.log(1.5), math.log(1.5)]])
    out = core.clipped_policy_loss(new, old, t([[1.0, -1.0]]), mask, clip_range=0.2)
    # A=+1: max(-1.5, -1.2) = -1.2 (clipped) ; A=-1: max(1.5, 1.2) = 1.5 (not clipped)
    assert out.loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    assert out.approx_kl.item() == pytest.approx(0.5 * math.log(1.5) ** 2)
    # gradient flows only through the unclipped token
    new.requires_grad_(True)
    core.clipped_policy_loss(new, old, t([[1.0, -1.0]]), mask, 0.2).loss.backward()
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 1].item() == pytest.approx(1.5 / 2)


def test_clipped_value_loss_by_hand():
    loss, frac = core.clipped_value_loss(t([[1.0]]), t([[0.0]]), t([[0.0]]), t([[1]]), clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5)  # max((1-0)^2, (0.2-0)^2) / 2
    assert frac.item() == 0.0
    loss, frac = core.clipped_value_loss(t([[1.0]]), t([[0.0]]), t([[2.0]]), t([[1]]), clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (2.0 - 0.2) ** 2)
    assert frac.item() == 1.0


def test_explained_variance():
    r = t([[1.0, 2.0, 3.0]])
    m = t([[1, 1, 1]])
    assert core.explained_variance(r, r, m) == pytest.approx(1.0)
    assert core.explained_variance(torch.full_like(r, 2.0), r, m) == pytest.approx(0.0)


def test_kl_controllers():
    fixed = core.FixedKLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(12.0, 10)  # error clipped to +0.2 -> 0.1 * (1 + 0.2 * 10 / 100)
    assert ctl.value == pytest.approx(0.102)
    ctl.update(3.0, 10)  # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.102 * 0.98)
    other = core.AdaptiveKLController(1.0, 6.0, 100)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value


def test_response_masks_end_at_the_first_eos_inclusive():
    ids = torch.tensor([[5, 2, 2, 0], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask = core.response_mask_until_eos(ids, [2])
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert core.ends_with_eos(ids, [2]).tolist() == [True, False, True]
    assert core.last_token_index(mask).tolist() == [1, 3, 0]


def test_config_from_settings_and_validation():
    from rlhf.settings import load_settings

    s = load_settings()
    cfg = PPOConfig.from_settings(s.ppo, steps=3)
    assert cfg.steps == 3 and cfg.batch_size == s.ppo.batch_size and cfg.kl_estimator == s.ppo.kl_estimator
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="temperature"):
        PPOConfig(temperature=0.0)
    assert PPOConfig(lora_target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]


def _batch(responses, ended=None, examples=None, ids=None):
    n = len(responses)
    return RewardBatch(prompts=["p"] * n, responses=responses, examples=examples or [{}] * n,
                       ended=ended or [True] * n, response_ids=ids or [[1]] * n)


def test_composed_reward_weights_terms_and_penalises_missing_eos():
    reward = ComposedReward(
        [RewardTerm("a", lambda b: [1.0, 2.0]), RewardTerm("b", lambda b: [10.0, 0.0], weight=0.5)],
        no_eos_penalty=-1.0,
    )
    out = reward(_batch(["x", "y"], ended=[True, False]))
    assert out.scores == pytest.approx([6.0, 1.0])
    assert out.parts == {"a": [1.0, 2.0], "b": [10.0, 0.0], "no_eos": [0.0, 1.0]}
    with pytest.raises(ValueError, match="returned 1 values"):
        ComposedReward([RewardTerm("a", lambda b: [1.0])])(_batch(["x", "y"]))


def test_structure_terms_and_product_reward():
    # "a, b, b, z" with candidates {a, b, c}: 4 named, 3 candidates, 1 repeat
    # ... of the 2 kept (a, b), one reason copied from the prompt's example
    s = structure_scores(ListStructure(n_listed=4, n_candidate=3, n_duplicate=1, is_valid=False, n_kept=2,
                                       n_bad_reason=1), list_length=5)
    assert s == pytest.approx({"valid_count": 0.8, "candidate_only": 0.75, "no_duplicates": 0.75, "own_reasons": 0.5})
    empty = structure_scores(ListStructure(0, 0, 0, False, 0, 0), 5)
    assert empty == {"valid_count": 0.0, "candidate_only": 0.0, "no_duplicates": 1.0, "own_reasons": 0.0}

    calls = []

    def parse(text, example):
        calls.append(text)
        ids = text.split()
        cands = [i for i in ids if i in example["candidates"]]
        kept = list(dict.fromkeys(cands))
        return ListStructure(len(ids), len(cands), len(ids) - len(set(ids)),
                             is_valid=len(set(ids)) == 2 == len(cands), n_kept=len(kept), n_bad_reason=0)

    reward = product_reward(lambda prompts, responses: [0.5] * len(responses), parse,
                            list_length=2, structure_weight=0.3, no_eos_penalty=-1.0)
    ex = {"candidates": ["a", "b"]}
    out = reward(_batch(["a b", "a a"], ended=[True, False], examples=[ex, ex]))
    assert calls == ["a b", "a a"]  # parsed once per response, shared by the four terms
    assert out.valid == [True, False]
    assert out.parts["rm"] == [0.5, 0.5] and out.parts["no_duplicates"] == [1.0, 0.5]
    assert out.scores == pytest.approx([0.5 + 0.3, 0.5 + 0.075 * (1 + 1 + 0.5 + 1) - 1.0])


def test_structure_terms_never_reuse_an_earlier_batchs_parse():
    """Each PPO step scores a fresh batch, and CPython often gives it the id of the batch just freed: the
    parse shared by the structural terms must belong to the batch being scored, not to an earlier one."""
    def parse(text, example):
        ids = text.split()
        return ListStructure(len(ids), len(ids), 0, is_valid=len(ids) == 2, n_kept=len(ids), n_bad_reason=0)

    reward = product_reward(None, parse, list_length=2, structure_weight=1.0, no_eos_penalty=0.0)
    ex = {"candidates": ["a", "b"]}
    answers = [reward(_batch(["a b" if k % 2 else "a"], examples=[ex])).valid[0] for k in range(40)]
    assert answers == [k % 2 == 1 for k in range(40)]


def test_token_reward():
    out = token_reward(7)(_batch(["", "", ""], ids=[[7, 2], [3, 7], []]))
    assert out.scores == [1.0, 0.0, 0.0] and out.valid == [True, True, False]


class _CardScorer:
    """A stand-in RewardScorer: fixed raw scores and a card's score statistics."""

    rm_id = "rm_test"

    def __init__(self, raw, stats):
        self.raw, self.score_stats = raw, stats

    def score(self, prompts, responses, batch_size=32):
        return self.raw[: len(responses)]


def test_product_reward_puts_the_reward_model_on_the_scale_its_card_records(settings, caplog):
    from rlhf.ppo.product import build_product_reward

    batch = _batch(["", ""], ended=[True, True], examples=[{"candidates": []}] * 2)
    scorer = _CardScorer([0.03, 0.01], {"mean": 0.02, "std": 0.01, "n": 40})
    assert build_product_reward(scorer, settings)(batch).parts["rm"] == pytest.approx([1.0, -1.0])

    raw = settings.model_copy(update={"ppo": settings.ppo.model_copy(update={"rm_normalize": False})})
    assert build_product_reward(scorer, raw)(batch).parts["rm"] == pytest.approx([0.03, 0.01])

    flat = _CardScorer([0.03, 0.01], {"mean": 0.02, "std": 0.0, "n": 40})
    with caplog.at_level("WARNING"):
        assert build_product_reward(flat, settings)(batch).parts["rm"] == pytest.approx([0.03, 0.01])
    assert "unscaled" in caplog.text


def test_ppo_response_cap_covers_the_longest_constrained_list(caplog):
    """Defaults (full and quick) let PPO finish every list constrained generation can write; a lower
    cap is reported, since PPO would penalise those lists as having no EOS."""
    from rlhf.generate import constrained_worst_case_tokens
    from rlhf.ppo.product import warn_if_cap_cuts_lists
    from rlhf.settings import load_settings

    s = load_settings()
    worst = constrained_worst_case_tokens(s.generation.list_length, s.generation.max_reason_tokens)
    assert s.ppo.max_new_tokens >= worst
    assert s.rounds.quick["ppo"]["max_new_tokens"] >= worst
    assert not warn_if_cap_cuts_lists(PPOConfig.from_settings(s.ppo), s)
    with caplog.at_level("WARNING"):
        assert warn_if_cap_cuts_lists(PPOConfig.from_settings(s.ppo, max_new_tokens=worst - 1), s)
    assert "cut off" in caplog.text
    assert not warn_if_cap_cuts_lists(PPOConfig.from_settings(s.ppo, max_new_tokens=8, constrained=False), s)
