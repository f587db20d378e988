"""Data commands: create the store, import files, build contexts, manage accounts.

Commands: ``init [--demo] [--force]``, ``import-catalog``, ``import-interactions``,
``import-online-retail``, ``contexts build``, ``users add``, ``users list``. Each is a thin layer over a
service (rlhf.importing, rlhf.demo, rlhf.contexts, rlhf.auth); heavy imports happen inside commands.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from rlhf.cli.common import friendly_errors
from rlhf.errors import RecFeedbackError
from rlhf.settings import get_settings
from rlhf.wording import counted
from storage.records import ExcludedAnnotator

contexts_app = typer.Typer(
    help="Build shopper contexts (history + candidate items) for generation.", no_args_is_help=True
)
users_app = typer.Typer(help="Manage annotator, engineer, manager and admin accounts.", no_args_is_help=True)

#: Where ``import-online-retail`` looks when no folder is given (the shared data beside the checkout).
DEFAULT_ONLINE_RETAIL_DIR = Path("../shared/data/uci_online_retail")


class StoreNotEmptyError(RecFeedbackError):
    """``init --demo`` was asked to fill a store that already holds data."""


def _stage_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False)
    started: list[str] = []

    def on_stage(name: str) -> None:
        if started:  # the previous stage is done
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    return bar, on_stage


def _open_store(*, create: bool = False):
    """The configured store; ``create``: made if the folder has none, for the commands that fill a new store
    (imports, a first account) as ``init`` does. The others refuse a folder without a store."""
    from rlhf.runtime import open_store

    return open_store(get_settings(), create=create)


@friendly_errors
def init_command(
    demo: bool = typer.Option(
        False, "--demo", help="Fill the store with the synthetic demo shop and demo accounts."
    ),
    force: bool = typer.Option(
        False, "--force", help="Move an existing store aside (kept as a .bak file) and start from scratch."
    ),
    keep: bool = typer.Option(
        False, "--keep-existing", help="With --demo: leave a store that already holds data as it is (what a "
        "second `make run` does) instead of refusing."
    ),
) -> None:
    """Create (or migrate) the store; with --demo, build the demo shop, accounts and contexts."""
    from rlhf import runtime
    from storage import Store
    from storage import catalog as catalog_repo
    from storage.schema import LATEST_VERSION

    settings = get_settings()
    path = settings.store.db_path
    if path.exists() and force:
        backup = path.with_name(f"{path.name}.bak-{datetime.now():%Y%m%d-%H%M%S}")
        shutil.move(str(path), backup)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            shutil.move(str(wal), backup.with_name(backup.name + ".wal"))
        runtime._open_store.cache_clear()
        typer.echo(f"Moved the old store to {backup}.")
    elif path.exists() and demo:
        with Store.from_settings(settings).transaction() as con:
            counts = catalog_repo.data_counts(con)
        if any(counts.values()) and keep:
            typer.echo(f"Using the existing store at {path}.")
            return
        if any(counts.values()):
            held = ", ".join(counted(n, t.replace("_", " ").removesuffix("s")) for t, n in counts.items() if n)
            raise StoreNotEmptyError(
                f"The store {path} already holds data ({held}); `init --demo` will not mix the demo into it. "
                "Use `recfeedback init --demo --force` to start over (the old file is kept as a backup), "
                "or set RECFEEDBACK_STORE__DATA_DIR to another folder."
            )
    store = Store.from_settings(settings)
    if not demo:
        typer.echo(f"Store ready at {path} (schema version {LATEST_VERSION}).")
        return

    from rlhf.demo import build_demo

    bar, on_stage = _stage_bar(5, "demo shop")
    try:
        report = build_demo(store, settings, on_stage=on_stage)
    finally:
        bar.close()
    typer.echo(
        f"Demo shop ready at {path}: {report.items} items in {report.categories} categories, {report.shoppers} "
        f"shoppers, {report.interactions:,} interactions, {report.contexts} contexts ({report.seconds:.1f} s)."
    )
    typer.echo("\nDemo accounts (demo passwords, change them before real use):")
    typer.echo(f"  {'user':<10} {'role':<10} password")
    for user, role, password in report.accounts:
        typer.echo(f"  {user:<10} {role:<10} {password}")
    typer.echo("\nStart the app with `recfeedback app` (or `make run`).")


@friendly_errors
def import_catalog_command(
    path: Annotated[Path, typer.Argument(help="CSV, TSV, Parquet or JSONL file of items.")],
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="OUR=THEIRS column mapping, repeatable, e.g. --map title=name --map item_id=sku."
        ),
    ] = None,
) -> None:
    """Import catalogue items (item_id, title, description, category, price, attributes): all rows or none."""
    from rlhf.importing import import_catalog, parse_mapping

    mapping = parse_mapping(map_)
    bar, on_stage = _stage_bar(3, f"import {path.name}")
    try:
        report = import_catalog(
            _open_store(create=True), path, mapping=mapping, settings=get_settings(), on_stage=on_stage
        )
    finally:
        bar.close()
    typer.echo(report.summary())


@friendly_errors
def import_interactions_command(
    path: Annotated[Path, typer.Argument(help="CSV, TSV, Parquet or JSONL file of interactions.")],
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="OUR=THEIRS column mapping, repeatable, e.g. --map shopper_id=customer --map ts=date.",
        ),
    ] = None,
) -> None:
    """Import interactions (shopper_id, item_id, ts, event, quantity); items must be in the catalogue."""
    from rlhf.importing import import_interactions, parse_mapping

    mapping = parse_mapping(map_)
    bar, on_stage = _stage_bar(3, f"import {path.name}")
    try:
        report = import_interactions(
            _open_store(create=True), path, mapping=mapping, settings=get_settings(), on_stage=on_stage
        )
    finally:
        bar.close()
    typer.echo(report.summary())


@friendly_errors
def import_online_retail_command(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Folder with online_retail.parquet (UCI's eight columns as Parquet) and optionally products.parquet "
            f"(default: {DEFAULT_ONLINE_RETAIL_DIR}, the developers' shared data, when it exists)."
        ),
    ] = None,
) -> None:
    """Import the UCI Online Retail data set: products, cleaned purchases and shoppers, in one transaction."""
    from rlhf.importing import import_online_retail

    if folder is None:
        if not DEFAULT_ONLINE_RETAIL_DIR.is_dir():
            raise RecFeedbackError(
                f"No folder given and {DEFAULT_ONLINE_RETAIL_DIR} does not exist here; "
                "pass the folder that holds online_retail.parquet, e.g. "
                "`recfeedback import-online-retail /path/to/uci_online_retail`."
            )
        folder = DEFAULT_ONLINE_RETAIL_DIR
    bar, on_stage = _stage_bar(3, "UCI Online Retail")
    try:
        report = import_online_retail(_open_store(create=True), folder, settings=get_settings(), on_stage=on_stage)
    finally:
        bar.close()
    typer.echo(report.summary())
    typer.echo(
        "Categories (from title keywords): "
        + ", ".join(f"{c} {n}" for c, n in sorted(report.category_counts.items(), key=lambda kv: -kv[1]))
    )


@contexts_app.command("build")
@friendly_errors
def contexts_build_command(
    as_of: str = typer.Option(
        None,
        "--as-of",
        help="One cut time for all shoppers (e.g. 2011-09-01). Default: for each shopper, "
        "midnight before their last purchase day, so what they bought next can be evaluated.",
    ),
    strategy: str = typer.Option(
        None,
        "--strategy",
        help="Candidate retrieval: mixed, copurchase, category or popularity "
        "(default: settings.contexts.retrieval).",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Build at most this many new contexts."),
    replace: bool = typer.Option(False, "--replace", help="Rebuild contexts whose id already exists."),
) -> None:
    """Build contexts: each shopper's history before a cut and K candidates they had not bought."""
    from tqdm import tqdm

    from rlhf.contexts import as_of_for, build_contexts

    cut = as_of_for(as_of) if as_of else None
    bars: list[tqdm] = []  # opened on the first progress report, so an early error prints no bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="contexts", unit="ctx"))
        bars[0].n = done
        bars[0].refresh()

    try:
        report = build_contexts(
            _open_store(),
            settings=get_settings(),
            as_of=cut,
            strategy=strategy,
            limit=limit,
            replace=replace,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    typer.echo(report.summary())


@users_app.command("add")
@friendly_errors
def users_add_command(
    username: str = typer.Argument(..., help="Login name (2-64 letters, digits or . _ - @)."),
    role: str = typer.Option(..., "--role", help="annotator, engineer, manager or admin."),
    password: str = typer.Option(
        None, "--password", help="At least 8 characters; asked for (hidden, twice) when left out."
    ),
    display_name: str = typer.Option(None, "--name", help="Name shown in the app (default: the login name)."),
) -> None:
    """Create an account (the password is stored as an argon2 hash)."""
    from rlhf.auth import create_user

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = create_user(_open_store(create=True), username, password, role, display_name=display_name)
    typer.echo(f"Created {user.role} account {user.annotator_id!r}.")


@users_app.command("list")
@friendly_errors
def users_list_command() -> None:
    """List accounts: role, kind, whether they may log in, excluded labels (by whom, when) and display name."""
    from rlhf.auth import list_users
    from rlhf.exclusion import excluded_annotators

    store = _open_store()
    users, excluded = list_users(store), excluded_annotators(store)
    if not users:
        typer.echo("No accounts yet. Create one with `recfeedback users add NAME --role admin`.")
        return
    typer.echo(f"{'user':<20} {'role':<10} {'kind':<10} {'active':<7} {'excluded labels':<40} name")
    for u in users:
        typer.echo(f"{u.annotator_id:<20} {u.role:<10} {u.kind:<10} {'yes' if u.active else 'no':<7} "
                   f"{_excluded_in_words(excluded.get(u.annotator_id)):<40} {u.display_name or ''}")


def _excluded_in_words(row: ExcludedAnnotator | None) -> str:
    return "0" if row is None else f"{row.labels} (by {row.excluded_by}, {row.excluded_at:%Y-%m-%d %H:%M} UTC)"


@users_app.command("exclude")
@friendly_errors
def users_exclude_command(
    username: str = typer.Argument(..., help="The annotator whose labels stop counting."),
    by: str = typer.Option("cli", "--by", help="Recorded as who excluded them."),
    keep_account: bool = typer.Option(False, "--keep-account", help="Leave the account active (by default an "
                                      "annotator's is deactivated, so that no new label arrives; other roles' "
                                      "accounts always stay)."),
) -> None:
    """Exclude every label of an annotator (e.g. a flagged spammer): they stop counting in agreement, training and
    exports, and their pairs re-open. Nothing is deleted; `users restore` lifts it."""
    from rlhf.exclusion import exclude_annotator

    typer.echo(exclude_annotator(_open_store(), username, by=by, deactivate=not keep_account).sentence())


@users_app.command("restore")
@friendly_errors
def users_restore_command(
    username: str = typer.Argument(..., help="The annotator whose excluded labels count again."),
    reactivate: bool = typer.Option(False, "--reactivate", help="Also reactivate the account."),
) -> None:
    """Lift an exclusion: the annotator's excluded labels count again."""
    from rlhf.exclusion import restore_annotator

    typer.echo(restore_annotator(_open_store(), username, reactivate=reactivate).sentence())


def register(app: typer.Typer) -> None:
    app.command("init")(init_command)
    app.command("import-catalog")(import_catalog_command)
    app.command("import-interactions")(import_interactions_command)
    app.command("import-online-retail")(import_online_retail_command)
    app.add_typer(contexts_app, name="contexts")
    app.add_typer(users_app, name="users")
