"""``recfeedback ppo``: improve the policy against the reward model (our PPO, or TRL GRPO/RLOO)."""

from __future__ import annotations

import json

import typer

from rlhf.cli.common import friendly_errors
from rlhf.settings import PolicyAlgorithm


@friendly_errors
def ppo_command(
    algo: PolicyAlgorithm | None = typer.Option(None, "--algo", help="ppo (our trainer, default: settings.ppo.algo), "
                                                "grpo or rloo (TRL's trainers on the same reward and prompts)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Iterations (default: settings.ppo.steps)."),
    reward_model: str = typer.Option(None, "--reward-model", help="Registered reward-model id (default: the latest); "
                                     "'none' trains on the structural terms only."),
    resume: str = typer.Option(None, "--resume", help="Continue a run from its folder (or a checkpoint folder)."),
    limit_contexts: int = typer.Option(None, "--limit-contexts", min=1, help="Use at most this many training contexts."),
    output: str = typer.Option(None, "--output", help="Run folder (default: <data_dir>/ppo/<run id>)."),
) -> None:
    """Train a LoRA adapter on the policy with PPO and register it as a new policy.

    Multi-GPU: `accelerate launch --config_file configs/accelerate_multi_gpu.yaml $(which recfeedback) ppo ...`
    (see docs/scaling.md). Metrics go to TensorBoard (<run>/tensorboard) and the store.
    """
    from rlhf.ppo.product import run_ppo
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    setup_logging()
    settings = get_settings()
    summary = run_ppo(
        settings, open_store(settings), algo=algo, steps=steps, reward_model=reward_model,
        resume=resume, limit_contexts=limit_contexts, output_dir=output,
    )
    final = summary["final_metrics"]
    typer.echo(f"{summary['algo'].upper()} run {summary['run_id']} finished: adapter in {summary['adapter']}")
    if final:
        keys = ("reward/score", "reward/rm", "reward/validity_rate", "kl/mean", "response/length")
        typer.echo(json.dumps({k: round(final[k], 4) for k in keys if k in final}))


def register(app: typer.Typer) -> None:
    app.command("ppo")(ppo_command)
