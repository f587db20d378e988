"""The ``recfeedback`` command line (typer).

Each area registers its commands from its own module; heavy libraries are imported inside commands
so that ``recfeedback --help`` answers at once.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="recfeedback",
    help="RecFeedback: human feedback for LLM recommenders (annotate, reward model, PPO, rounds).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define ``register(app)``; keep one per area.
_COMMAND_MODULES = (
    "rlhf.cli.core",
    "rlhf.cli.annotate",
    "rlhf.cli.data",
    "rlhf.cli.loop",
    "rlhf.cli.generate",
    "rlhf.cli.labels",
    "rlhf.cli.ppo",
    "rlhf.cli.rm",
    "rlhf.cli.policy",
    "rlhf.cli.rounds",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@app.callback()
def _warn_about_unknown_settings() -> None:
    """Say which RECFEEDBACK_* variables or settings-file keys are no setting (a typo would be ignored)."""
    from rlhf.settings import ConfigError, unknown_settings

    try:
        unknown = unknown_settings()
    except ConfigError:  # an unreadable file: the command's own settings load says so
        return
    for name in unknown:
        typer.secho(f"Warning: {name} is not a setting, so it is ignored (`recfeedback config show` lists them).",
                    fg=typer.colors.YELLOW, err=True)


def main() -> None:  # pragma: no cover - console entry point
    app()
