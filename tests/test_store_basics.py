"""The store: migrations, units of work, and sharing the file between processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from storage import Store, StoreBusyError
from storage.schema import LATEST_VERSION, current_version, migrate


def test_new_store_is_migrated_and_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    with store.transaction() as con:
        assert current_version(con) == LATEST_VERSION
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_catalog = current_database()").fetchall()}
    assert {"catalog_items", "contexts", "generations", "pairs", "labels", "assignments", "rounds"} <= tables
    assert migrate(Store(path, migrate=False)) == LATEST_VERSION
    with store.transaction() as con:
        rows = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))


def test_a_failed_unit_of_work_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO annotators (annotator_id, role) VALUES ('x', 'annotator')")
        raise RuntimeError("boom")
    with store.transaction() as con:
        assert con.execute("SELECT count(*) FROM annotators").fetchone()[0] == 0


def _writer(path: str, tag: str, n: int) -> None:
    store = Store(path)
    for i in range(n):
        with store.transaction() as con:
            con.execute("INSERT INTO annotators (annotator_id, role) VALUES (?, 'annotator')", [f"{tag}{i}"])


def test_two_processes_write_to_one_store_without_losing_a_row(tmp_path: Path) -> None:
    path = str(tmp_path / "s.duckdb")
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 60)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with Store(path).transaction() as con:
        assert con.execute("SELECT count(*) FROM annotators").fetchone()[0] == 120


def _hold(path: str, seconds: float, ready) -> None:
    import time

    import duckdb

    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()


def test_a_store_held_too_long_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "s.duckdb")
    Store(path)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, 3.0, ready))
    holder.start()
    assert ready.wait(60)
    impatient = Store(path, lock_timeout_s=0.3, migrate=False)
    with pytest.raises(StoreBusyError, match="locked by another process"), impatient.transaction():
        pass
    holder.join(timeout=30)
    with Store(path, lock_timeout_s=5).transaction() as con:  # released: works again
        assert con.execute("SELECT 1").fetchone()[0] == 1


def test_ids_sort_in_the_order_they_were_made_and_never_repeat() -> None:
    """Rows written in one transaction tie on ``created_at``; their ids must then keep creation order."""
    import threading

    from storage.ids import new_id, new_ids

    made: list[str] = []
    for _ in range(2000):  # far more than one per microsecond: the clock must step past itself
        made.append(new_id("pair"))
        made.extend(new_ids("pair", 3))
    assert new_ids("pair", 0) == []
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(i.startswith("pair_") for i in made)

    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id("lab") for _ in range(2000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = [i for out in per_thread for i in out]
    assert len(set(together)) == len(together)
    assert all(out == sorted(out) for out in per_thread)
