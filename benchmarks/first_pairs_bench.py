"""How long a new store waits for its first pairs, by the policy's dtype.

``recfeedback app`` on a fresh store starts the first-pairs job (rlhf.bootstrap.run_bootstrap: the real
policy writes lists for a few contexts at a time and enqueues their pairs). This script runs that job
on fresh demo stores, alternating dtypes so that a change of machine load hits both alike, and prints
for each run the seconds to the first chunk's pairs (when an annotator can start) and to all pairs,
model load included, then the median of each and the ratio against the first dtype named.

    .venv/bin/python benchmarks/first_pairs_bench.py                      # float32 vs auto, 2 runs each
    .venv/bin/python benchmarks/first_pairs_bench.py --dtypes float32,bfloat16 --repeats 3 --pairs 12

``auto`` is what the product picks (rlhf.models.pick_policy_dtype): bf16 on a CPU with native bf16
(AMX or AVX512-BF16), else fp32. Each run loads the model afresh (the product's job is a new process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def one_run(dtype: str, pairs: int, data_dir: Path) -> dict:
    """The first-pairs job on a fresh demo store with the policy in ``dtype``: seconds to each chunk."""
    from rlhf.bootstrap import run_bootstrap
    from rlhf.demo import build_demo
    from rlhf.models import clear_policy_cache, get_policy_model
    from rlhf.settings import load_settings
    from storage import Store

    clear_policy_cache()
    settings = load_settings(store={"data_dir": data_dir}, model={"dtype": dtype})
    store = Store.from_settings(settings)
    build_demo(store, settings, with_accounts=False)
    chunks: list[float] = []
    start = time.perf_counter()
    status = run_bootstrap(store, settings, n_pairs=pairs, progress=False,
                           on_chunk=lambda _s: chunks.append(time.perf_counter() - start))
    total = time.perf_counter() - start
    model, _ = get_policy_model(settings.model.policy, None, device=settings.model.device, dtype=dtype)
    loaded_as = str(next(model.parameters()).dtype).removeprefix("torch.")
    clear_policy_cache()
    return {"dtype": dtype, "loaded_as": loaded_as, "state": status.state, "pairs": status.pairs,
            "first_chunk_s": chunks[0] if chunks else None, "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,auto", help="comma list; the first is the reference")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=12, help="pairs the job writes (settings.demo.initial_pairs)")
    args = parser.parse_args()

    import torch

    from rlhf.models import cpu_has_native_bf16

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    print(f"cpu: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"native bf16: {cpu_has_native_bf16()}, load average {os.getloadavg()}")
    runs: dict[str, list[dict]] = {d: [] for d in dtypes}
    for r in range(args.repeats):
        for dtype in dtypes:
            with tempfile.TemporaryDirectory() as tmp:
                out = one_run(dtype, args.pairs, Path(tmp) / "data")
            runs[dtype].append(out)
            print(f"run {r + 1} {dtype:>8} (loaded as {out['loaded_as']}): {out['state']}, {out['pairs']} pairs; "
                  f"first chunk {out['first_chunk_s']:.1f} s, all {out['total_s']:.1f} s", flush=True)
    ref = dtypes[0]
    ref_total = statistics.median(x["total_s"] for x in runs[ref])
    for dtype in dtypes:
        first = statistics.median(x["first_chunk_s"] for x in runs[dtype])
        total = statistics.median(x["total_s"] for x in runs[dtype])
        print(f"median {dtype:>8}: first chunk {first:.1f} s, all {total:.1f} s "
              f"({ref_total / total:.2f}x the speed of {ref})")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
