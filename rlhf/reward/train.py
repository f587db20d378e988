"""Training a pairwise reward model with TRL's RewardTrainer (Bradley–Terry) and a LoRA adapter.

With few labels the LoRA model does not learn (on the demo shop it is at chance after 300), so
:func:`train_reward_model` trains the small-data probe of :mod:`rlhf.reward.probe` instead when
:func:`choose_method` says so (``reward_model.method``; ``auto`` by the number of examples). Both give
a :class:`~rlhf.reward.score.RewardScorer` and are registered alike. For the LoRA model,
:func:`train_reward_model` trains on a preference frame (``prompt``, ``chosen``, ``rejected`` and
optionally ``margin``): it encodes each side with the returned scorer's own ``encode`` (input format
and truncation as at scoring time) and hands TRL the pre-tokenised columns ``chosen_ids`` / ``rejected_ids`` /
``margin`` that ``RewardTrainer`` accepts as an already-processed dataset. TRL then computes
``-log σ(r_chosen − r_rejected − margin) + c · mean((r_chosen + r_rejected)²)`` with ``c`` =
``center_rewards_coefficient``. The backbone is an ``AutoModelForSequenceClassification`` with one
output; TRL wraps it with PEFT (``task_type=SEQ_CLS``, so the score head is trained and saved too).

:func:`train_from_snapshot` is the round's entry point: snapshot -> dataset -> train -> evaluate ->
registry. :func:`train_from_store` first snapshots the live store (short units of work), so training
never holds the store.

CUDA with bf16 autocast when a GPU is present, CPU fp32 otherwise; tqdm progress; TensorBoard event
files under ``<model folder>/runs``.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rlhf.errors import RecFeedbackError
from rlhf.reward.backbones import Backbone, effective_max_length, load_backbone, resolve_backbone
from rlhf.reward.score import RewardScorer
from rlhf.wording import counted

if TYPE_CHECKING:
    from rlhf.settings import Settings
    from storage import Store
    from storage.records import RewardModelRecord
    from storage.snapshot import Snapshot

log = logging.getLogger(__name__)


class RewardTrainingError(RecFeedbackError):
    """The reward model cannot be trained (too few usable labels, bad input)."""


@dataclass
class TrainResult:
    """A trained reward model in memory, with what its training cost."""

    model: Any
    tokenizer: Any
    backbone: Backbone
    scorer: RewardScorer
    output_dir: Path
    n_train: int
    train_seconds: float
    pairs_per_second: float
    peak_rss_mb: float
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    peak_cuda_mb: float | None = None
    method: str = "lora"

    def losses(self) -> list[float]:
        """Training losses in logging order."""
        return [float(h["loss"]) for h in self.history if "loss" in h]

    def summary(self) -> dict[str, Any]:
        losses = self.losses()
        return {
            "method": self.method, "n_train": self.n_train, "max_length": self.scorer.max_length,
            "input_format": self.scorer.input_format,
            "match_features": list(getattr(self.scorer, "match", ())) or None,
            "train_seconds": round(self.train_seconds, 2),
            "pairs_per_second": round(self.pairs_per_second, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_cuda_mb": self.peak_cuda_mb, "device": self.device,
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "tensorboard_dir": str(self.output_dir / "runs") if self.method == "lora" else None,
        }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def encode_preferences(frame: pd.DataFrame, scorer: RewardScorer) -> dict[str, list[Any]]:
    """TRL's processed preference columns for a frame: chosen_ids, rejected_ids (and margin if present).

    Encoded by ``scorer.encode``, the very function that scores later: the same input format
    (:mod:`rlhf.reward.inputs`) and truncation in training and at inference, by construction.
    """
    prompts = frame["prompt"].tolist() if "prompt" in frame else [""] * len(frame)
    columns: dict[str, list[Any]] = {
        "chosen_ids": scorer.encode(prompts, frame["chosen"].tolist()),
        "rejected_ids": scorer.encode(prompts, frame["rejected"].tolist()),
    }
    if "margin" in frame:
        columns["margin"] = [float(m) for m in frame["margin"]]
    return columns


def choose_method(settings: Settings, n_examples: int) -> str:
    """'lora' or 'probe' for a training set of ``n_examples``, as ``reward_model.method`` asks."""
    rm = settings.reward_model
    if rm.method != "auto":
        return rm.method
    return "probe" if n_examples < rm.probe_max_examples else "lora"


def method_summary(settings: Settings) -> str:
    """A short human description of the reward model a training run will produce (the Training page)."""
    rm = settings.reward_model
    lora = f"TRL + LoRA on {rm.backbone}, {counted(rm.epochs, 'epoch')}"
    probe = (f"probe on frozen {rm.probe_backbone}" + (" + match features" if rm.probe_match_features else "")
             + (" + reason fit" if rm.probe_reason_features else ""))
    if rm.method == "lora":
        return lora
    if rm.method == "probe":
        return probe
    return f"{probe} below {rm.probe_max_examples:,} labels, else {lora}"


def train_reward_model(
    train: pd.DataFrame,
    *,
    settings: Settings,
    output_dir: str | Path,
    backbone: str | Backbone | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    method: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a reward model on ``train`` (prompt / chosen / rejected [/ margin]) and return it.

    The method is ``method`` or :func:`choose_method`'s pick for this many examples: the LoRA model
    (TRL) or the frozen-encoder probe (:mod:`rlhf.reward.probe`, backbone ``probe_backbone`` unless
    ``backbone`` is given). Hyper-parameters come from ``settings.reward_model``; ``max_steps`` caps
    the LoRA optimizer's steps (benchmarks). ``on_step`` hears (step, total steps) after each of the LoRA
    optimizer's steps: live progress where there is no terminal (a background round); the probe, which
    fits in one go, reports none.
    """
    if len(train) == 0:
        raise RewardTrainingError("There are no training examples.")
    missing = {"chosen", "rejected"} - set(train.columns)
    if missing:
        raise RewardTrainingError(f"The training frame lacks the columns {sorted(missing)}.")
    method = method or choose_method(settings, len(train))
    if method == "probe":
        from rlhf.reward.probe import train_probe

        bb = backbone if isinstance(backbone, Backbone) else resolve_backbone(
            backbone or settings.reward_model.probe_backbone, settings)
        return train_probe(train, settings=settings, output_dir=output_dir, backbone=bb, progress=progress)
    if method != "lora":
        raise RewardTrainingError(f"Unknown reward-model method {method!r} (expected 'lora' or 'probe').")
    return _train_lora(train, settings=settings, output_dir=output_dir, backbone=backbone, max_steps=max_steps,
                       progress=progress, on_step=on_step)


def _train_lora(
    train: pd.DataFrame,
    *,
    settings: Settings,
    output_dir: str | Path,
    backbone: str | Backbone | None,
    max_steps: int | None,
    progress: bool,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """TRL RewardTrainer with a LoRA adapter (the module docstring)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType
    from transformers import TrainerCallback, set_seed
    from trl import RewardConfig, RewardTrainer

    class StepReporter(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_step(state.global_step, state.max_steps)

    from rlhf.models import checkpointing_kwargs, pick_device

    rm = settings.reward_model
    bb = backbone if isinstance(backbone, Backbone) else resolve_backbone(backbone, settings)
    device = pick_device(rm.device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    set_seed(rm.seed)  # the score head is initialised at load time
    model, tokenizer = load_backbone(bb, device="cpu", dtype="float32")
    max_length = effective_max_length(model, rm.max_length)
    scorer = RewardScorer(model, tokenizer, kind=bb.kind, max_length=max_length, input_format=rm.input_format)
    data = Dataset.from_dict(encode_preferences(train, scorer))

    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=rm.lora_r, lora_alpha=rm.lora_alpha, lora_dropout=rm.lora_dropout,
        target_modules=rm.lora_target_modules,
    )
    args = RewardConfig(
        output_dir=str(output_dir),
        num_train_epochs=rm.epochs,
        max_steps=int(max_steps) if max_steps else -1,
        per_device_train_batch_size=rm.batch_size,
        per_device_eval_batch_size=rm.eval_batch_size,
        gradient_accumulation_steps=rm.gradient_accumulation_steps,
        learning_rate=rm.learning_rate,
        weight_decay=rm.weight_decay,
        warmup_steps=rm.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=rm.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=["tensorboard"],
        seed=rm.seed,
        data_seed=rm.seed,
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        **checkpointing_kwargs(RewardConfig, rm.gradient_checkpointing),
        max_length=max_length,
        center_rewards_coefficient=rm.center_rewards_coefficient or None,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config,
        callbacks=[StepReporter()] if on_step is not None else None,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    steps = trainer.state.global_step
    seen = min(steps * rm.batch_size * rm.gradient_accumulation_steps, int(len(data) * rm.epochs + 0.5)) \
        if not max_steps else steps * rm.batch_size * rm.gradient_accumulation_steps
    model = trainer.model
    model.eval()
    scorer.model = model  # the trained (PEFT-wrapped) model; the encoding stays the one training used
    return TrainResult(
        model=model, tokenizer=tokenizer, backbone=bb, scorer=scorer, output_dir=output_dir, n_train=len(data),
        train_seconds=seconds, pairs_per_second=seen / seconds if seconds > 0 else float("nan"),
        peak_rss_mb=peak_rss_mb(), device=device, history=list(trainer.state.log_history),
        peak_cuda_mb=(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
    )


def train_from_snapshot(
    snapshot: Snapshot | str | Path,
    settings: Settings,
    *,
    store: Store,
    backbone: str | None = None,
    round_id: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    policy_tokenizer: Any | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> RewardModelRecord:
    """Dataset from a snapshot, training, evaluation on held-out contexts and gold, then registration.

    The store is touched only at the end, by one short unit of work that inserts the registry row.
    ``on_step``: as in :func:`train_reward_model`.
    """
    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.evaluate import evaluate_dataset, score_statistics
    from rlhf.reward.registry import new_rm_id, reward_model_dir, save_reward_model
    from storage.snapshot import read_snapshot

    snap = snapshot if not isinstance(snapshot, (str, Path)) else read_snapshot(snapshot)
    dataset = build_reward_dataset(snap, settings, policy_tokenizer=policy_tokenizer)
    n = len(dataset.train)
    if n < settings.reward_model.min_examples:
        raise RewardTrainingError(
            f"Only {n} usable training examples (need {settings.reward_model.min_examples}; "
            f"counts: {dataset.counts}). Collect more A/B labels first."
        )
    rm_id = new_rm_id()
    folder = reward_model_dir(settings, rm_id)
    log.info("Training reward model %s on %d examples (%s)", rm_id, n, dataset.counts)
    result = train_reward_model(
        dataset.train, settings=settings, output_dir=folder, backbone=backbone, max_steps=max_steps,
        progress=progress, on_step=on_step,
    )
    metrics = evaluate_dataset(
        result.scorer, dataset, batch_size=settings.reward_model.eval_batch_size, progress=progress
    )
    train_pairs = dataset.pairs[dataset.pairs["split"] == "train"]  # evaluation scored the other splits
    stats = score_statistics(result.scorer, train_pairs, batch_size=settings.reward_model.eval_batch_size)
    return save_reward_model(
        result, rm_id=rm_id, store=store, settings=settings, metrics=metrics, counts=dataset.counts,
        snapshot_id=dataset.snapshot_id, round_id=round_id, extra={"score_stats": stats},
    )


def train_from_store(
    settings: Settings,
    *,
    store: Store | None = None,
    backbone: str | None = None,
    round_id: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> RewardModelRecord:
    """Snapshot the store under ``<data_dir>/snapshots/<id>/`` and train from that snapshot."""
    from rlhf.runtime import open_store
    from storage.ids import new_id
    from storage.snapshot import write_snapshot

    store = store or open_store(settings)
    snapshot_id = new_id("snap")
    folder = settings.data_dir / "snapshots" / snapshot_id
    write_snapshot(store, folder, snapshot_id=snapshot_id)
    return train_from_snapshot(
        folder, settings, store=store, backbone=backbone, round_id=round_id, max_steps=max_steps, progress=progress
    )
