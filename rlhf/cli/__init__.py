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


def main() -> None:  # pragma: no cover - console entry point
    app()
