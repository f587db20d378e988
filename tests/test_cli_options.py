"""Every number a command takes has its range: a bad one is refused before anything loads or is written.

`generate --contexts 0` used to answer "every context already has lists", `simulate --labels 0` printed a
run of zero labels with NaN latencies, and `rm train --epochs 0` would have loaded a model to train nothing.
"""

from __future__ import annotations

import inspect

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


def test_every_numeric_option_has_a_range_or_a_check():
    unchecked = []
    for path, func in _commands(app):
        hints = inspect.get_annotations(func, eval_str=True)
        for name, param in inspect.signature(func).parameters.items():
            info = param.default
            if isinstance(info, (OptionInfo, ArgumentInfo)) and hints.get(name) in NUMBERS \
                    and info.min is None and info.max is None and info.callback is None:
                unchecked.append(f"{' '.join(path)} {name}")
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
])
def test_a_value_outside_an_options_choices_or_format_is_a_usage_error(args, option, allowed, tmp_path, monkeypatch):
    """A setting's choices come from the settings' own Literal, so the option and the setting cannot drift apart;
    a day that is no date was a ValueError traceback."""
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and allowed in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "data").exists()
