"""Our PPO trainer for causal LMs (transformers + PEFT + accelerate), its reward, and TRL alternatives.

Public API::

    from rlhf.ppo import PPOConfig, PPOTrainer, RewardBatch, RewardOutput, ComposedReward, RewardTerm

Heavy modules (torch, transformers) are imported when these names are first used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ComposedReward",
    "LogitsConstraint",
    "PPOConfig",
    "PPOTrainer",
    "RewardBatch",
    "RewardOutput",
    "RewardTerm",
    "TokenSetConstraint",
    "product_reward",
    "run_ppo",
    "token_reward",
]

_WHERE = {
    "PPOConfig": "rlhf.ppo.config",
    "PPOTrainer": "rlhf.ppo.trainer",
    "RewardBatch": "rlhf.ppo.rewards",
    "RewardOutput": "rlhf.ppo.rewards",
    "RewardTerm": "rlhf.ppo.rewards",
    "ComposedReward": "rlhf.ppo.rewards",
    "product_reward": "rlhf.ppo.rewards",
    "token_reward": "rlhf.ppo.rewards",
    "LogitsConstraint": "rlhf.ppo.trainer",
    "TokenSetConstraint": "rlhf.ppo.trainer",
    "run_ppo": "rlhf.ppo.product",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rlhf.ppo' has no attribute {name!r}")
