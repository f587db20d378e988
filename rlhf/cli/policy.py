"""``recfeedback policy list|export``: the policies a store knows, and one of them as a model to serve.

Heavy libraries (torch, transformers, peft) are imported inside the commands.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from rlhf.cli.common import friendly_errors
from rlhf.settings import get_settings

policy_app = typer.Typer(help="Policies: list them, export one as a standalone model for serving.",
                         no_args_is_help=True)


@policy_app.command("list")
@friendly_errors
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Registered policies, oldest first: base model, round, parent, lists written and the round's verdict."""
    from rlhf.policies import policy_summaries
    from rlhf.runtime import open_store

    summaries = policy_summaries(open_store(get_settings()))
    if as_json:
        typer.echo(json.dumps([{**dataclasses.asdict(s), "validity": s.validity} for s in summaries], indent=2,
                              default=str))
        return
    if not summaries:
        typer.echo("No policies yet. `recfeedback generate` registers the base model's.")
        return
    for s in summaries:
        valid = "-" if s.validity is None else f"{s.validity:.0%}"
        trained = f"round={s.round_id} parent={s.parent_id}" if s.round_id else (
            "baseline" if s.kind == "baseline" else f"base={s.base_model}")
        typer.echo(f"{s.policy_id}  {trained}  lists={s.n_lists} valid={valid} (of all its lists)"
                   + (f"\n    NDCG vs zero-shot, paired: {s.verdict}" if s.verdict else ""))


@policy_app.command("export")
@friendly_errors
def export_command(
    policy_id: str = typer.Argument(..., help="The policy to export (`recfeedback policy list`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the model into (created; must be empty)."),
    dtype: str = typer.Option("float32", help="Weights on disk: float32 (exact), bfloat16 or float16 (half size)."),
    force: bool = typer.Option(False, "--force", help="Replace the folder if it holds an earlier export."),
) -> None:
    """Write a policy as a standalone transformers model: its LoRA adapter merged into the base weights,
    with the tokenizer, a model card and its provenance. The folder loads with
    AutoModelForCausalLM.from_pretrained and works as model.policy."""
    from rlhf.policies import export_policy
    from rlhf.runtime import open_store, setup_logging

    setup_logging()
    settings = get_settings()
    result = export_policy(open_store(settings), settings, policy_id, out, dtype=dtype, overwrite=force)
    typer.echo(result.sentence())


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
