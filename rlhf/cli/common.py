"""Shared CLI plumbing: turning known errors into one clear sentence and a non-zero exit."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from rlhf.errors import RecFeedbackError
from rlhf.settings import ConfigError
from storage.errors import StoreError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("recfeedback")


def friendly_errors(func: F) -> F:
    """Print known failures as a sentence (details in the log) and exit 1 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError as exc:
            # The reader went away (`| head`): as other Unix tools do, stop without a word. Python would
            # otherwise complain again when it flushes stdout on exit.
            with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout may be no file (a test's)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=141) from exc
        except (RecFeedbackError, StoreError, ConfigError, OSError) as exc:
            # OSError: a path that is a folder, a parent that is a file, a full disk, no permission. Its own
            # sentence names the path ("[Errno 21] Is a directory: 'ro'"), which beats a traceback.
            log.debug("command failed", exc_info=True)
            typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from exc

    return wrapper  # type: ignore[return-value]


def above_zero(value: float | None) -> float | None:
    """Typer callback for a float option that, when given, must be above 0 (typer's ranges are closed)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above 0.")
    return value
