"""File paths kept relative to a store's folder, so that a copied or moved store still finds its rounds, reward
models and adapters.

The store's folder (the data folder) holds the DuckDB file and the files its rows point at. A path inside it is
written relative (``rounds/round_…``); one outside it (a PPO run written elsewhere with ``--output``) stays
absolute. Records carry absolute paths both ways, so no caller sees the difference. A round's own files (its
stage markers, ``round.json``) follow the same rule, with the round's data folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any


def relative_within(path: str | Path | None, folder: str | Path) -> str | None:
    """``path`` as it should be written down: relative to ``folder`` when inside it, else absolute."""
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    base = Path(folder).expanduser().resolve()
    if resolved.is_relative_to(base):
        return resolved.relative_to(base).as_posix()
    return str(resolved)


def absolute_within(value: str | None, folder: str | Path) -> str | None:
    """The absolute path a written ``value`` means (a relative value is inside ``folder``)."""
    if value is None or Path(value).is_absolute():
        return value
    return str(Path(folder).expanduser().resolve() / PurePosixPath(value))


def store_folder(con: Any) -> Path | None:
    """The folder of the store file the connection is using, or None for an in-memory database."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return Path(row[0]).resolve().parent if row and row[0] else None


def to_stored(con: Any, path: str | None) -> str | None:
    """The form of ``path`` to write to the store: relative to its folder when inside it."""
    folder = store_folder(con)
    return relative_within(path, folder) if folder is not None and path is not None else path


def from_stored(folder: Path | None, value: str | None) -> str | None:
    """The absolute path a stored value means, for the store in ``folder`` (:func:`store_folder`, asked once
    per query by the repositories, not once per row)."""
    return absolute_within(value, folder) if folder is not None else value


def relocated(value: str, folder: Path) -> str:
    """How a path written before paths were stored relative should read now, for the store in ``folder``.

    A path inside ``folder`` becomes relative. One outside it becomes the longest tail of it, of at least two
    parts (``rounds/<id>``, ``reward_models/<id>``), that exists in ``folder``: the store was copied or moved
    with its files, and the original, if it is still there, is another store's. A path with no such tail stays
    as it is (a PPO run written elsewhere with ``--output``); if it is gone, the command that needs it says so.
    """
    path = Path(value)
    if not path.is_absolute():
        # Written relative to the working folder of the process that wrote it (a relative data_dir): only its
        # tails can be placed.
        path = Path("/") / path
    if path.is_relative_to(folder):
        return path.relative_to(folder).as_posix()
    parts = path.parts[1:]
    for start in range(len(parts) - 1):
        tail = Path(*parts[start:])
        if (folder / tail).exists():
            return tail.as_posix()
    return value
