"""Core commands: configuration and starting the app."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

import typer

from rlhf.cli.common import friendly_errors
from rlhf.errors import RecFeedbackError
from rlhf.settings import config_file_path, get_settings

#: The checkout (or installed tree) that holds annotate_app/ and .streamlit/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@config_app.command("show")
@friendly_errors
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of TOML-like text.")) -> None:
    """Print the effective settings (defaults, then the TOML file, then RECFEEDBACK_* variables)."""
    settings = get_settings()
    data = settings.to_toml_dict()
    source = config_file_path()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"# config file: {source or '(none; defaults + environment)'}")
    for section, values in data.items():
        typer.echo(f"\n[{section}]")
        for key, value in values.items():
            typer.echo(f"{key} = {json.dumps(value)}")


@friendly_errors
def app_command(
    port: int = typer.Option(None, min=1, max=65535, help="Port (default: settings.app.port)."),
    headless: bool = typer.Option(True, help="Do not open a browser window."),
    bootstrap: bool = typer.Option(True, "--bootstrap/--no-bootstrap",
                                   help="On a store with no pairs yet, have the policy write a first batch in "
                                        "the background (settings.demo.initial_pairs)."),
) -> None:
    """Start the Streamlit annotation app on the configured store."""
    settings = get_settings()
    port = port or settings.app.port
    _check_port_free(settings.app.host, port)  # before the first-pairs job starts for an app that cannot
    from rlhf.auth import NO_ACCOUNTS, anyone_can_log_in
    from rlhf.runtime import open_store

    store = open_store(settings)
    if not anyone_can_log_in(store):
        typer.secho(NO_ACCOUNTS, fg=typer.colors.YELLOW)
    if bootstrap:
        from rlhf.bootstrap import log_path, start_bootstrap

        pid = start_bootstrap(settings, store)
        if pid:
            typer.echo(f"The policy is writing the first {settings.demo.initial_pairs} pairs in the background "
                       f"(pid {pid}, log {log_path(settings)}); the Label page shows its progress.")
    script = PROJECT_ROOT / "annotate_app" / "Home.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        *_project_streamlit_options(Path.cwd()),
        "--server.port", str(port),
        "--server.address", settings.app.host,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
    ]
    # This process becomes Streamlit, so that a process manager's SIGTERM (or Ctrl-C) reaches the server itself:
    # a child would have kept serving after its parent was stopped. Nothing is lost: the store is closed
    # between units of work, and the first-pairs job runs in its own session.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def _project_streamlit_options(cwd: Path) -> list[str]:
    """The project's ``.streamlit/config.toml`` as ``--section.key value`` options, for an app started from
    another folder: Streamlit reads that file from the working directory only, so the app would run with the
    deploy toolbar, full error details and a file watcher. A working directory with its own file keeps it."""
    ours = PROJECT_ROOT / ".streamlit" / "config.toml"
    if (cwd / ".streamlit" / "config.toml").is_file() or not ours.is_file():
        return []
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    with ours.open("rb") as fh:
        config = tomllib.load(fh)
    return [part for section, values in config.items() for key, value in values.items()
            for part in (f"--{section}.{key}", str(value).lower() if isinstance(value, bool) else str(value))]


def _check_port_free(host: str, port: int) -> None:
    """Raise a sentence saying what to do when ``host:port`` is taken (Streamlit would only say "Port 8501 is
    not available", after a first-pairs job had started for an app that never came up)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise RecFeedbackError(f"settings.app.host {host!r} is not an address of this machine ({exc}).") from exc
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to Streamlit too
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise RecFeedbackError(f"The app cannot listen on {host}:{port} ({exc.strerror}); check "
                                       "settings.app.host and settings.app.port.") from exc
            raise RecFeedbackError(
                f"Port {port} on {host} is in use: is the app already running (`make run`, `recfeedback app`)? "
                f"Open http://{host}:{port}, or start this one on another port: `recfeedback app --port {port + 1}` "
                "(settings.app.port)."
            ) from exc


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.command("app")(app_command)
