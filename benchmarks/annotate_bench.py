"""Annotation benchmark (issue 4).

1. Service layer: 20 simulated annotators (threads) label at once through
   :func:`rlhf.annotation.submit_and_next`; p50/p95 of one submit-and-next. Each annotator "thinks"
   between labels (exponential, mean ``--think`` seconds; humans take 10-60 s per pairwise item, so
   the default 2 s is a much heavier load than reality). A second run with no think time at all shows
   the saturation throughput. Goal: p95 <= 50 ms.
2. Real browser: headless Chromium against ``streamlit run annotate_app/Home.py``; time from clicking
   Submit to the next pair being visible, p50 over 20 labels. Goal: p50 <= 700 ms.

    .venv/bin/python benchmarks/annotate_bench.py [--think 2.0] [--labels-per-annotator 15] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def service_run(n_annotators: int, per_annotator: int, think_s: float, seed: int = 0) -> tuple[list[float], float]:
    from seed import seed_store

    from rlhf import annotation as ann
    from rlhf.settings import load_settings
    from storage import Store

    work = Path(tempfile.mkdtemp(prefix="annotate_bench_"))
    try:
        settings = load_settings(store={"data_dir": work / "data"})
        store = Store.from_settings(settings)
        seed_store(store, n_pairs=max(200, n_annotators * per_annotator // 2), n_gold=20, overlap_target=3)
        times: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(n_annotators)

        def annotator(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            who = f"sim{i:02d}"
            task = ann.next_task(store, who, settings=settings)
            barrier.wait()
            for _ in range(per_annotator):
                if task is None:
                    return
                if think_s > 0:
                    time.sleep(rng.expovariate(1 / think_s))
                t0 = time.perf_counter()
                _label, task = ann.submit_and_next(store, who, task.assignment_id,
                                                   rng.choice(["left", "right", "tie", "both_bad"]),
                                                   strength=rng.randint(1, 3), settings=settings)
                with lock:
                    times.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        threads = [threading.Thread(target=annotator, args=(i,)) for i in range(n_annotators)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return times, time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)


def browser_run(n_labels: int) -> list[float]:
    from browser_support import AppServer, current_task, launch_chromium, login, wait_for_task_change
    from seed import PASSWORD, seed_store

    from storage import Store

    work = Path(tempfile.mkdtemp(prefix="annotate_bench_browser_"))
    try:
        data = work / "data"
        seed_store(Store(data / "recfeedback.duckdb"), n_pairs=n_labels + 10, users={"bench": "annotator"},
                   overlap_target=1)
        times: list[float] = []
        with AppServer(data) as server, launch_chromium() as browser:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            login(page, server.url, "bench", PASSWORD)
            task = current_task(page)
            for i in range(n_labels + 2):
                page.locator(".st-key-label_choice").get_by_text(("A", "B", "Tie")[i % 3], exact=True).click()
                submit = page.locator(".st-key-label_submit button")
                t0 = time.perf_counter()
                submit.click()
                task = wait_for_task_change(page, task)
                page.locator(".st-key-label_submit button").wait_for(state="visible")
                if i >= 2:  # the first two warm up caches
                    times.append((time.perf_counter() - t0) * 1000)
        return times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--labels-per-annotator", type=int, default=15)
    parser.add_argument("--think", type=float, default=2.0, help="mean think time between labels (s)")
    parser.add_argument("--browser-labels", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start")
    times, wall = service_run(args.annotators, args.labels_per_annotator, args.think)
    print(f"service, {args.annotators} annotators, think mean {args.think:.1f} s: n={len(times)} "
          f"p50={percentile(times, 50):.1f} ms p95={percentile(times, 95):.1f} ms max={max(times):.1f} ms "
          f"({len(times) / wall:.1f} labels/s)  (goal p95 <= 50 ms)")
    times, wall = service_run(args.annotators, 10, 0.0, seed=1)
    print(f"service, {args.annotators} annotators, no think time (saturation): n={len(times)} "
          f"p50={percentile(times, 50):.1f} ms p95={percentile(times, 95):.1f} ms "
          f"throughput {len(times) / wall:.1f} labels/s")
    if not args.no_browser:
        btimes = browser_run(args.browser_labels)
        print(f"browser, submit -> next pair visible: n={len(btimes)} p50={percentile(btimes, 50):.0f} ms "
              f"p95={percentile(btimes, 95):.0f} ms  (goal p50 <= 700 ms)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at end")


if __name__ == "__main__":
    main()
