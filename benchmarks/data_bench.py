"""Data-path figures: `init --demo`, large-file imports, the UCI adapter, and context building.

Prints figures; asserts nothing about speed (measure, don't assert). Run from the repository root:

    .venv/bin/python benchmarks/data_bench.py [--rows 1000000] [--uci ../shared/data/uci_online_retail]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(label: str, fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - started
    print(f"{label:<58} {seconds:8.2f} s")
    return result, seconds


def bench_init_demo(tmp: Path) -> None:
    env = dict(os.environ, RECFEEDBACK_STORE__DATA_DIR=str(tmp / "demo"))
    cli = Path(sys.executable).with_name("recfeedback")
    started = time.perf_counter()
    out = subprocess.run(
        [str(cli), "init", "--demo"], env=env, cwd=tmp, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - started
    print(f"{'recfeedback init --demo (process wall time)':<58} {seconds:8.2f} s")
    print("   " + out.stdout.splitlines()[0])


def bench_file_imports(tmp: Path, rows: int) -> None:
    from rlhf.importing import import_catalog, import_interactions
    from rlhf.settings import load_settings
    from storage import Store

    settings = load_settings(store={"data_dir": tmp / "files"})
    store = Store.from_settings(settings)
    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {
            "item_id": [f"I{k:07d}" for k in range(rows)],
            "title": [f"Stoneware mug number {k}" for k in range(rows)],
            "description": "A sturdy everyday mug.",
            "category": rng.choice(["kitchen", "decor", "garden", "toys"], size=rows),
            "price": np.round(rng.uniform(1, 200, size=rows), 2),
        }
    )
    csv = tmp / "items.csv"
    items.to_csv(csv, index=False)
    _, s = _timed(f"import-catalog CSV, {rows:,} rows", import_catalog, store, csv, settings=settings)
    print(f"   {rows / s:,.0f} rows/s")
    inter = pd.DataFrame(
        {
            "shopper_id": [f"u{k}" for k in rng.integers(0, rows // 10, size=rows)],
            "item_id": items["item_id"].to_numpy()[rng.integers(0, rows, size=rows)],
            "ts": (pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(rows), unit="s")).astype(str),
            "event": rng.choice(["view", "purchase"], size=rows),
            "quantity": rng.integers(1, 4, size=rows),
        }
    )
    path = tmp / "interactions.csv"
    inter.to_csv(path, index=False)
    _, s = _timed(
        f"import-interactions CSV, {rows:,} rows", import_interactions, store, path, settings=settings
    )
    print(f"   {rows / s:,.0f} rows/s")
    bad = items.copy()
    bad.loc[rows // 2, "price"] = -1.0
    bad["item_id"] = "X" + bad["item_id"]
    bad_csv = tmp / "bad.csv"
    bad.to_csv(bad_csv, index=False)
    from storage import ValidationError

    started = time.perf_counter()
    try:
        import_catalog(store, bad_csv, settings=settings)
    except ValidationError as exc:
        print(
            f"{f'rejecting a {rows:,}-row CSV with one bad row':<58} {time.perf_counter() - started:8.2f} s"
        )
        print(f"   {exc.problems[0]}")


def bench_uci(tmp: Path, folder: Path) -> None:
    from rlhf.contexts import build_contexts
    from rlhf.importing import import_online_retail
    from rlhf.settings import load_settings
    from storage import Store

    settings = load_settings(store={"data_dir": tmp / "uci"})
    store = Store.from_settings(settings)
    report, _ = _timed(
        "import-online-retail (UCI, 431,673 invoice lines)",
        import_online_retail,
        store,
        folder,
        settings=settings,
    )
    print("   " + report.summary())
    for strategy in ("mixed", "copurchase", "category", "popularity"):
        r, _ = _timed(
            f"contexts build --as-of 2011-09-01 --strategy {strategy}",
            build_contexts,
            store,
            settings=settings,
            as_of="2011-09-01",
            strategy=strategy,
            replace=True,
        )
        print(f"   {r.built:,} contexts, {r.too_short:,} shoppers with too little history")
    r, _ = _timed(
        "contexts build (default per-shopper cuts, mixed)",
        build_contexts,
        store,
        settings=settings,
        replace=True,
    )
    print(f"   {r.built:,} contexts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--uci", type=Path, default=ROOT.parent / "shared" / "data" / "uci_online_retail")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pandas {pd.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bench_init_demo(tmp)
        bench_file_imports(tmp, args.rows)
        if args.uci.is_dir():
            bench_uci(tmp, args.uci)
        else:
            print(f"(UCI data not found at {args.uci}; skipped)")


if __name__ == "__main__":
    main()
