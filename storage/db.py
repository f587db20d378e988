"""Opening the DuckDB store for one unit of work at a time.

DuckDB lets one process hold a database file; a second process is refused while it is open. The app
and a training round must share the store, so no process keeps the file open longer than one unit of
work: :meth:`Store.transaction` attaches the file, runs one transaction (all or nothing), and detaches
it. When another process holds the file we back off and retry for a bounded time, then raise
:class:`StoreBusyError`. Inside one process, units of work are serialised by a lock, which also makes
the queue's read-then-write decisions safe under concurrent Streamlit sessions.

Why ATTACH rather than ``duckdb.connect`` per unit: creating a DuckDB instance costs ~12 ms here, while
attaching a file to a long-lived in-memory instance costs under 1 ms and detaching releases the file
lock just the same (measured in benchmarks/store_bench.py's notes).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from storage.errors import StoreBusyError, StoreError

log = logging.getLogger(__name__)

_LOCK_MESSAGES = ("could not set lock", "conflicting lock", "database is locked", "resource temporarily")
_CONFLICT_MESSAGES = ("conflict", "transactioncontext error")

# One lock per store path per process: DuckDB's transactions are optimistic, so concurrent writers in
# one process would abort each other; serialising them is simpler and fast enough (units are short).
_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()
_host: duckdb.DuckDBPyConnection | None = None


def _lock_for(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.RLock())


def _host_connection() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB instance that store files are attached to (a cached resource)."""
    global _host
    with _process_locks_guard:
        if _host is None:
            _host = duckdb.connect(":memory:")
        return _host


class Store:
    """A DuckDB file used in short units of work, safe to share between threads and processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 10.0,
        retry_initial_ms: float = 2.0,
        retry_max_ms: float = 50.0,
        migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self._alias = "store_" + hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:12]
        self.lock_timeout_s = lock_timeout_s
        self.retry_initial_ms = retry_initial_ms
        self.retry_max_ms = retry_max_ms
        self._lock = _lock_for(self.path) if self.path.parent.exists() else None
        if migrate:
            from storage.schema import migrate as _migrate

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_for(self.path)
            _migrate(self)

    @property
    def folder(self) -> Path:
        """The data folder: the store file and the files its rows point at (rounds, models)."""
        return self.path.parent

    @classmethod
    def from_settings(cls, settings: Any, *, migrate: bool = True) -> Store:
        """A store configured from :class:`rlhf.settings.Settings` (duck-typed to avoid a cycle)."""
        s = settings.store
        return cls(
            s.db_path,
            lock_timeout_s=s.lock_timeout_s,
            retry_initial_ms=s.lock_retry_initial_ms,
            retry_max_ms=s.lock_retry_max_ms,
            migrate=migrate,
        )

    def _process_lock(self) -> threading.RLock:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_for(self.path)
        return self._lock

    def _attach(self) -> duckdb.DuckDBPyConnection:
        """Attach the file, retrying with jittered back-off while another process holds it.

        Each thread works on its own cursor of the host instance; the process lock keeps one unit of
        work at a time per store.
        """
        deadline = time.monotonic() + self.lock_timeout_s
        delay = self.retry_initial_ms / 1000.0
        attempts = 0
        con = _host_connection().cursor()
        escaped = str(self.path).replace("'", "''")
        while True:
            attempts += 1
            try:
                con.execute(f"ATTACH '{escaped}' AS {self._alias}")
                con.execute(f"USE {self._alias}")
                return con
            except duckdb.IOException as exc:
                message = str(exc).lower()
                if not any(m in message for m in _LOCK_MESSAGES):
                    con.close()
                    raise StoreError(f"Cannot open the store at {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    con.close()
                    raise StoreBusyError(
                        f"The store {self.path} stayed locked by another process for "
                        f"{self.lock_timeout_s:.0f} s ({attempts} attempts). Is a long job holding it?"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.retry_max_ms / 1000.0)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One unit of work: attach, BEGIN, yield the connection, COMMIT (or ROLLBACK), detach.

        Everything done through the yielded connection is one transaction: either all of it is stored
        or, if the block raises, none of it.
        """
        with self._process_lock():
            con = self._attach()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            except duckdb.TransactionException as exc:
                raise StoreError(f"The store refused a transaction: {exc}") from exc
            finally:
                try:
                    con.execute("USE memory")
                    con.execute(f"DETACH {self._alias}")
                finally:
                    con.close()
