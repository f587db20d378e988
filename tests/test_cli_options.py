"""Every number a command takes has its range: a bad one is refused before anything loads or is written.

`generate --contexts 0` used to answer "every context already has lists", `simulate --labels 0` printed a
run of zero labels with NaN latencies, and `rm train --epochs 0` would have loaded a model to train nothing.
"""

from __future__ import annotations

import inspect
import os

import pytest
import typer
from typer.models import ArgumentInfo, OptionInfo
from typer.testing import CliRunner

from rlhf.cli import app

NUMBERS = (int, float, int | None, float | None)


def _commands(group: typer.Typer, path: tuple[str, ...] = ()):
    for command in group.registered_commands:
        yield (*path, command.name or command.callback.__name__), command.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*path, sub.name))


def _parameters(func):
    """(name, OptionInfo/ArgumentInfo, type) of each command parameter, given as a default or in Annotated."""
    hints = inspect.get_annotations(func, eval_str=True)
    for name, param in inspect.signature(func).parameters.items():
        hint = hints.get(name)
        info = param.default
        if not isinstance(info, (OptionInfo, ArgumentInfo)):
            info = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, (OptionInfo, ArgumentInfo))),
                        None)
            hint = getattr(hint, "__origin__", hint) if info is not None else hint
        if info is not None:
            yield name, info, hint


def test_every_option_and_argument_says_what_it_is_for():
    """`round list --help` showed --data-dir and --json with no word about them."""
    silent = [f"{' '.join(path)} {name}" for path, func in _commands(app)
              for name, info, _ in _parameters(func) if not info.help]
    assert not silent, f"options without help: {silent}"


def test_every_numeric_option_has_a_range_or_a_check():
    unchecked = [f"{' '.join(path)} {name}" for path, func in _commands(app)
                 for name, info, hint in _parameters(func)
                 if hint in NUMBERS and info.min is None and info.max is None and info.callback is None]
    assert not unchecked, f"numeric options without min/max or a callback: {unchecked}"


@pytest.mark.parametrize("args, option", [
    (["generate", "--contexts", "0"], "--contexts"),
    (["simulate", "--labels", "0"], "--labels"),
    (["rm", "train", "--epochs", "0"], "--epochs"),
    (["rm", "train", "--learning-rate", "-0.1"], "--learning-rate"),
    (["app", "--port", "70000"], "--port"),
    (["generate", "--temperature", "-1"], "--temperature"),
])
def test_a_number_out_of_range_is_a_usage_error(args, option, tmp_path, monkeypatch):
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "data").exists()  # refused before the store was opened


@pytest.mark.parametrize("args, option, allowed", [
    (["rm", "train", "--method", "bayes"], "--method", "'auto', 'lora', 'probe'"),
    (["ppo", "--algo", "dpo"], "--algo", "'ppo', 'grpo', 'rloo'"),
    (["agreement", "report", "--since", "2024-13-45"], "--since", "does not match the formats '%Y-%m-%d'"),
    (["pairs", "make", "--baseline", "copurchase"], "--baseline", "same_policy pairs have none"),  # was ignored
])
def test_a_value_outside_an_options_choices_or_format_is_a_usage_error(args, option, allowed, tmp_path, monkeypatch):
    """A setting's choices come from the settings' own Literal, so the option and the setting cannot drift apart;
    a day that is no date was a ValueError traceback."""
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and allowed in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "data").exists()


def test_no_progress_also_quiets_the_libraries_bars():
    """`pairs bootstrap --no-progress` still printed transformers' "Loading weights" bars into its log."""
    import subprocess
    import sys

    code = ("from rlhf.runtime import setup_logging; setup_logging(progress={}); "
            "import transformers.utils.logging as t; print(t.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    seen = [subprocess.run([sys.executable, "-c", code.format(flag)], capture_output=True, text=True, env=env,
                           check=True).stdout.strip() for flag in (False, True)]
    assert seen == ["False", "True"]


def test_a_path_the_system_refuses_is_a_sentence_not_a_traceback(tmp_path, monkeypatch):
    """`export --out labels.parquet/x.jsonl` (a parent that is a file) ended in a FileExistsError traceback."""
    from storage import Store

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    Store(tmp_path / "data" / "recfeedback.duckdb")
    (tmp_path / "labels.parquet").write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "labels.parquet" / "x.jsonl")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("Error: ") and str(tmp_path / "labels.parquet") in result.output


def test_a_reader_that_goes_away_ends_a_command_quietly(capsys):
    """`recfeedback config show | head -1` ended with "Error: [Errno 32] Broken pipe" on stderr."""
    import typer

    from rlhf.cli.common import friendly_errors

    @friendly_errors
    def command() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(typer.Exit) as ended:
        command()
    assert ended.value.exit_code == 141 and capsys.readouterr().err == ""
