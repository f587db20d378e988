"""PPOConfig: every hyper-parameter of our PPO trainer, documented, built from ``settings.ppo``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


@dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters of one PPO run (defaults = ``rlhf.settings.PPOSettings``).

    Rollout
        steps: PPO iterations to run (one iteration = sample ``batch_size`` responses, then
            ``ppo_epochs`` passes of minibatch updates over them).
        batch_size: prompts (= responses) sampled per iteration, per process.
        max_new_tokens: response length cap; a response that hits it has no EOS and gets
            ``no_eos_penalty`` added to its score.
        max_prompt_tokens: prompts longer than this are cut from the left (their end matters most).
        temperature: sampling temperature; log-probs are recomputed from logits / temperature so the
            ratio π/π_old and the KL use the distribution the tokens were drawn from.
        top_k, top_p: 0 / 1.0 (off) by default: truncated sampling would make the sampled
            distribution differ from the one whose log-probs PPO optimises.
        constrained: apply the trainer's ``logits_mask_fn`` (constrained decoding) at sampling AND
            in every log-prob computation (policy, old policy, reference).
    Optimisation
        ppo_epochs: passes over the batch per iteration.
        mini_batch_size: responses per gradient step (``batch_size`` must be a multiple).
        learning_rate, weight_decay: AdamW on the LoRA parameters and the value head.
        clip_range: ε of the clipped policy surrogate.
        clip_range_value: ε_v of the clipped value loss (values move at most this far from the
            values at sampling time).
        vf_coef: weight of the value loss in the total loss (the value head shares the backbone).
        max_grad_norm: gradient clipping threshold on the global norm (0 disables it).
        gamma, lam: discount and GAE λ over response tokens.
        advantage_whitening: normalise advantages over the batch (always on in the classic recipe).
    KL to the reference (the same weights with the adapter disabled)
        init_kl_coef: β, weight of the per-token KL penalty in the reward.
        adaptive_kl: adapt β towards ``target_kl`` (Ziegler et al., 2019); else β is fixed.
        target_kl: wanted KL per response (sum over its tokens, in nats).
        kl_horizon: how slowly β adapts (in responses).
        kl_estimator: 'k1' (log-ratio, classic) or 'k3' (non-negative, lower variance).
    Reward (see rlhf.ppo.rewards)
        no_eos_penalty: added to the score of a response cut off by the length cap.
        structure_weight: weight of the parser's structural terms next to the reward-model score.
    Model
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the actor's LoRA adapter.
        gradient_checkpointing: trade compute for memory in the training forward passes.
        bf16: autocast to bfloat16 where the hardware computes it natively: a CUDA GPU with bf16, or a
            CPU with AMX or AVX512-BF16 (fp32 master weights; ignored elsewhere).
    Run control
        checkpoint_every: save adapter + value head + optimizer + RNG + step every N iterations.
        tensorboard: write TensorBoard events under the run folder.
        seed: seeds sampling, prompt order, LoRA init and dropout (identical seeds, identical runs on CPU).
        algo: 'ppo' (this trainer) or 'grpo'/'rloo' (TRL's trainers on the same reward).
        num_generations: GRPO/RLOO group size.
    """

    steps: int = 200
    batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    advantage_whitening: bool = True
    init_kl_coef: float = 0.05
    adaptive_kl: bool = True
    target_kl: float = 6.0
    kl_horizon: int = 10000
    kl_estimator: Literal["k1", "k3"] = "k1"
    max_grad_norm: float = 1.0
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 128
    max_prompt_tokens: int = 1536
    constrained: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    no_eos_penalty: float = -1.0
    structure_weight: float = 0.5
    gradient_checkpointing: bool = False
    bf16: bool = True
    checkpoint_every: int = 50
    tensorboard: bool = True
    seed: int = 42
    algo: Literal["ppo", "grpo", "rloo"] = "ppo"
    num_generations: int = 4

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1 or self.mini_batch_size < 1:
            problems.append("batch_size and mini_batch_size must be at least 1")
        elif self.batch_size % self.mini_batch_size:
            problems.append(f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size "
                            f"({self.mini_batch_size})")
        if self.temperature <= 0:
            problems.append("temperature must be > 0 (PPO samples; greedy decoding has no log-probs to ratio)")
        if self.max_new_tokens < 1:
            problems.append("max_new_tokens must be at least 1")
        if self.ppo_epochs < 1 or self.steps < 0:
            problems.append("ppo_epochs must be at least 1 and steps at least 0")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append("kl_estimator must be 'k1' or 'k3'")
        if problems:
            raise ValueError("Invalid PPO configuration: " + "; ".join(problems) + ".")

    @classmethod
    def from_settings(cls, ppo_settings: Any, **overrides: Any) -> PPOConfig:
        """A config from ``settings.ppo`` (fields with the same names), with explicit overrides on top."""
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in ppo_settings.model_dump().items() if k in names}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    @property
    def target_modules(self) -> str | list[str]:
        """``lora_target_modules`` as PEFT expects it."""
        if self.lora_target_modules == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> PPOConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
