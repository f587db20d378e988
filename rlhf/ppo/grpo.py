"""Alternatives from TRL on the SAME reward and prompts: GRPO (``--algo grpo``) and RLOO (``--algo rloo``).

TRL 1.16's ``GRPOTrainer`` / ``RLOOTrainer`` are critic-free: they sample ``num_generations``
completions per prompt and use the group's reward statistics as the baseline. We adapt our
:class:`~rlhf.ppo.rewards.RewardFn` to TRL's reward-function signature
(``prompts, completions, completion_ids, **dataset_columns -> list[float]``) and map the PPO settings
onto their configs, so a user can switch algorithms with one flag and compare the same metrics.

Mapping from :class:`PPOConfig`: steps→max_steps, batch_size→per_device_train_batch_size (completions
per device per step; must be a multiple of num_generations), ppo_epochs→num_iterations,
init_kl_coef→beta, clip_range→epsilon, max_new_tokens→max_completion_length, temperature/top_k/top_p,
learning_rate, max_grad_norm, LoRA r/alpha/dropout/targets, bf16 on CUDA, gradient_checkpointing,
checkpoint_every→save_steps, seed.

Limitation: TRL's generation has no hook for a custom LogitsProcessor, so the constrained-decoding
mask of our PPO trainer is not applied here (the structural reward terms still reward valid lists).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf.ppo.config import PPOConfig
from rlhf.ppo.rewards import RewardBatch, RewardFn

log = logging.getLogger(__name__)

EXAMPLE_COLUMN = "recfeedback_example"


def trl_reward_function(reward_fn: RewardFn, eos_token_ids: Sequence[int]) -> Any:
    """Wrap our reward for TRL: examples travel as a JSON column; parts are logged via ``log_metric``."""
    eos = {int(i) for i in eos_token_ids}

    def recfeedback_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
        raw_examples = kwargs.get(EXAMPLE_COLUMN) or ["{}"] * len(prompts)
        examples = [json.loads(e) for e in raw_examples]
        batch = RewardBatch(
            prompts=[p if isinstance(p, str) else str(p) for p in prompts],
            responses=[c if isinstance(c, str) else str(c) for c in completions],
            examples=examples,
            ended=[any(int(t) in eos for t in ids) for ids in completion_ids],
            response_ids=[list(map(int, ids)) for ids in completion_ids],
        )
        out = reward_fn(batch)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, values in out.parts.items():
                log_metric(f"reward/{name}", sum(values) / max(1, len(values)))
            if out.valid is not None:
                log_metric("reward/validity_rate", sum(out.valid) / max(1, len(out.valid)))
        return list(out.scores)

    recfeedback_reward.__name__ = "recfeedback_reward"
    return recfeedback_reward


def _dataset(prompts: Sequence[str | Mapping[str, Any]]) -> Any:
    from datasets import Dataset

    rows = []
    for p in prompts:
        example = {"prompt": p} if isinstance(p, str) else dict(p)
        rows.append({"prompt": example["prompt"], EXAMPLE_COLUMN: json.dumps(example, default=str)})
    return Dataset.from_list(rows)


class _MetricsForwarder:
    """A TRL TrainerCallback that forwards each log dict to our metrics sinks (main process only)."""

    def __new__(cls, sinks: Sequence[Any]):  # built lazily so importing this module stays light
        from transformers import TrainerCallback

        class Forwarder(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or not state.is_world_process_zero:
                    return
                metrics = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                for sink in sinks:
                    try:
                        sink(int(state.global_step), metrics)
                    except Exception:
                        log.warning("A metrics sink failed", exc_info=True)

        return Forwarder()


def build_trl_trainer(
    config: PPOConfig,
    model: Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str | Mapping[str, Any]],
    *,
    output_dir: str | Path,
    algo: str = "grpo",
    metrics_sinks: Sequence[Any] = (),
) -> Any:
    """A TRL ``GRPOTrainer`` (or ``RLOOTrainer``) configured from our PPOConfig, on our reward."""
    from dataclasses import fields

    from peft import LoraConfig

    from rlhf.models import checkpointing_kwargs

    if algo == "grpo":
        from trl import GRPOConfig as ConfigCls
        from trl import GRPOTrainer as TrainerCls
    elif algo == "rloo":
        from trl import RLOOConfig as ConfigCls
        from trl import RLOOTrainer as TrainerCls
    else:
        raise ValueError(f"Unknown TRL algorithm {algo!r}; use 'grpo' or 'rloo'.")
    if config.batch_size % config.num_generations:
        raise ValueError(
            f"{algo.upper()} needs batch_size ({config.batch_size}) to be a multiple of num_generations "
            f"({config.num_generations})."
        )
    cuda = torch.cuda.is_available()
    wanted = dict(
        output_dir=str(output_dir),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        num_iterations=config.ppo_epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        beta=config.init_kl_coef,
        epsilon=config.clip_range,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        max_completion_length=config.max_new_tokens,
        seed=config.seed,
        bf16=bool(cuda and config.bf16),
        use_cpu=not cuda,
        **checkpointing_kwargs(ConfigCls, config.gradient_checkpointing),
        logging_steps=1,
        save_strategy="steps" if config.checkpoint_every else "no",
        save_steps=max(1, config.checkpoint_every),
        report_to=["tensorboard"] if config.tensorboard else [],
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    names = {f.name for f in fields(ConfigCls)}
    args = ConfigCls(**{k: v for k, v in wanted.items() if k in names})
    peft_config = None
    if not hasattr(model, "disable_adapter"):
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos_ids = [tokenizer.eos_token_id] + ([eos] if isinstance(eos, int) else list(eos or []))
    callbacks = [_MetricsForwarder(metrics_sinks)] if metrics_sinks else None
    return TrainerCls(
        model=model,
        reward_funcs=trl_reward_function(reward_fn, eos_ids),
        args=args,
        train_dataset=_dataset(prompts),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def run_trl(
    config: PPOConfig,
    model: Any,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: Sequence[str | Mapping[str, Any]],
    *,
    output_dir: str | Path,
    algo: str = "grpo",
    resume: str | Path | None = None,
    metrics_sinks: Sequence[Any] = (),
) -> Path:
    """Train with GRPO/RLOO and save the final adapter under ``output_dir/adapter``; returns that folder."""
    trainer = build_trl_trainer(
        config, model, tokenizer, reward_fn, prompts, output_dir=output_dir, algo=algo, metrics_sinks=metrics_sinks
    )
    resume_arg: str | bool | None = None
    if resume:
        # A HF checkpoint folder ("checkpoint-N") as given, or True = the newest one under output_dir.
        resume_arg = str(resume) if Path(resume).name.startswith("checkpoint-") else True
    trainer.train(resume_from_checkpoint=resume_arg)
    adapter_dir = Path(output_dir) / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    return adapter_dir
