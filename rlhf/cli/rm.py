"""``recfeedback rm train|eval|score|list``: the pairwise reward model from the command line.

Heavy libraries (torch, transformers, trl) are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from rlhf.cli.common import above_zero, friendly_errors
from rlhf.settings import RewardModelMethod, Settings, get_settings, with_values

rm_app = typer.Typer(help="Reward models: train on the labels, evaluate, score generations, list.",
                     no_args_is_help=True)


def _with_overrides(settings: Settings, **values: Any) -> Settings:
    """The settings with the reward-model options the command was given (None: not given)."""
    return with_values(settings, "reward_model", **{k: v for k, v in values.items() if v is not None})


def _summary(metrics: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    held = metrics.get("heldout", {})
    gold = metrics.get("gold", {})
    return (f"held-out accuracy {fmt(held.get('accuracy'))} on {held.get('n', 0)} pairs, "
            f"ECE {fmt(held.get('ece'))}; gold accuracy {fmt(gold.get('accuracy'))} on {gold.get('n', 0)} pairs")


@rm_app.command("train")
@friendly_errors
def train_command(
    method: RewardModelMethod | None = typer.Option(None, help="Default: settings.reward_model.method."),
    backbone: str = typer.Option(None, help="LoRA backbone: 'policy', 'minilm' or a model path (default: settings)."),
    epochs: float = typer.Option(None, callback=above_zero, help="Training epochs (default: settings.reward_model.epochs)."),
    learning_rate: float = typer.Option(None, callback=above_zero, help="Learning rate."),
    batch_size: int = typer.Option(None, min=1, help="Pairs per batch."),
    max_length: int = typer.Option(None, min=1, help="Tokens per (prompt + response)."),
    max_steps: int = typer.Option(None, min=1, help="Stop after this many optimizer steps (quick runs)."),
    snapshot: Path = typer.Option(None, help="Train from this snapshot folder instead of a fresh one."),
    round_id: str = typer.Option(None, help="Record the model as part of this round."),
    as_json: bool = typer.Option(False, "--json", help="Print the registry record as JSON."),
) -> None:
    """Snapshot the labels, train a reward model, evaluate it and register it.

    'lora' is TRL's RewardTrainer with a LoRA adapter; 'probe' a Bradley-Terry head on a frozen encoder,
    which learns from fewer labels; 'auto' picks by the number of training examples.
    """
    from rlhf.reward.registry import method_of
    from rlhf.reward.train import train_from_snapshot, train_from_store
    from rlhf.runtime import open_store, setup_logging

    setup_logging()
    settings = _with_overrides(get_settings(), method=method, backbone=backbone, epochs=epochs, learning_rate=learning_rate,
                               batch_size=batch_size, max_length=max_length)
    store = open_store(settings)
    if snapshot is not None:
        record = train_from_snapshot(snapshot, settings, store=store, round_id=round_id, max_steps=max_steps)
    else:
        record = train_from_store(settings, store=store, round_id=round_id, max_steps=max_steps)
    if as_json:
        typer.echo(json.dumps({"rm_id": record.rm_id, "path": record.path, "metrics": record.metrics}, indent=2))
        return
    counts = (record.card or {}).get("data", {}).get("counts", {})
    typer.echo(f"Registered reward model {record.rm_id} ({method_of(record)}, {record.backbone}) at {record.path}")
    typer.echo(f"  trained on {counts.get('examples_train', '?')} examples; {_summary(record.metrics or {})}")


@rm_app.command("eval")
@friendly_errors
def eval_command(
    rm_id: str = typer.Option(None, help="Model id (default: the latest)."),
    snapshot: Path = typer.Option(None, help="Evaluate on this snapshot (default: a fresh one of the store)."),
) -> None:
    """Evaluate a registered model on the current held-out contexts and gold pairs (prints JSON)."""
    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.evaluate import evaluate_dataset
    from rlhf.reward.registry import load_reward_model
    from rlhf.runtime import open_store, setup_logging
    from storage.ids import new_id
    from storage.snapshot import read_snapshot, write_snapshot

    setup_logging()
    settings = get_settings()
    store = open_store(settings)
    scorer = load_reward_model(store, rm_id, settings=settings)
    # Use the model's own split and aggregation rules, so its held-out contexts are the ones it never saw.
    trained_rm = scorer.card.get("settings", {}).get("reward_model", {})
    settings = _with_overrides(settings, **{k: trained_rm[k] for k in ("heldout_fraction", "aggregation",
                                                                        "tie_rule") if k in trained_rm})
    if snapshot is None:
        snapshot = settings.data_dir / "snapshots" / new_id("snap")
        write_snapshot(store, snapshot, snapshot_id=snapshot.name)
    dataset = build_reward_dataset(read_snapshot(snapshot), settings)
    metrics = evaluate_dataset(scorer, dataset, batch_size=settings.reward_model.eval_batch_size, progress=True)
    typer.echo(json.dumps({"rm_id": scorer.rm_id, "snapshot": str(snapshot), "counts": dataset.counts,
                           "metrics": metrics}, indent=2))


@rm_app.command("score")
@friendly_errors
def score_command(
    rm_id: str = typer.Option(None, help="Model id (default: the latest)."),
    policy_id: str = typer.Option(None, help="Only generations of this policy."),
    generation: list[str] = typer.Option(None, help="Score these generation ids (repeatable)."),
    limit: int = typer.Option(None, min=1, help="At most this many generations."),
    out: Path = typer.Option(None, help="Write all scores to this .csv or .parquet file."),
) -> None:
    """Score stored generations with a reward model on the prompts their policy saw."""
    from rlhf.reward.registry import load_reward_model
    from rlhf.reward.score import score_generations
    from rlhf.runtime import open_store, setup_logging

    setup_logging()
    settings = get_settings()
    store = open_store(settings)
    scorer = load_reward_model(store, rm_id, settings=settings)
    frame = score_generations(store, scorer, settings, generation_ids=generation or None, policy_id=policy_id,
                              limit=limit, progress=True)
    if out is not None:
        if out.suffix == ".parquet":
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
        typer.echo(f"Wrote {len(frame)} scores to {out}")
    if frame.empty:
        typer.echo("No generations to score.")
        return
    typer.echo(f"Scored {len(frame)} generations with {scorer.rm_id}; mean reward by policy:")
    typer.echo(frame.groupby("policy_id")["reward"].agg(["count", "mean", "std"]).to_string())


@rm_app.command("list")
@friendly_errors
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Registered reward models, newest first, with their held-out metrics."""
    from rlhf.reward.registry import list_reward_models, method_of

    records = list_reward_models(get_settings())
    if as_json:
        typer.echo(json.dumps([{"rm_id": r.rm_id, "method": method_of(r),
                                "backbone": r.backbone, "round_id": r.round_id,
                                "path": r.path, "created_at": str(r.created_at), "metrics": r.metrics}
                               for r in records], indent=2))
        return
    if not records:
        typer.echo("No reward models yet. Train one with `recfeedback rm train`.")
        return
    for r in records:
        typer.echo(f"{r.rm_id}  {method_of(r):<5} {r.backbone:<8} round={r.round_id or '-'}  {_summary(r.metrics or {})}")


def register(app: typer.Typer) -> None:
    app.add_typer(rm_app, name="rm")
