"""Versioned schema migrations, applied in order when a store is opened.

Each migration is a numbered list of statements; ``schema_version`` records which ones ran. Opening a
store applies the missing ones in one transaction each, so a new file and an old file end in the same
shape, and re-opening does nothing. Add a migration by appending to ``MIGRATIONS``; never edit one that
has shipped.

Labels are facts: they are never updated in place. An undo is a row in ``label_retractions`` and
"current labels" are the labels without one (see :mod:`storage.queue`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.db import Store


@dataclass(frozen=True)
class Migration:
    """Statements, then (where SQL alone cannot say it) a function of the connection, in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...]
    apply: Callable[[Any], None] | None = None


_V1 = (
    """CREATE TABLE catalog_items (
        item_id VARCHAR PRIMARY KEY,
        title VARCHAR NOT NULL,
        description VARCHAR,
        category VARCHAR,
        price DOUBLE,
        attributes JSON,
        source VARCHAR NOT NULL DEFAULT 'import',
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE shoppers (
        shopper_id VARCHAR PRIMARY KEY,
        segment VARCHAR,
        attributes JSON,
        hidden_preferences JSON,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE interactions (
        shopper_id VARCHAR NOT NULL,
        item_id VARCHAR NOT NULL,
        event VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL,
        quantity INTEGER NOT NULL DEFAULT 1,
        source VARCHAR NOT NULL DEFAULT 'import'
    )""",
    "CREATE INDEX interactions_shopper ON interactions (shopper_id)",
    """CREATE TABLE contexts (
        context_id VARCHAR PRIMARY KEY,
        shopper_id VARCHAR NOT NULL,
        as_of TIMESTAMP NOT NULL,
        history JSON NOT NULL,
        candidates JSON NOT NULL,
        retrieval VARCHAR,
        split VARCHAR NOT NULL DEFAULT 'train',
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE policies (
        policy_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL DEFAULT 'llm',
        base_model VARCHAR,
        adapter_path VARCHAR,
        parent_id VARCHAR,
        round_id VARCHAR,
        metrics JSON,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE generations (
        generation_id VARCHAR PRIMARY KEY,
        context_id VARCHAR NOT NULL,
        policy_id VARCHAR NOT NULL,
        raw_text VARCHAR NOT NULL,
        items JSON NOT NULL,
        problems JSON NOT NULL,
        is_valid BOOLEAN NOT NULL,
        sampling JSON,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        round_id VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE INDEX generations_context ON generations (context_id)",
    """CREATE TABLE pairs (
        pair_id VARCHAR PRIMARY KEY,
        context_id VARCHAR,
        gen_a VARCHAR,
        gen_b VARCHAR,
        strategy VARCHAR NOT NULL,
        priority DOUBLE NOT NULL DEFAULT 0,
        overlap_target INTEGER NOT NULL,
        status VARCHAR NOT NULL DEFAULT 'open',
        is_gold BOOLEAN NOT NULL DEFAULT false,
        selection_reason VARCHAR,
        round_id VARCHAR,
        source VARCHAR NOT NULL DEFAULT 'app',
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE gold (
        pair_id VARCHAR PRIMARY KEY,
        expected_choice VARCHAR NOT NULL,
        note VARCHAR,
        created_by VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE annotators (
        annotator_id VARCHAR PRIMARY KEY,
        display_name VARCHAR,
        role VARCHAR NOT NULL,
        password_hash VARCHAR,
        active BOOLEAN NOT NULL DEFAULT true,
        kind VARCHAR NOT NULL DEFAULT 'human',
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE assignments (
        assignment_id VARCHAR PRIMARY KEY,
        pair_id VARCHAR NOT NULL,
        annotator_id VARCHAR NOT NULL,
        left_gen VARCHAR,
        is_reshow BOOLEAN NOT NULL DEFAULT false,
        reason VARCHAR NOT NULL,
        status VARCHAR NOT NULL DEFAULT 'active',
        skip_reason VARCHAR,
        assigned_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL,
        closed_at TIMESTAMP
    )""",
    "CREATE INDEX assignments_pair ON assignments (pair_id)",
    "CREATE INDEX assignments_annotator ON assignments (annotator_id)",
    """CREATE TABLE labels (
        label_id VARCHAR PRIMARY KEY,
        pair_id VARCHAR NOT NULL,
        annotator_id VARCHAR NOT NULL,
        assignment_id VARCHAR,
        choice VARCHAR NOT NULL,
        strength INTEGER,
        left_side VARCHAR,
        item_flags JSON,
        rationale VARCHAR,
        time_ms INTEGER,
        is_reshow BOOLEAN NOT NULL DEFAULT false,
        source VARCHAR NOT NULL DEFAULT 'app',
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE INDEX labels_pair ON labels (pair_id)",
    "CREATE INDEX labels_annotator ON labels (annotator_id)",
    """CREATE TABLE label_retractions (
        label_id VARCHAR PRIMARY KEY,
        retracted_by VARCHAR NOT NULL,
        reason VARCHAR,
        retracted_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE app_texts (
        key VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        body VARCHAR NOT NULL,
        updated_by VARCHAR,
        updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE rounds (
        round_id VARCHAR PRIMARY KEY,
        status VARCHAR NOT NULL,
        stage VARCHAR,
        config JSON,
        timings JSON,
        metrics JSON,
        error VARCHAR,
        policy_id VARCHAR,
        parent_policy_id VARCHAR,
        reward_model_id VARCHAR,
        folder VARCHAR,
        pid INTEGER,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        finished_at TIMESTAMP
    )""",
    """CREATE TABLE reward_models (
        rm_id VARCHAR PRIMARY KEY,
        round_id VARCHAR,
        backbone VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        metrics JSON,
        card JSON,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE training_metrics (
        run_id VARCHAR NOT NULL,
        run_kind VARCHAR NOT NULL,
        step INTEGER NOT NULL,
        metrics JSON NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE evaluations (
        eval_id VARCHAR PRIMARY KEY,
        policy_id VARCHAR,
        round_id VARCHAR,
        dataset VARCHAR,
        metrics JSON NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
)


# (table, key column, path column) of every column that names a file.
PATH_COLUMNS = (
    ("policies", "policy_id", "adapter_path"),
    ("reward_models", "rm_id", "path"),
    ("rounds", "round_id", "folder"),
)


def _relative_paths(con: Any) -> None:
    """Rewrite the stored paths of version 1, absolute where they were written, relative to the store's folder.

    A store opened at a new place (a copy, a backup restored elsewhere) pointed at the original's files, or at
    nothing; :func:`storage.paths.relocated` says which file each old path names here.
    """
    from storage.paths import relocated, store_folder

    folder = store_folder(con)
    if folder is None:
        return
    for table, key, column in PATH_COLUMNS:
        rows = con.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL").fetchall()
        for row_id, value in rows:
            new = relocated(value, folder)
            if new != value:
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", [new, row_id])


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "file paths relative to the store's folder", (), apply=_relative_paths),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(con) -> int:
    """The highest applied migration, 0 for a new file."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_catalog = current_database()"
    ).fetchone()[0]
    if not exists:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(store: Store) -> int:
    """Apply every missing migration, each in its own transaction; return the resulting version."""
    with store.transaction() as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, description VARCHAR, "
            "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        applied = current_version(con)
    for migration in MIGRATIONS:
        if migration.version <= applied:
            continue
        with store.transaction() as con:
            # Re-check inside the transaction: another process may have migrated meanwhile.
            if current_version(con) >= migration.version:
                continue
            for statement in migration.statements:
                con.execute(statement)
            if migration.apply is not None:
                migration.apply(con)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
        applied = migration.version
    return applied
