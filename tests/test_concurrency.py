"""Many annotators at once: 30 threads in one process, then 3 OS processes on one store file.

Each worker loops "next task -> submit" until the queue is empty for it and remembers every label the
service acknowledged. Afterwards: no pair has more current labels than its overlap target, no
annotator labelled a pair twice, and the stored labels are exactly the acknowledged ones (none lost,
none doubled).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def work(store, settings, annotator: str, seed: int) -> list[str]:
    """Label until nothing is left; return the acknowledged label ids."""
    from rlhf import annotation as ann

    rng = random.Random(seed)
    acknowledged: list[str] = []
    task = ann.next_task(store, annotator, settings=settings)
    while task is not None:
        choice = rng.choice(["left", "right", "tie", "both_bad"])
        label, task = ann.submit_and_next(store, annotator, task.assignment_id, choice, strength=rng.randint(1, 3),
                                          settings=settings)
        acknowledged.append(label.label_id)
    return acknowledged


def check_store(store, acknowledged: list[str], overlap: int) -> None:
    with store.transaction() as con:
        stored = [r[0] for r in con.execute("SELECT label_id FROM labels").fetchall()]
        per_pair = con.execute("SELECT pair_id, count(*) FROM labels GROUP BY pair_id").fetchall()
        per_annotator_pair = con.execute(
            "SELECT max(n) FROM (SELECT count(*) n FROM labels GROUP BY annotator_id, pair_id)"
        ).fetchone()[0]
        n_pairs = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    assert len(acknowledged) == len(set(acknowledged))
    assert Counter(stored) == Counter(acknowledged)  # every acknowledged label stored exactly once
    assert max(n for _, n in per_pair) <= overlap
    assert per_annotator_pair == 1
    assert len(stored) == n_pairs * overlap  # and the queue was drained completely


def test_thirty_threads_never_exceed_overlap(tmp_path):
    from seed import seed_store

    from rlhf.settings import load_settings
    from storage import Store

    settings = load_settings(store={"data_dir": tmp_path / "data"}, queue={"gold_rate": 0.0, "reshow_rate": 0.0})
    store = Store.from_settings(settings)
    seed_store(store, n_pairs=20, overlap_target=3)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(30)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(store, settings, f"t{i:02d}", i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    acknowledged = [x for ids in results.values() for x in ids]
    check_store(store, acknowledged, overlap=3)


def test_three_processes_share_one_store(tmp_path):
    from seed import seed_store

    from storage import Store

    data = tmp_path / "data"
    store = Store(data / "recfeedback.duckdb")
    seed_store(store, n_pairs=12, overlap_target=2)
    procs = []
    for p in range(3):
        out = tmp_path / f"acks{p}.json"
        procs.append((out, subprocess.Popen(
            [sys.executable, __file__, str(data), str(p), str(out)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )))
    acknowledged: list[str] = []
    for out, proc in procs:
        log, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, log
        acknowledged += json.loads(out.read_text())
    check_store(store, acknowledged, overlap=2)


def _worker_main(data_dir: str, index: str, out: str) -> None:
    """One OS process: 3 threads labelling against the shared store."""
    from rlhf.settings import load_settings
    from storage import Store

    settings = load_settings(store={"data_dir": data_dir, "lock_timeout_s": 60},
                             queue={"gold_rate": 0.0, "reshow_rate": 0.0})
    store = Store.from_settings(settings, migrate=False)
    acks: list[str] = []
    lock = threading.Lock()

    def run(j: int) -> None:
        ids = work(store, settings, f"p{index}t{j}", int(index) * 10 + j)
        with lock:
            acks.extend(ids)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(acks))


if __name__ == "__main__":
    _worker_main(*sys.argv[1:4])
