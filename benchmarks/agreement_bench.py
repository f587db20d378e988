"""Agreement dashboard on UKPConvArg1: import 84,445 crowd labels, time the dashboard, score aggregation.

    .venv/bin/python benchmarks/agreement_bench.py [--data ../shared/data/ukpconvarg1] [--repeats 3]
                                                   [--mace-restarts 3] [--write benchmarks/results/agreement.md]

Steps (all printed):
1. Adapter: UKPConvArg1's annotations -> one label file (pair id = topic/pair_id, annotator = worker_id,
   a1 -> A, a2 -> B, equal -> tie, gold = gold_label, created_at = submit_time, seconds = submit - accept).
2. ``recfeedback import-labels`` on that file into a fresh store (a subprocess, as a user would run it).
3. The dashboard's computations on the whole store (``rlhf.dashboard.load_inputs`` + ``compute_dashboard``
   with the default settings: 500 bootstrap resamples, majority vote and Dawid-Skene), best and median
   of ``--repeats`` runs. Goal: <= 5 s.
4. Krippendorff's alpha and Fleiss' kappa, and the accuracy against the gold labels of majority vote,
   Dawid-Skene and MACE (MACE is not in the dashboard by default: it is timed separately).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ukpconvarg1"


def ukp_label_file(data: Path, out: Path) -> tuple[Path, int]:
    """The adapter: UKPConvArg1 annotations + gold labels as one label file for import-labels."""
    ann = pd.read_parquet(data / "annotations.parquet")
    pairs = pd.read_parquet(data / "pairs.parquet", columns=["topic", "pair_id", "gold_label"])
    ann = ann.merge(pairs, on=["topic", "pair_id"], how="left")
    table = pd.DataFrame({
        "pair": ann["topic"] + "/" + ann["pair_id"],
        "worker_id": ann["worker_id"],
        "value": ann["value"],
        "gold_label": ann["gold_label"],
        "submit_time": ann["submit_time"],
        "seconds": (ann["submit_time"] - ann["accept_time"]).dt.total_seconds(),
        "reason": ann["reason"],
    })
    path = out / "ukpconvarg1_labels.parquet"
    table.to_parquet(path, index=False)
    return path, len(table)


IMPORT_ARGS = [
    "--map", "pair_id=pair", "--map", "annotator_id=worker_id", "--map", "choice=value", "--map", "gold=gold_label",
    "--map", "created_at=submit_time", "--map", "seconds=seconds", "--map", "rationale=reason",
    "--choice", "a1=A", "--choice", "a2=B", "--choice", "equal=tie",
]


def hardware() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{cpu}; {os.cpu_count()} cores visible; no GPU used; Python {platform.python_version()}; "
            f"load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (shared machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mace-restarts", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="Also write the report to this markdown file.")
    args = parser.parse_args()

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"hardware: {hardware()}")
    work = Path(tempfile.mkdtemp(prefix="agreement_bench_"))
    try:
        _run(args, say, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ~21 MB of store and label file per run
    if args.write:
        _write_report(args.write, "\n".join(lines))
        print(f"\nwrote {args.write}")


def _write_report(path: Path, body: str) -> None:
    """Write this run as the file's recorded run; notes written below an earlier run's block are kept."""
    notes = ""
    if path.exists():
        parts = path.read_text().split("```\n")  # header, the recorded block, what follows it
        notes = "```\n".join(parts[2:]) if len(parts) >= 3 else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Agreement dashboard benchmark (UKPConvArg1)\n\n"
        f"Command: `.venv/bin/python benchmarks/agreement_bench.py --write {path}`\n\n"
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n```\n{body}\n```\n{notes}"
    )


def _run(args: argparse.Namespace, say: Callable[..., None], work: Path) -> None:
    """Import the corpus into a store under ``work``, time the dashboard on it, and compare aggregations."""
    data_dir = work / "data"

    t = time.perf_counter()
    label_file, n_rows = ukp_label_file(args.data, work)
    say(f"adapter: {n_rows:,} UKPConvArg1 labels -> {label_file.name} in {time.perf_counter() - t:.2f} s")

    env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from rlhf.cli import app; app()", "import-labels", str(label_file), *IMPORT_ARGS]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"import-labels failed:\n{done.stdout}\n{done.stderr}")
    say(f"import-labels (subprocess, incl. ~2 s interpreter start): {time.perf_counter() - t:.1f} s")
    say(f"  {done.stdout.strip()}")

    from rlhf import aggregation as agg
    from rlhf.dashboard import compute_dashboard, load_inputs
    from rlhf.quality import first_labels
    from rlhf.settings import load_settings
    from storage import Store

    settings = load_settings(store={"data_dir": data_dir})
    store = Store.from_settings(settings)
    reads, computes, totals = [], [], []
    dash = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        inputs = load_inputs(store)
        t_read = time.perf_counter() - t
        dash = compute_dashboard(inputs, settings)
        total = time.perf_counter() - t
        reads.append(t_read)
        computes.append(total - t_read)
        totals.append(total)
    assert dash is not None
    say("")
    say(f"dashboard on all {dash.counts['labels']:,} labels / {dash.counts['pairs']:,} pairs / "
        f"{dash.counts['annotators']:,} annotators ({settings.quality.bootstrap_samples} bootstrap resamples, "
        f"majority + Dawid-Skene, {args.repeats} runs):")
    say(f"  total  best {min(totals):.2f} s, median {statistics.median(totals):.2f} s  (goal <= 5 s)")
    say(f"  read   median {statistics.median(reads):.2f} s; compute median {statistics.median(computes):.2f} s")
    say("  last run by part: " + ", ".join(f"{k} {v:.2f} s" for k, v in dash.timings.items()))

    say("")
    say("agreement (95% percentile bootstrap over pairs):")
    for r in dash.summary.itertuples():
        say(f"  {r.label:<50} {r.value:.4f}  [{r.ci_low:.4f}, {r.ci_high:.4f}]  pairs={r.n_items:,}")
    say("  reference values in ukpconvarg1/SOURCE.md (computed, not published): alpha nominal 0.2668, "
        "Fleiss 0.2667 (pairs with 5 labels), alpha ordinal 0.3696")

    first = first_labels(dash.labels)
    truth = first.dropna(subset=["gold_choice"]).drop_duplicates("pair_id").set_index("pair_id")["gold_choice"]
    say("")
    say(f"aggregation accuracy against gold_label ({len(truth):,} pairs with a gold label):")
    results = {}
    for method, result in dash.aggregations.items():
        acc, n = agg.accuracy_against(result, truth)
        results[method] = acc
        extra = ""
        if method == "majority":
            pairs = result.pairs.set_index("pair_id").reindex(truth.index)
            contested = pairs["contested"].fillna(False).astype(bool)
            clean_acc = float((pairs["choice"][~contested] == truth[~contested]).mean())
            # Expected accuracy if draws were broken uniformly at random among the leading answers.
            votes = first[first["pair_id"].isin(truth.index[contested])].groupby(["pair_id", "choice"]).size()
            top = votes.groupby(level=0).transform("max")
            leaders = votes[votes == top].reset_index()
            leaders["right"] = leaders["choice"].to_numpy() == truth.reindex(leaders["pair_id"]).to_numpy()
            random_draw = leaders.groupby("pair_id")["right"].mean()
            expected = (clean_acc * (~contested).sum() + random_draw.sum()) / len(truth)
            extra = (f"\n      {int(contested.sum()):,} gold pairs have a draw at the top, resolved by the fixed rule "
                     f"(A/B draw -> tie); undrawn pairs alone: {clean_acc:.4f}; with draws broken at random "
                     f"instead: {expected:.4f} expected")
        say(f"  {method:<12} {acc:.4f} on {n:,} pairs (in the dashboard: {dash.timings.get('aggregate_' + method, 0):.2f} s){extra}")
    t = time.perf_counter()
    mace = agg.mace(first, n_restarts=args.mace_restarts, n_iter=50)
    t_mace = time.perf_counter() - t
    acc_mace, n = agg.accuracy_against(mace, truth)
    results["mace"] = acc_mace
    say(f"  {'mace':<12} {acc_mace:.4f} on {n:,} pairs ({args.mace_restarts} restarts x 50 iterations: {t_mace:.1f} s; "
        "NOTE the corpus's gold labels were themselves estimated by MACE from these labels, so this is not independent)")
    best = max(("majority", "dawid_skene"), key=lambda m: results.get(m, float("nan")))
    other = "majority" if best == "dawid_skene" else "dawid_skene"
    say(f"  winner (model-based vs majority): {best}, by {100 * (results[best] - results[other]):.2f} percentage points")


if __name__ == "__main__":
    main()
