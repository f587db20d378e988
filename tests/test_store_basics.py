"""The store: migrations, units of work, and sharing the file between processes."""

from __future__ import annotations

import multiprocessing as mp
import shutil
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


def _files(folder: Path, *relative: str) -> None:
    for name in relative:
        (folder / name).mkdir(parents=True)
        (folder / name / "weights").write_text("w")


def test_paths_are_stored_relative_so_a_copied_store_reads_its_own_files(tmp_path: Path) -> None:
    from storage.generations import get_policy, upsert_policy
    from storage.records import Policy, RewardModelRecord, RoundRecord
    from storage.reward_models import get_reward_model, insert_reward_model
    from storage.rounds import get_round, insert_round

    elsewhere = tmp_path / "elsewhere" / "adapter"
    _files(tmp_path, "elsewhere/adapter")
    old = tmp_path / "old"
    _files(old, "rounds/round_1/ppo/adapter", "reward_models/rm_1")
    store = Store(old / "s.duckdb")
    with store.transaction() as con:
        insert_round(con, RoundRecord(round_id="round_1", status="done", folder=str(old / "rounds" / "round_1")))
        upsert_policy(con, Policy("policy_1", adapter_path=str(old / "rounds/round_1/ppo/adapter")))
        upsert_policy(con, Policy("policy_2", adapter_path=str(elsewhere)))
        insert_reward_model(con, RewardModelRecord("rm_1", "policy", str(old / "reward_models" / "rm_1")))
        stored = dict(con.execute("SELECT policy_id, adapter_path FROM policies").fetchall())
    assert stored == {"policy_1": "rounds/round_1/ppo/adapter", "policy_2": str(elsewhere)}

    new = tmp_path / "new"
    shutil.copytree(old, new)
    with Store(new / "s.duckdb").transaction() as con:
        assert get_round(con, "round_1").folder == str(new / "rounds" / "round_1")
        assert get_policy(con, "policy_1").adapter_path == str(new / "rounds/round_1/ppo/adapter")
        assert get_policy(con, "policy_2").adapter_path == str(elsewhere)  # outside the folder: as it was
        assert get_reward_model(con, "rm_1").path == str(new / "reward_models" / "rm_1")


def test_opening_a_store_written_with_absolute_paths_points_them_at_its_own_files(tmp_path: Path, monkeypatch) -> None:
    """A store of schema 1 (absolute paths) copied with its files, the original still in place: the copy's rows
    must name the copy's files, the original's its own; a path outside the store stays; a relative one written
    from the data folder's parent finds its tail."""
    from storage import schema
    from storage.generations import get_policy
    from storage.reward_models import get_reward_model
    from storage.rounds import get_round

    elsewhere = tmp_path / "elsewhere" / "adapter"
    _files(tmp_path, "elsewhere/adapter")
    old = tmp_path / "old"
    _files(old, "rounds/round_1/ppo/adapter", "reward_models/rm_1", "ppo/run_1/adapter")
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        v1 = Store(old / "s.duckdb")
    with v1.transaction() as con:
        assert current_version(con) == 1
        con.execute("INSERT INTO rounds (round_id, status, folder) VALUES ('round_1', 'done', ?)",
                    [str(old / "rounds" / "round_1")])
        con.executemany("INSERT INTO policies (policy_id, kind, adapter_path) VALUES (?, 'llm', ?)",
                        [("policy_1", str(old / "rounds/round_1/ppo/adapter")), ("policy_2", str(elsewhere)),
                         ("policy_3", "old/ppo/run_1/adapter"), ("policy_4", str(old / "gone" / "adapter"))])
        con.execute("INSERT INTO reward_models (rm_id, backbone, path) VALUES ('rm_1', 'policy', ?)",
                    [str(old / "reward_models" / "rm_1")])
    new = tmp_path / "new"
    shutil.copytree(old, new)

    for folder in (new, old):
        with Store(folder / "s.duckdb").transaction() as con:
            assert current_version(con) == LATEST_VERSION
            assert get_round(con, "round_1").folder == str(folder / "rounds" / "round_1")
            assert get_policy(con, "policy_1").adapter_path == str(folder / "rounds/round_1/ppo/adapter")
            assert get_policy(con, "policy_2").adapter_path == str(elsewhere)
            assert get_policy(con, "policy_3").adapter_path == str(folder / "ppo/run_1/adapter")
            assert get_reward_model(con, "rm_1").path == str(folder / "reward_models" / "rm_1")
            # A path that names no file anywhere still means what it meant; the command that needs it says it is
            # missing.
            assert get_policy(con, "policy_4").adapter_path == str(old / "gone" / "adapter")
