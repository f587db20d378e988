"""Pure tensor functions of PPO for causal LMs: masks, log-probs, KL, GAE, losses, KL control.

Everything here is a small function of tensors (no model, no optimizer, no I/O), so each piece is
tested on its own against hand-computed values (tests/test_ppo_core.py). Shapes: ``(B, T)`` for
per-token quantities of a batch of ``B`` responses of at most ``T`` tokens, with a float or bool
``mask`` of the same shape that is 1 on real response tokens (up to and including the first EOS) and
0 on padding after it. Response tensors are aligned left: token 0 is the first generated token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k3"]


# ---------------------------------------------------------------- masked statistics
def _zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where the mask is set, exactly 0 elsewhere (also when x is ±inf/NaN there, e.g. the
    log-prob of a padding token that a constrained-decoding mask forbids)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is 1."""
    x = _zero_outside(x, mask)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    m = mask.to(x.dtype)
    x = _zero_outside(x, mask)
    if dim is None:
        return x.sum() / m.sum().clamp(min=1.0)
    return x.sum(dim) / m.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected when ``unbiased``)."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        if n <= 1:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean unless ``shift_mean`` is False) over the mask.

    Positions outside the mask are returned as 0 so that they cannot leak into a loss.
    """
    m = mask.to(x.dtype)
    mean, var = masked_mean(x, m), masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_outside(whitened, m)


# ---------------------------------------------------------------- log-probs and entropy
def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position: ``logits`` (B, T, V) and ``labels`` (B, T) -> (B, T) in float32.

    Computed as ``logit[label] - logsumexp(logits)`` in float32, which avoids materialising a
    second (B, T, V) tensor of log-softmax values (the vocabulary is large for LLMs).
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, T, V) -> (B, T).

    Masked-out vocabulary entries (logit -inf) contribute 0, as they should.
    """
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


# ---------------------------------------------------------------- KL
def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens SAMPLED from the policy.

    ``k1`` = log π − log π_ref: unbiased, can be negative for a single token, the classic RLHF penalty.
    ``k3`` = (r − 1) − log r with r = π_ref / π: unbiased, always ≥ 0, lower variance (Schulman, 2020).
    Both are 0 when the two log-probs are equal.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use 'k1' or 'k3'.")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``mask`` (0 for an empty row)."""
    t = mask.shape[1]
    positions = torch.arange(t, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(dim=1).values


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: −β·KL at every response token, plus the sequence score at its LAST token.

    Returns ``(rewards, kl)``, both (B, T) and zero outside the mask. This is the reward shaping of
    Ziegler et al. (2019) / InstructGPT: the scalar judgement of a whole response arrives when the
    response ends (its EOS, or the last token when it was cut off), the KL term keeps every token
    close to the reference.
    """
    m = mask.to(logprobs.dtype)
    kl = _zero_outside(kl_estimate(logprobs, ref_logprobs, estimator), m)
    rewards = -kl_coef * kl
    last = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    has_tokens = m.sum(1) > 0
    rewards[rows, last] += torch.where(has_tokens, scores.to(rewards.dtype), torch.zeros_like(rewards[rows, last]))
    return _zero_outside(rewards, m), kl


# ---------------------------------------------------------------- advantages
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; returns ``(advantages, returns)``.

    δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}, where the value after the last real token
    is 0 (the episode ends there). ``returns = advantages + values`` are the value targets. Both
    outputs are 0 outside the mask.
    """
    m = mask.to(values.dtype)
    values = _zero_outside(values, m)
    rewards = _zero_outside(rewards, m)
    t_len = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(t_len)):
        next_value = values[:, t + 1] if t + 1 < t_len else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * m[:, t]
        advantages[:, t] = last_gae
    return advantages, _zero_outside(advantages + values, m)


# ---------------------------------------------------------------- losses
@dataclass(frozen=True)
class PolicyLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> PolicyLossOutput:
    """PPO's clipped surrogate: mean over tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = π/π_old.

    Also returns the share of tokens where clipping was active and the approximate KL between the
    sampling policy and the current one, ½·E[(log ρ)²] (a diagnostic, as in TRL/OpenAI baselines).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLossOutput(loss, clip_fraction, approx_kl, ratio_mean)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """½·mean max((V − R)², (V_clip − R)²) with V_clip = V_old + clip(V − V_old, ±ε_v); and the clip share."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, clip_fraction


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V)/Var(R) over the mask: 1 is a perfect critic, ≤ 0 is no better than a constant."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)


# ---------------------------------------------------------------- KL control
class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move β so that the observed KL per response approaches ``target``.

    β ← β · (1 + clip(KL/target − 1, −0.2, 0.2) · n_steps / horizon). ``current_kl`` is the mean over
    responses of the summed per-token KL; ``n_steps`` is the number of responses in the batch.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        super().__init__(init_kl_coef)
        if target <= 0 or horizon <= 0:
            raise ValueError("The adaptive KL controller needs target > 0 and horizon > 0.")
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# ---------------------------------------------------------------- response masks
def response_mask_until_eos(response_ids: torch.Tensor, eos_token_ids: list[int] | tuple[int, ...]) -> torch.Tensor:
    """1 on response tokens up to and INCLUDING the first EOS, 0 after it (bool, (B, T)).

    Built from the EOS position, never from the pad id: with SmolLM2 the pad and EOS are the same
    token, and a mask ``ids != pad`` would hide the EOS that ends the answer.
    """
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= response_ids == eos
    # Number of EOS tokens strictly before each position; a token is kept while none came before.
    eos_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return eos_before == 0


def ends_with_eos(response_ids: torch.Tensor, eos_token_ids: list[int] | tuple[int, ...]) -> torch.Tensor:
    """True for each response that contains an EOS (it finished rather than hitting the length cap)."""
    found = torch.zeros(response_ids.shape[0], dtype=torch.bool, device=response_ids.device)
    for eos in eos_token_ids:
        found |= (response_ids == eos).any(dim=1)
    return found
