"""``recfeedback round run|status|list|lists|cancel|resume``: training rounds from the command line.

``python -m rlhf.cli.rounds ...`` runs the same commands without the rest of the CLI; the Training page
starts background rounds that way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rlhf.cli.common import friendly_errors

# Options several round commands share, said once.
DataDir = Annotated[str | None, typer.Option("--data-dir", help="Data folder (default: settings.store.data_dir).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Background = Annotated[bool, typer.Option("--background", "-b", help="Start it as a background process and "
                                                                      "return.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")]
StopAfter = Annotated[str | None, typer.Option("--stop-after", help="Stop after this stage (debugging).")]


def _settings(data_dir: str | None) -> Any:
    from rlhf.settings import get_settings, load_settings

    if data_dir is None:
        return get_settings()
    return load_settings(store={**get_settings().store.model_dump(), "data_dir": Path(data_dir)})


def _progress_line(status: dict[str, Any], round_left: float | None = None) -> str | None:
    """``progress: ppo 2/6, about 7 min left in this stage; …`` for a round whose stage counts its work, with
    ``round_left`` (seconds left in the whole round, when known)."""
    from rlhf.rounds import duration_text, stage_left_text, stage_seconds_left

    progress = status.get("progress") or {}
    if not progress.get("total"):
        return None
    left = stage_seconds_left(progress) if status["status"] == "running" else None
    return (f"progress: {progress.get('stage')} {progress.get('step')}/{progress.get('total')}"
            + (f", {stage_left_text(left)}" if left is not None else "")
            + (f"; {duration_text(round_left)} left in the round, by the last round with these settings"
               if round_left is not None else ""))


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    from rlhf.rounds import SettingValue, setting_text

    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
    typer.echo(f"Round {status['round_id']}: {status['status']} (stage {status['stage']})")
    if line := _progress_line(status, status.get("seconds_left")):
        typer.echo(f"  {line}")
    typer.echo(f"  finished stages: {', '.join(status['completed_stages']) or 'none'}")
    if status.get("timings"):
        typer.echo("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in status["timings"].items()))
    if status.get("policy_id"):
        typer.echo(f"  new policy: {status['policy_id']} (from {status['parent_policy_id']})")
    if status.get("reward_model_id"):
        typer.echo(f"  reward model: {status['reward_model_id']}")
    for key, value in (status.get("metrics") or {}).items():
        if not isinstance(value, dict):
            typer.echo(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if status.get("ndcg_vs_zero_shot"):
        typer.echo(f"  NDCG vs zero-shot, paired: {status['ndcg_vs_zero_shot']}")
    if status.get("reasons_vs_zero_shot"):
        typer.echo(f"  reasons grounded vs zero-shot, paired: {status['reasons_vs_zero_shot']}")
    changes = status.get("settings_changes") or []
    if changes:
        typer.echo(f"  settings changed since {status['previous_round_id']}: "
                   + "; ".join(SettingValue(**c).said() for c in changes))
    if "settings" in status:
        if status["settings"] is None:
            typer.echo("  settings: not recorded (the round folder has no settings.json)")
        else:
            typer.echo("  settings:")
            for v in status["settings"]:
                was = f"   (was {setting_text(v['previous'])})" if v["changed"] else ""
                typer.echo(f"    {v['setting']} = {setting_text(v['value'])}{was}")
    if status.get("error"):
        typer.echo(f"  {'why' if status['status'] == 'cancelled' else 'error'}: {status['error']}")
    if status["status"] in ("cancelled", "failed"):
        typer.echo(f"  The store is as it was before the round; continue it after its last finished stage with "
                   f"`recfeedback round resume {status['round_id']}`.")
    if status["status"] == "interrupted":
        typer.echo(f"  Its process is gone: continue it with `recfeedback round resume {status['round_id']}`.")
    if status["status"] == "stopped":
        typer.echo(f"  Stopped after its stage {status['stage']}, as asked: continue it with "
                   f"`recfeedback round resume {status['round_id']}`.")


@friendly_errors
def run_command(
    round_id: str = typer.Option(None, "--id", help="Round id (default: a new one)."),
    data_dir: DataDir = None,
    background: Background = False,
    progress: Progress = True,
    stop_after: StopAfter = None,
    quick: bool = typer.Option(False, "--quick", help="A small round that finishes in minutes on a CPU "
                               "(settings.rounds.quick replaces the full sizes): demos and smoke tests."),
    start_from: str = typer.Option(None, "--from", help="The policy to start from (settings.rounds.parent_policy; "
                                   "`recfeedback policy list`), e.g. to roll back after a round that made lists "
                                   "worse. Default: the newest finished round's policy."),
) -> None:
    """Run a training round: snapshot -> reward model -> PPO -> generate -> select -> enqueue."""
    from rlhf.rounds import (
        check_can_start,
        gpu_visible,
        launch_round,
        list_round_summaries,
        parent_policy_id,
        quick_overrides,
        quick_settings,
        round_estimate,
        run_round,
    )
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import with_values

    setup_logging(progress=progress)
    settings = _settings(data_dir)
    if quick:
        for sentence in quick_overrides(settings):
            typer.secho(f"Warning: {sentence}", fg=typer.colors.YELLOW, err=True)
        settings = quick_settings(settings)
    if start_from:
        settings = with_values(settings, "rounds", parent_policy=start_from)
    store = open_store(settings)
    usable = check_can_start(store, settings)  # refusals first (they are checked again as the round starts)
    parent_policy_id(store, settings)
    # How long to expect, before it starts.
    for level, sentence in round_estimate(settings, list_round_summaries(store), usable, quick=quick,
                                          gpu=gpu_visible()):
        if level == "warning":
            typer.secho(f"Warning: {sentence}", fg=typer.colors.YELLOW, err=True)
        else:
            typer.echo(sentence.replace("`", ""))
    if background:
        launched = launch_round(settings, round_id=round_id, store=store, stop_after=stop_after)
        typer.echo(f"Round {launched.round_id} started in the background (pid {launched.pid}) on "
                   f"{launched.usable_labels} labels; `recfeedback round status {launched.round_id} --watch 10` follows it.")
        return
    record = run_round(store, settings, round_id=round_id, progress=progress, stop_after=stop_after)
    _print_status(_status(store, record.round_id), False)


def _status(store: Any, round_id: str, *, all_settings: bool = False) -> dict[str, Any]:
    """The round's status, with its verdicts against the zero-shot model when it has been evaluated and the
    settings that differ from the round before's (``all_settings``: every training setting too)."""
    from rlhf.rounds import (
        last_duration_like,
        list_round_summaries,
        round_seconds_left,
        round_settings,
        round_status,
        round_verdicts,
    )

    verdicts = round_verdicts(store, round_id).get(round_id, {})
    summaries = list_round_summaries(store)
    recorded = round_settings(store, round_id, summaries)
    status = {**round_status(store, round_id), "ndcg_vs_zero_shot": verdicts.get("ndcg"),
              "reasons_vs_zero_shot": verdicts.get("reasons"), "previous_round_id": recorded.previous_round_id,
              "settings_changes": [vars(c) for c in recorded.changes]}
    like = last_duration_like(round_id, summaries) if status["status"] == "running" else None
    status["seconds_left"] = round_seconds_left(status["progress"], like) if like is not None else None
    if all_settings:
        status["settings"] = [vars(v) for v in recorded.values] if recorded.recorded else None
    return status


@friendly_errors
def resume_command(
    round_id: str = typer.Argument(..., help="The round to continue."),
    data_dir: DataDir = None,
    background: Background = False,
    progress: Progress = True,
    stop_after: StopAfter = None,
) -> None:
    """Continue a failed, cancelled or interrupted round after its last finished stage."""
    from rlhf.rounds import launch_round, resume_round
    from rlhf.runtime import open_store, setup_logging

    setup_logging(progress=progress)
    settings = _settings(data_dir)
    store = open_store(settings)
    if background:
        launched = launch_round(settings, round_id=round_id, resume=True, store=store, stop_after=stop_after)
        typer.echo(f"Round {launched.round_id} resumed in the background (pid {launched.pid}).")
        return
    record = resume_round(store, round_id, progress=progress, stop_after=stop_after)
    _print_status(_status(store, record.round_id), False)


@friendly_errors
def execute_command(
    round_id: str = typer.Argument(..., help="The round whose row `launch_round` wrote."),
    data_dir: DataDir = None,
    progress: Progress = True,
    stop_after: StopAfter = None,
) -> None:
    """Run the stages of a launched round (the background process that `run -b`, `resume -b` and the
    Training page start; the launcher has already checked and marked the round running)."""
    from rlhf.rounds import execute
    from rlhf.runtime import open_store, setup_logging

    setup_logging(progress=progress)
    execute(open_store(_settings(data_dir)), round_id, progress=progress, stop_after=stop_after)


@friendly_errors
def status_command(
    round_id: str = typer.Argument(None, help="Round id (default: the newest round)."),
    data_dir: DataDir = None,
    as_json: AsJson = False,
    log_lines: int = typer.Option(0, "--log", min=0, help="Also print this many lines of the round's log."),
    all_settings: bool = typer.Option(False, "--settings", help="Also print every training setting the round "
                                      "ran with, beside the round before's."),
    watch: float = typer.Option(0.0, "--watch", min=0.0, help="While the round runs, print its stage and time "
                                "left every this many seconds (when they change); then its status."),
) -> None:
    """A round's status, stage, progress, timings, metrics and the settings changed since the round before."""
    from rlhf.errors import RoundError
    from rlhf.rounds import list_round_summaries, log_tail
    from rlhf.runtime import open_store

    store = open_store(_settings(data_dir))
    if round_id is None:
        rounds = list_round_summaries(store)
        if not rounds:
            raise RoundError("There are no rounds yet; start one with `recfeedback round run`.")
        round_id = rounds[-1]["round_id"]
    if watch:
        _watch(store, round_id, watch)
    status = _status(store, round_id, all_settings=all_settings)
    _print_status(status, as_json)
    if log_lines and status.get("folder"):
        typer.echo(log_tail(Path(status["folder"]), log_lines))


def _watch(store: Any, round_id: str, every_s: float) -> None:
    """Print the running round's stage and time left, with the time of day, whenever they change, until it
    stops running (done, failed, cancelled, or its process gone)."""
    import time
    from datetime import datetime

    from rlhf.rounds import last_duration_like, list_round_summaries, round_seconds_left, round_status

    # The like round cannot change while this one runs (one round at a time): looked up once, not per poll,
    # and each poll reads only the round's row and progress file.
    like = last_duration_like(round_id, list_round_summaries(store))
    said = None
    while (status := round_status(store, round_id))["status"] == "running":
        round_left = round_seconds_left(status["progress"], like) if like is not None else None
        line = _progress_line(status, round_left) or f"stage {status['stage']}"
        if line != said:
            typer.echo(f"[{datetime.now():%H:%M:%S}] {line}")
            said = line
        time.sleep(every_s)


@friendly_errors
def list_command(
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """All rounds, oldest first."""
    from rlhf.human_eval import human_win_rates
    from rlhf.rounds import list_round_summaries, rm_heldout_pairs, round_verdicts, settings_changed_by_round
    from rlhf.runtime import open_store

    store = open_store(_settings(data_dir))
    rounds = list_round_summaries(store)
    if as_json:
        typer.echo(json.dumps(rounds, indent=2, default=str))
        return
    if not rounds:
        typer.echo("No rounds yet.")
        return
    verdicts = round_verdicts(store)
    changed = settings_changed_by_round(rounds)
    humans = human_win_rates(store)
    for r in rounds:
        m = r["metrics"]
        acc, n_held = m.get("rm_heldout_accuracy"), rm_heldout_pairs(m)
        held = "" if n_held is None else f" ({n_held} held-out pair{'' if n_held == 1 else 's'}{_unselected(m)})"
        win, win0 = m.get("rm_win_rate"), m.get("rm_win_rate_vs_zero_shot")
        typer.echo(
            f"{r['round_id']}  {r['status']:<11} stage={r['stage'] or '-':<12} policy={r['policy_id'] or '-'}"
            + (f" (from {r['parent_policy_id']})" if r["policy_id"] and r.get("parent_policy_id") else "") + "  "
            f"rm_acc={'-' if acc is None else f'{acc:.3f}'}{held}  win={'-' if win is None else f'{win:.3f}'}  "
            f"win_vs_zero_shot={'-' if win0 is None else f'{win0:.3f}'}  "
            f"pairs={m.get('pairs_enqueued', '-')}"
            + "".join(f"\n    {label} vs zero-shot, paired: {verdict}" for label, verdict in (
                ("NDCG", verdicts.get(r["round_id"], {}).get("ndcg")),
                ("reasons grounded", verdicts.get(r["round_id"], {}).get("reasons"))) if verdict)
            + _human_line(*humans.get(r["round_id"], (None, 0)))
            + (f"\n    settings changed: {changed[r['round_id']]}" if changed[r["round_id"]] else "")
        )


def _unselected(metrics: dict[str, Any]) -> str:
    """The reward model's accuracy on the held-out pairs no model chose, where some pairs were chosen by one
    (else the two accuracies are the same figure)."""
    from rlhf.rounds import rm_heldout_pairs

    acc, n = metrics.get("rm_heldout_accuracy_unselected"), metrics.get("rm_heldout_unselected_pairs")
    if n is None or n == rm_heldout_pairs(metrics):
        return ""
    return f"; {'-' if acc is None else f'{acc:.3f}'} on the {n} no model chose"


def _human_line(estimate: Any, labels: int) -> str:
    """The round's human win rate over its parent, or nothing before any label on a pair no model chose."""
    from rlhf.human_eval import human_win_in_words

    said = human_win_in_words(estimate, labels)
    return f"\n    annotators prefer it to its parent: {said} no model chose" if said else ""


@friendly_errors
def lists_command(
    round_id: str = typer.Argument(None, help="Round id (default: the newest finished round)."),
    shoppers: int = typer.Option(3, "--shoppers", "-n", min=1, help="How many held-out shoppers to show."),
    data_dir: DataDir = None,
) -> None:
    """A round's lists beside its parent's and the zero-shot model's for the same held-out shoppers, with
    what each shopper bought later; the shoppers on whom the lists score most differently first."""
    from rlhf.annotation import COPIED_LINE_BADGE
    from rlhf.rounds import list_round_summaries
    from rlhf.runtime import open_store
    from rlhf.side_by_side import round_side_by_side

    settings = _settings(data_dir)
    store = open_store(settings)
    which = ""
    if round_id is None:
        rounds = [r for r in list_round_summaries(store) if r["status"] == "done"]
        if not rounds:
            typer.echo("No finished rounds yet.")
            return
        round_id, which = rounds[-1]["round_id"], ", the newest finished round"
    found = round_side_by_side(store, settings, round_id, limit=shoppers)
    if not found:
        typer.echo(f"Round {round_id} has no held-out lists to compare (it has not finished, or evaluated no "
                   "held-out shoppers).")
        return
    typer.echo(f"Round {round_id}{which}: its lists beside its parent's and the zero-shot model's")
    for shopper in found:
        before = len(shopper.history)
        typer.echo(f"== shopper {shopper.shopper_id} (context {shopper.context_id}): {before} item{'' if before == 1 else 's'} "
                   f"bought before, {len(shopper.bought_later)} after the cut")
        for column in shopper.columns:
            typer.echo(f"  {column.role} {column.policy_id}: NDCG {column.ndcg:.3f}, "
                       f"{'valid' if column.is_valid else 'invalid'}")
            for item in column.shown.items:
                marks = ["bought later"] if item.rank in column.bought_ranks else []
                marks += ["off-topic reason"] if item.rank in column.off_topic_ranks else []
                marks += [COPIED_LINE_BADGE] if item.rank in column.copied_ranks else []
                marks += list(item.badges)
                typer.echo(f"    {item.rank}. {item.title}" + (f"  [{'; '.join(marks)}]" if marks else "")
                           + f"  | {item.reason}")


@friendly_errors
def cancel_command(
    round_id: str = typer.Argument(None, help="The round to stop (default: the one running)."),
    data_dir: DataDir = None,
    grace: float = typer.Option(None, "--grace", min=0.0, help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop a running round (SIGTERM, then SIGKILL) and mark it cancelled; the store keeps its data as it was."""
    from rlhf.errors import RoundError
    from rlhf.rounds import cancel_round, running_round
    from rlhf.runtime import open_store

    store = open_store(_settings(data_dir))
    if round_id is None:
        running = running_round(store)
        if running is None:
            raise RoundError("No round is running. Name one to cancel: `recfeedback round cancel ROUND_ID`.")
        round_id = running.round_id
    record = cancel_round(store, round_id, grace_s=grace)
    typer.echo(f"Round {round_id} is {record.status}. `recfeedback round resume {round_id}` continues it.")


def register(app: typer.Typer) -> None:
    """Add the ``round`` command group."""
    group = typer.Typer(help="Training rounds: labels -> reward model -> PPO -> new pairs.", no_args_is_help=True)
    group.command("run")(run_command)
    group.command("resume")(resume_command)
    group.command("status")(status_command)
    group.command("list")(list_command)
    group.command("lists")(lists_command)
    group.command("cancel")(cancel_command)
    group.command("execute", hidden=True)(execute_command)
    app.add_typer(group, name="round")


def main() -> None:  # pragma: no cover - `python -m rlhf.cli.rounds`
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)
    app(args=["round", *__import__("sys").argv[1:]])


if __name__ == "__main__":  # pragma: no cover
    main()
