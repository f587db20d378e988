"""PPOTrainer: PPO for causal LMs on transformers + PEFT + accelerate (the classic RLHF recipe).

One iteration (:meth:`PPOTrainer.step`):

1. take ``batch_size`` prompts (a seeded permutation, sharded across processes), tokenise them LEFT
   padded with the tokenizer's attention mask;
2. sample one response each from the actor (LoRA adapter on) at ``temperature``; the optional
   ``logits_mask_fn`` (constrained decoding) is applied as a logits processor;
3. response masks end at the first EOS, inclusive (never built from the pad id: SmolLM2 pads with
   its EOS, which also appears inside every chat prompt);
4. one no-grad forward of the actor gives old log-probs and values, one with the adapter disabled
   gives reference log-probs; both divide logits by the temperature and apply the same mask as
   sampling, so log-probs describe the distribution the tokens were drawn from;
5. score the responses (``reward_fn``), build per-token rewards −β·KL with the score at the last
   token, GAE, whitened advantages;
6. ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss + vf_coef · clipped value
   loss, gradient clipping, AdamW on LoRA + value head;
7. update β (adaptive KL), log metrics (TensorBoard, store, returned dict).

Devices: an ``accelerate.Accelerator`` places everything; bf16 autocast where the hardware computes
bf16 natively (CUDA, or a CPU with AMX/AVX512-BF16: :func:`bf16_in_hardware`); the same code runs
on CPU and under ``accelerate launch`` (data parallel: each process samples its own shard, gradients
are all-reduced by DDP, metrics are gathered).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhf.models import enable_activation_checkpointing
from rlhf.ppo import core
from rlhf.ppo.checkpoint import (
    capture_rng_state,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.rewards import RewardBatch, RewardFn
from rlhf.ppo.value_head import PolicyWithValueHead

log = logging.getLogger(__name__)


def bf16_in_hardware(device_type: str) -> bool:
    """Whether a device of this type here computes bf16 natively: a CUDA GPU with bf16, or a CPU with
    AMX or AVX512-BF16, where autocast makes PPO 1.3-1.7x faster (BENCHMARKS.md). Elsewhere bf16 is
    emulated and slower, so ``config.bf16`` is ignored there."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        from rlhf.models import cpu_has_native_bf16

        return cpu_has_native_bf16()
    return False


class LogitsConstraint(Protocol):
    """Constrained decoding, applied identically at sampling time and in log-prob recomputation.

    ``processor`` returns a transformers LogitsProcessor for one ``generate`` call (row ``i`` follows
    ``examples[i]``; ``prompt_length`` is the left-padded prompt width). ``apply`` masks full
    teacher-forced logits: ``logits[:, j]`` (B, T, V) predicts ``completion_ids[:, j]`` (B, T); it
    returns the logits with disallowed tokens at -inf, exactly as the processor did when sampling.
    :mod:`rlhf.constrained` provides the product's list grammar (see :mod:`rlhf.ppo.product`).
    """

    def processor(self, examples: Sequence[Mapping[str, Any]], prompt_length: int) -> Any: ...

    def apply(
        self, logits: torch.Tensor, completion_ids: torch.Tensor, examples: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor: ...


class TokenSetConstraint:
    """The simplest constraint: only ``allowed_ids`` may be generated, at every position (tests, demos)."""

    def __init__(self, allowed_ids: Sequence[int], vocab_size: int) -> None:
        self.allowed = torch.zeros(vocab_size, dtype=torch.bool)
        self.allowed[list(allowed_ids)] = True

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.allowed.to(logits.device)[: logits.shape[-1]], float("-inf"))

    def processor(self, examples: Sequence[Mapping[str, Any]], prompt_length: int) -> Any:
        return lambda input_ids, scores: self._mask(scores)

    def apply(self, logits: torch.Tensor, completion_ids: torch.Tensor, examples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return self._mask(logits)


class MetricsSink(Protocol):
    """Receives the metrics of each step (main process only)."""

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None: ...


@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO needs about them (all on the device)."""

    sequences: torch.Tensor  # (B, P+R) prompt (left padded) + response
    attention_mask: torch.Tensor  # (B, P+R) 1 on prompt tokens and response tokens up to EOS
    position_ids: torch.Tensor  # (B, P+R)
    prompt_length: int  # P
    response_mask: torch.Tensor  # (B, R) float, 1 up to and including the first EOS
    logprobs: torch.Tensor  # (B, R) old log-probs (at the sampling temperature, masked like sampling)
    ref_logprobs: torch.Tensor  # (B, R)
    values: torch.Tensor  # (B, R)
    advantages: torch.Tensor  # (B, R) whitened
    returns: torch.Tensor  # (B, R)
    examples: list[Mapping[str, Any]]


def _as_examples(prompts: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    examples = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            examples.append({"prompt": p})
        elif isinstance(p, Mapping) and isinstance(p.get("prompt"), str):
            examples.append(dict(p))
        else:
            raise TypeError(f"Prompt {i} must be a string or a mapping with a 'prompt' string, got {type(p).__name__}.")
    if not examples:
        raise ValueError("PPO needs at least one prompt.")
    return examples


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A copy of the tokenizer that pads on the LEFT with a pad token distinct from EOS when possible.

    SmolLM2 ships ``pad == eos == <|im_end|>``; we pad with ``<|endoftext|>`` (or unk) instead, so
    that no code can confuse padding with the end of an answer. Masks never depend on it anyway
    (prompt masks come from the tokenizer, response masks from the first EOS).
    """
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        vocab = tok.get_vocab()
        for candidate in ("<|endoftext|>", "<pad>", "[PAD]", getattr(tok, "unk_token", None)):
            if candidate and candidate in vocab and vocab[candidate] != tok.eos_token_id:
                tok.pad_token = candidate
                break
        else:
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token  # last resort; still safe: masks never use the pad id
    return tok


class PPOTrainer:
    """PPO with a LoRA actor, its adapter-disabled self as reference, and a value head.

    Args:
        config: hyper-parameters (:class:`PPOConfig`).
        model: a transformers causal LM (a LoRA adapter is added) or a PEFT model (its adapter is trained).
        tokenizer: the model's tokenizer; a left-padding copy with a distinct pad token is used.
        reward_fn: ``RewardBatch -> RewardOutput`` (see :mod:`rlhf.ppo.rewards`).
        prompts: rendered prompt strings, or mappings with a ``prompt`` string plus metadata that is
            passed to the reward function and the logits mask (e.g. ``candidates``).
        logits_mask_fn: constrained decoding (a :class:`LogitsConstraint`), applied at sampling and in
            every log-prob computation (actor, old actor, reference); ignored when ``config.constrained`` is False.
        output_dir: run folder for checkpoints and TensorBoard (nothing is written when None).
        metrics_sinks: extra per-step receivers of the metrics (e.g. the store writer).
        accelerator: an ``accelerate.Accelerator`` (one is created when None).
    """

    def __init__(
        self,
        config: PPOConfig,
        model: Any,
        tokenizer: Any,
        reward_fn: RewardFn,
        prompts: Sequence[str | Mapping[str, Any]],
        *,
        logits_mask_fn: LogitsConstraint | None = None,
        output_dir: str | Path | None = None,
        metrics_sinks: Sequence[MetricsSink] = (),
        accelerator: Any = None,
        _advantage_sign: float = 1.0,
    ) -> None:
        from accelerate import Accelerator
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import set_seed

        self.config = config
        self.examples = _as_examples(prompts)
        self.reward_fn = reward_fn
        self.constraint = logits_mask_fn if config.constrained else None
        self.output_dir = Path(output_dir) if output_dir else None
        self.metrics_sinks = list(metrics_sinks)
        # A private hook for the test that proves the learning test can fail: −1 flips the policy gradient.
        self._advantage_sign = float(_advantage_sign)

        if accelerator is None:
            cuda_bf16 = config.bf16 and bf16_in_hardware("cuda")
            accelerator = Accelerator(mixed_precision="bf16" if cuda_bf16 else "no")
        self.accelerator = accelerator
        # On a CPU with native bf16 the trainer autocasts by itself rather than through accelerate, whose
        # mixed-precision state is process-wide and fixed once set; log-probs, values and losses are
        # computed in fp32 from the autocast outputs either way.
        self._cpu_bf16 = (config.bf16 and accelerator.device.type == "cpu"
                          and accelerator.mixed_precision == "no" and bf16_in_hardware("cpu"))
        log.info("PPO on %s, forward passes %s", accelerator.device,
                 "under bf16 autocast" if self.autocast_dtype else "in fp32")
        set_seed(config.seed)  # LoRA init is random: seed before creating the adapter

        self.tokenizer = prepare_tokenizer(tokenizer)
        self.eos_token_ids = self._eos_ids(model)
        if isinstance(model, PeftModel):
            policy = model
        else:
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.target_modules,
                task_type="CAUSAL_LM",
            )
            policy = get_peft_model(model, lora)
        if config.gradient_checkpointing:
            enable_activation_checkpointing(policy)
        wrapped = PolicyWithValueHead(policy)
        # No dropout anywhere: old and new log-probs must come from the same function (as in TRL's PPO).
        for module in wrapped.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        params = [p for p in wrapped.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(wrapped, optimizer)
        if self.accelerator.process_index > 0:
            # Same initial weights everywhere (DDP broadcasts rank 0's), different sampling randomness per rank.
            set_seed(config.seed + 100003 * self.accelerator.process_index)
        self._params = params
        self.kl_ctl: core.FixedKLController = (
            core.AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
            if config.adaptive_kl
            else core.FixedKLController(config.init_kl_coef)
        )
        self.step_count = 0
        # Prompt order: the same seeded permutation on every process, each taking its own slice.
        self._order_gen = torch.Generator().manual_seed(config.seed)
        self._order: list[int] = []
        self._minibatch_gen = torch.Generator().manual_seed(config.seed + 1)
        self._writer = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------ helpers
    def _eos_ids(self, model: Any) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, (list, tuple)):
            ids.update(gen_eos)
        ids.discard(None)
        if not ids:
            raise ValueError("The tokenizer has no EOS token; PPO needs one to know where responses end.")
        return sorted(ids)

    @property
    def unwrapped(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    @property
    def policy(self) -> Any:
        """The PEFT model (actor); ``with trainer.policy.disable_adapter():`` is the reference."""
        return self.unwrapped.policy

    def _next_examples(self) -> list[Mapping[str, Any]]:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        need = self.config.batch_size * world
        while len(self._order) < need:
            self._order.extend(torch.randperm(len(self.examples), generator=self._order_gen).tolist())
        taken, self._order = self._order[:need], self._order[need:]
        mine = taken[rank * self.config.batch_size : (rank + 1) * self.config.batch_size]
        return [self.examples[i] for i in mine]

    def _response_logprobs(
        self, logits: torch.Tensor, rollout_sequences: torch.Tensor, prompt_length: int, examples: Sequence
    ) -> torch.Tensor:
        """Log-probs of the response tokens at the sampling temperature, under the sampling mask."""
        logits = self._masked_tempered(logits, rollout_sequences, prompt_length, examples)
        logprobs = core.logprobs_from_logits(logits, rollout_sequences[:, prompt_length:])
        # Tokens after EOS (padding) may be forbidden by a constrained-decoding mask (-inf): zero them.
        return torch.nan_to_num(logprobs, nan=0.0, neginf=0.0, posinf=0.0)

    # ------------------------------------------------------------ rollout
    @torch.no_grad()
    def generate(self, examples: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Sample one response per prompt; returns (sequences, prompt attention mask, prompt length)."""
        from transformers import GenerationConfig, LogitsProcessorList

        cfg = self.config
        enc = self.tokenizer(
            [ex["prompt"] for ex in examples],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=cfg.max_prompt_tokens,
            add_special_tokens=False,
        ).to(self.accelerator.device)
        gen_config = GenerationConfig(
            do_sample=True,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_ids,
            repetition_penalty=1.0,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        if self.constraint is not None:
            processors.append(self.constraint.processor(examples, enc["input_ids"].shape[1]))
        policy = self.policy
        policy.eval()
        with self._autocast():
            sequences = policy.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                generation_config=gen_config,
                logits_processor=processors,
            )
        return sequences, enc["attention_mask"], enc["input_ids"].shape[1]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 when the forward passes run under bf16 autocast (CUDA or a CPU with native bf16), else None."""
        if self._cpu_bf16 or self.accelerator.mixed_precision == "bf16":
            return torch.bfloat16
        return None

    def _autocast(self) -> Any:
        """The forward passes' autocast: bf16 on a CPU that has it (``config.bf16``), else accelerate's."""
        if self._cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return self.accelerator.autocast()

    @torch.no_grad()
    def rollout(self, examples: Sequence[Mapping[str, Any]]) -> tuple[Rollout, dict[str, Any]]:
        """Sample, score and compute advantages for one batch; returns the rollout and raw statistics."""
        cfg = self.config
        sequences, prompt_mask, p_len = self.generate(examples)
        responses = sequences[:, p_len:]
        if responses.shape[1] == 0:  # every prompt hit EOS at once is impossible; guard anyway
            raise RuntimeError("generate() returned no new tokens.")
        response_mask = core.response_mask_until_eos(responses, self.eos_token_ids)
        ended = core.ends_with_eos(responses, self.eos_token_ids)
        attention_mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        mask_f = response_mask.float()

        model = self.unwrapped
        model.eval()
        with self._autocast():
            logits, values = model(sequences, attention_mask, position_ids, p_len)
            tempered = self._masked_tempered(logits, sequences, p_len, examples)
            logprobs = torch.nan_to_num(core.logprobs_from_logits(tempered, responses), nan=0.0, neginf=0.0)
            entropy = core.masked_mean(core.entropy_from_logits(tempered), mask_f)
            del logits, tempered
            with model.policy.disable_adapter():
                ref_logits, _ = model(sequences, attention_mask, position_ids, p_len)
            ref_logprobs = self._response_logprobs(ref_logits, sequences, p_len, examples)
            del ref_logits
        values = values.float()

        lengths = response_mask.sum(1)
        response_ids = [responses[i, : int(lengths[i])].tolist() for i in range(len(examples))]
        texts = self.tokenizer.batch_decode(
            [ids for ids in response_ids], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        reward = self.reward_fn(
            RewardBatch(
                prompts=[ex["prompt"] for ex in examples],
                responses=texts,
                examples=list(examples),
                ended=ended.tolist(),
                response_ids=response_ids,
            )
        )
        scores = torch.tensor(reward.scores, dtype=torch.float32, device=logprobs.device)
        rewards, kl = core.kl_penalized_rewards(
            scores, logprobs, ref_logprobs, mask_f, self.kl_ctl.value, cfg.kl_estimator
        )
        advantages, returns = core.gae(rewards, values, mask_f, cfg.gamma, cfg.lam)
        if cfg.advantage_whitening:
            advantages = core.masked_whiten(advantages, mask_f)
        advantages = advantages * self._advantage_sign
        rollout = Rollout(
            sequences=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids,
            prompt_length=p_len,
            response_mask=mask_f,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values * mask_f,
            advantages=advantages,
            returns=returns,
            examples=list(examples),
        )
        raw = {
            "scores": scores,
            "kl_sum": kl.sum(1),
            "lengths": lengths.float(),
            "ended": ended.float(),
            "valid": torch.tensor(
                [float(v) for v in reward.valid] if reward.valid is not None else [float("nan")] * len(examples),
                device=scores.device,
            ),
            "parts": {k: torch.tensor(v, dtype=torch.float32, device=scores.device) for k, v in reward.parts.items()},
            "entropy": entropy,
            "non_score_reward": (rewards.sum(1) - scores * (lengths > 0).float()),
            "texts": texts,
        }
        return rollout, raw

    def _masked_tempered(self, logits: torch.Tensor, sequences: torch.Tensor, p_len: int, examples: Sequence) -> torch.Tensor:
        logits = logits.float() / self.config.temperature
        if self.constraint is not None:
            logits = self.constraint.apply(logits, sequences[:, p_len:], examples)
        return logits

    # ------------------------------------------------------------ optimisation
    def optimize(self, rollout: Rollout) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped PPO updates over shuffled minibatches of the rollout."""
        cfg = self.config
        n = rollout.sequences.shape[0]
        mb = min(cfg.mini_batch_size, n)
        stats: dict[str, list[float]] = {k: [] for k in (
            "policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl", "ratio", "grad_norm")}
        self.model.train()
        p_len = rollout.prompt_length
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=self._minibatch_gen).tolist()
            for start in range(0, n, mb):
                idx = torch.tensor(order[start : start + mb], device=rollout.sequences.device)
                mask = rollout.response_mask[idx]
                # Trim columns that are padding for every row of this minibatch (speed only).
                r_len = int(mask.sum(1).max().item()) or 1
                seq = rollout.sequences[idx, : p_len + r_len]
                with self._autocast():
                    logits, values = self.model(seq, rollout.attention_mask[idx, : p_len + r_len],
                                                rollout.position_ids[idx, : p_len + r_len], p_len)
                    logprobs = self._response_logprobs(logits, seq, p_len, [rollout.examples[i] for i in idx.tolist()])
                mask = mask[:, :r_len]
                pg = core.clipped_policy_loss(
                    logprobs, rollout.logprobs[idx, :r_len], rollout.advantages[idx, :r_len], mask, cfg.clip_range
                )
                vf_loss, vf_clip = core.clipped_value_loss(
                    values.float(), rollout.values[idx, :r_len], rollout.returns[idx, :r_len], mask,
                    cfg.clip_range_value,
                )
                loss = pg.loss + cfg.vf_coef * vf_loss
                self.accelerator.backward(loss)
                grad_norm = float("nan")
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    grad_norm = float(self.accelerator.clip_grad_norm_(self._params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                stats["policy_loss"].append(pg.loss.item())
                stats["value_loss"].append(vf_loss.item())
                stats["clip_fraction"].append(pg.clip_fraction.item())
                stats["value_clip_fraction"].append(vf_clip.item())
                stats["approx_kl"].append(pg.approx_kl.item())
                stats["ratio"].append(pg.ratio_mean.item())
                stats["grad_norm"].append(grad_norm)
        self.model.eval()
        return {k: (sum(v) / len(v) if v else float("nan")) for k, v in stats.items()}

    # ------------------------------------------------------------ one iteration
    def step(self) -> dict[str, float]:
        """One PPO iteration (sample, score, update); returns its metrics (gathered over processes)."""
        t0 = time.perf_counter()
        examples = self._next_examples()
        rollout, raw = self.rollout(examples)
        t1 = time.perf_counter()
        opt = self.optimize(rollout)
        t2 = time.perf_counter()

        acc = self.accelerator
        gathered = {k: acc.gather(raw[k]) for k in ("scores", "kl_sum", "lengths", "ended", "valid",
                                                                 "non_score_reward")}
        parts = {k: acc.gather(v) for k, v in raw["parts"].items()}
        mean_kl = float(gathered["kl_sum"].mean())
        explained = core.explained_variance(rollout.values, rollout.returns, rollout.response_mask)
        local = torch.tensor(
            [raw["entropy"].item(), explained, *[opt[k] for k in sorted(opt)]], device=acc.device
        )
        local = acc.reduce(local, reduction="mean") if acc.num_processes > 1 else local
        entropy, explained = float(local[0]), float(local[1])
        opt = {k: float(local[2 + i]) for i, k in enumerate(sorted(opt))}
        valid = gathered["valid"]

        metrics: dict[str, float] = {
            "reward/score": float(gathered["scores"].mean()),
            "reward/score_std": float(gathered["scores"].std()) if gathered["scores"].numel() > 1 else 0.0,
            "reward/total_with_kl": float((gathered["scores"] + gathered["non_score_reward"]).mean()),
            "reward/validity_rate": float(valid.mean()) if not torch.isnan(valid).any() else float("nan"),
            "kl/mean": mean_kl,
            "kl/coef": self.kl_ctl.value,
            "policy/entropy": entropy,
            "policy/approx_kl": opt["approx_kl"],
            "policy/clip_fraction": opt["clip_fraction"],
            "policy/loss": opt["policy_loss"],
            "policy/ratio": opt["ratio"],
            "policy/grad_norm": opt["grad_norm"],
            "value/loss": opt["value_loss"],
            "value/clip_fraction": opt["value_clip_fraction"],
            "value/explained_variance": explained,
            "response/length": float(gathered["lengths"].mean()),
            "response/eos_rate": float(gathered["ended"].mean()),
            "time/rollout_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/step_s": t2 - t0,
        }
        for name, values in parts.items():
            metrics[f"reward/{name}"] = float(values.mean())
        self.kl_ctl.update(mean_kl, int(gathered["kl_sum"].numel()))
        self.step_count += 1
        metrics["step"] = float(self.step_count)
        self.history.append(metrics)
        if acc.is_main_process:
            self._emit(metrics)
        return metrics

    def _emit(self, metrics: dict[str, float]) -> None:
        if self._writer is None and self.output_dir is not None and self.config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
        if self._writer is not None:
            for key, value in metrics.items():
                if key != "step" and math.isfinite(value):
                    self._writer.add_scalar(key, value, self.step_count)
        for sink in self.metrics_sinks:
            try:
                sink(self.step_count, metrics)
            except Exception:  # a metrics sink must never kill a long training run
                log.warning("A metrics sink failed at step %d", self.step_count, exc_info=True)

    # ------------------------------------------------------------ run control
    def train(self, steps: int | None = None, *, progress: bool = True) -> list[dict[str, float]]:
        """Run until ``steps`` iterations in total (default ``config.steps``), checkpointing as configured."""
        from tqdm.auto import tqdm

        total = self.config.steps if steps is None else steps
        out = []
        bar = tqdm(total=total, initial=self.step_count, desc="PPO", unit="step",
                   disable=not progress or not self.accelerator.is_main_process)
        try:
            while self.step_count < total:
                metrics = self.step()
                out.append(metrics)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward/score']:.3f}", kl=f"{metrics['kl/mean']:.2f}")
                # Also in the log: a background round has no bar, and its log said nothing for a whole stage.
                log.info("PPO step %d/%d: reward %.3f, KL %.3f", self.step_count, total, metrics["reward/score"],
                         metrics["kl/mean"])
                every = self.config.checkpoint_every
                if self.output_dir is not None and every and self.step_count % every == 0:
                    self.save(self.output_dir / "checkpoints" / checkpoint_name(self.step_count))
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that a resumed run needs to continue identically."""
        return {
            "step": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "order": list(self._order),
            "order_gen": self._order_gen.get_state(),
            "minibatch_gen": self._minibatch_gen.get_state(),
            "rng": capture_rng_state(),
            "history": list(self.history),
        }

    def save(self, folder: str | Path) -> Path:
        """Write a checkpoint (adapter + value head + optimizer + RNG + step) to ``folder``."""
        self.accelerator.wait_for_everyone()
        folder = Path(folder)
        if self.accelerator.is_main_process:
            save_checkpoint(
                folder,
                policy=self.policy,
                value_head=self.unwrapped.value_head,
                trainer_state=self.state_dict(),
                config=self.config.to_dict(),
            )
            log.info("Saved PPO checkpoint %s", folder)
        self.accelerator.wait_for_everyone()
        return folder

    def load(self, folder: str | Path) -> int:
        """Resume from a checkpoint folder (or the newest one under a run folder); returns its step."""
        found = latest_checkpoint(Path(folder))
        if found is None:
            raise FileNotFoundError(f"No PPO checkpoint in {folder}.")
        state = load_checkpoint(found, policy=self.policy, value_head=self.unwrapped.value_head)
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.step_count = int(state["step"])
        self._order = list(state["order"])
        self._order_gen.set_state(state["order_gen"])
        self._minibatch_gen.set_state(state["minibatch_gen"])
        self.history = list(state.get("history", []))
        restore_rng_state(state["rng"])
        log.info("Resumed PPO from %s (step %d)", found, self.step_count)
        return self.step_count

    def save_adapter(self, folder: str | Path) -> Path:
        """Save only the trained LoRA adapter (what a new policy version needs), main process only."""
        folder = Path(folder)
        if self.accelerator.is_main_process:
            self.policy.save_pretrained(folder)
        self.accelerator.wait_for_everyone()
        return folder

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
