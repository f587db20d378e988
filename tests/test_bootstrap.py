"""A new store's first pairs: written by the policy in chunks, with progress the Label page can show."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from seed import seed_contexts

from rlhf import bootstrap


def _small(settings, **demo):
    return settings.model_copy(update={
        "generation": settings.generation.model_copy(
            update={"list_length": 2, "max_new_tokens": 32, "max_reason_tokens": 5}),
        "demo": settings.demo.model_copy(update=demo),
    })


def test_first_pairs_arrive_chunk_by_chunk_with_progress(store, settings, policy_tokenizer, tiny_policy):
    from storage.generations import list_pairs

    seed_contexts(store, n_contexts=4)  # 3 train contexts
    settings = _small(settings, initial_pairs=3, initial_chunk_contexts=2)
    assert bootstrap.queue_is_unstarted(store)
    seen: list[tuple[int, int, int]] = []

    def on_chunk(status):
        on_disk = bootstrap.read_status(settings)
        seen.append((on_disk.contexts_done, on_disk.pairs, len(_pairs(store))))

    status = bootstrap.run_bootstrap(store, settings, model=tiny_policy, tokenizer=policy_tokenizer, progress=False,
                                     on_chunk=on_chunk)
    assert status.state == "done", status.message
    # Two chunks (2 + 1 contexts); each chunk's pairs were in the queue before the next chunk started.
    assert [s[0] for s in seen] == [2, 3]
    assert all(done == pairs == queued for done, pairs, queued in seen)
    with store.transaction() as con:
        pairs = list_pairs(con)
    assert len(pairs) == 3 and len({p.context_id for p in pairs}) == 3
    final = bootstrap.read_status(settings)
    assert final.state == "done" and final.pairs == 3 and final.fraction == 1.0
    # A store with pairs is not bootstrapped again.
    assert not bootstrap.queue_is_unstarted(store)
    assert bootstrap.start_bootstrap(settings, store) is None


def _pairs(store):
    from storage.generations import list_pairs

    with store.transaction() as con:
        return list_pairs(con)


def test_a_failure_is_recorded_with_its_sentence(store, settings, policy_tokenizer):
    seed_contexts(store)
    settings = _small(settings, initial_pairs=2)

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("the model file is damaged")

    status = bootstrap.run_bootstrap(store, settings, model=Broken(), tokenizer=policy_tokenizer, progress=False)
    assert status.state == "failed" and "damaged" in status.message
    assert bootstrap.read_status(settings).state == "failed"
    assert _pairs(store) == []


def test_a_job_whose_process_died_reads_as_failed(settings):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = bootstrap.status_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "running", "pid": dead.pid, "contexts_total": 4}))
    status = bootstrap.read_status(settings)
    assert status.state == "failed" and str(dead.pid) in status.message
    path.write_text("{not json")
    assert bootstrap.read_status(settings).state == "idle"


def test_nothing_starts_for_an_empty_store_or_when_turned_off(store, settings):
    assert not bootstrap.queue_is_unstarted(store)  # no contexts at all
    assert bootstrap.start_bootstrap(settings, store) is None
    seed_contexts(store)
    off = _small(settings, initial_pairs=0)
    assert bootstrap.start_bootstrap(off, store) is None
    assert not bootstrap.status_path(settings).exists()


def test_the_app_starts_the_job_as_a_detached_process_that_fills_the_queue(tmp_path, monkeypatch, policy_tokenizer,
                                                                          tiny_policy):
    """The real spawn path: `recfeedback app`'s call, a child process, the status file, the pairs."""
    import time

    from rlhf.settings import load_settings
    from storage import Store

    model_dir = tmp_path / "tiny_policy"
    tiny_policy.save_pretrained(model_dir)
    policy_tokenizer.save_pretrained(model_dir)
    data_dir = tmp_path / "data"
    for key, value in {"STORE__DATA_DIR": data_dir, "MODEL__POLICY": model_dir, "MODEL__DEVICE": "cpu",
                       "GENERATION__LIST_LENGTH": 2, "GENERATION__MAX_NEW_TOKENS": 32,
                       "GENERATION__MAX_REASON_TOKENS": 5, "DEMO__INITIAL_PAIRS": 2}.items():
        monkeypatch.setenv(f"RECFEEDBACK_{key}", str(value))
    settings = load_settings()
    store = Store.from_settings(settings)
    seed_contexts(store, n_contexts=4)
    pid = bootstrap.start_bootstrap(settings, store)
    assert pid
    assert bootstrap.start_bootstrap(settings, store) is None  # one job at a time
    deadline = time.monotonic() + 120
    while bootstrap.read_status(settings).state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    status = bootstrap.read_status(settings)
    assert status.state == "done", (status.message, bootstrap.log_path(settings).read_text()[-2000:])
    assert status.pid == pid and status.pairs == 2 and len(_pairs(store)) == 2


def test_apps_started_together_start_one_job(settings, store, monkeypatch):
    """Two `recfeedback app` on one data folder at the same moment: one first-pairs job, not two."""
    import os
    import threading
    import time

    from rlhf import runtime

    def slow_check(_store):  # widens the window between "no job yet" and "job recorded"
        time.sleep(0.2)
        return True

    spawned: list[int] = []
    monkeypatch.setattr(bootstrap, "queue_is_unstarted", slow_check)
    alive = os.getpid()  # a live pid, so that a started job reads as running
    monkeypatch.setattr(runtime, "spawn_detached", lambda *a, **k: spawned.append(1) or alive)
    results: list[int | None] = []
    threads = [threading.Thread(target=lambda: results.append(bootstrap.start_bootstrap(settings, store)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [alive, None, None, None] and len(spawned) == 1
    assert bootstrap.read_status(settings).pid == alive


def test_a_job_that_cannot_start_says_so_at_once(settings, store, monkeypatch):
    from rlhf import runtime

    def no_python(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/gone/python")

    seed_contexts(store)
    monkeypatch.setattr(runtime, "spawn_detached", no_python)
    with pytest.raises(FileNotFoundError):
        bootstrap.start_bootstrap(settings, store)
    status = bootstrap.read_status(settings)
    assert status.state == "failed" and "could not start" in status.message and "/gone/python" in status.message


def test_a_detached_process_that_ends_leaves_no_zombie_behind(tmp_path):
    """The first-pairs job stayed `<defunct>` under the app until the app exited: nobody collected its status."""
    from rlhf.runtime import spawn_detached

    pid = spawn_detached(["-c", "pass"], tmp_path / "job.log")
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), Path(f"/proc/{pid}/status").read_text()[:200]
