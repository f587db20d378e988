"""Peak memory of the product's PPO command, with and without activation checkpointing. Prints figures.

Each setting runs ``recfeedback ppo`` as its own child process on the same store (a fresh demo store
unless ``--store``), and the child's own peak RSS is read from ``os.wait4``'s resource usage, so one
run's peak cannot leak into the other's figure. ``--reward-model none`` by default: the structural
reward terms only, so no reward model has to be trained first (a reward model adds its own encoder,
small next to the policy); pass ``--reward-model latest`` on a store that has one.

Usage::

    .venv/bin/python benchmarks/ppo_memory_bench.py                          # 2 steps of 4 episodes
    .venv/bin/python benchmarks/ppo_memory_bench.py --store /path/to/data --reward-model latest
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

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "recfeedback")]  # the console script of this venv


def run_ppo(env: dict[str, str], args: argparse.Namespace, checkpointing: bool) -> tuple[float, float, int]:
    """(peak RSS GiB, wall seconds, exit code) of one ``recfeedback ppo`` child process."""
    cmd = [*CLI, "ppo", "--steps", str(args.steps), "--limit-contexts", str(args.contexts)]
    if args.reward_model != "latest":
        cmd += ["--reward-model", args.reward_model]
    child_env = {**env, "RECFEEDBACK_PPO__GRADIENT_CHECKPOINTING": str(checkpointing).lower()}
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(cmd, env=child_env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 2**20, time.perf_counter() - started, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="", help="a data folder to use (default: a fresh demo store)")
    parser.add_argument("--reward-model", default="none", help="'none', 'latest' or a registered id")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="episodes per step (= the mini-batch)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--contexts", type=int, default=8)
    args = parser.parse_args()

    data = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="ppo_mem_")) / "data"
    env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "RECFEEDBACK_PPO__BATCH_SIZE": str(args.batch), "RECFEEDBACK_PPO__MINI_BATCH_SIZE": str(args.batch),
           "RECFEEDBACK_PPO__PPO_EPOCHS": "2", "RECFEEDBACK_PPO__MAX_NEW_TOKENS": str(args.max_new_tokens),
           "RECFEEDBACK_PPO__CHECKPOINT_EVERY": "0"}
    if not args.store:
        subprocess.run([*CLI, "init", "--demo"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"command: {' '.join(sys.argv)}")
    print(f"hardware: {platform.machine()}, {os.cpu_count()} CPU cores; store {data}; {args.steps} PPO steps of "
          f"{args.batch} episodes, {args.max_new_tokens} new tokens, reward model {args.reward_model}", flush=True)
    peaks = {}
    for checkpointing in (False, True):
        peak, wall, code = run_ppo(env, args, checkpointing)
        peaks[checkpointing] = peak
        print(f"gradient_checkpointing={str(checkpointing).lower():<5}  peak RSS {peak:5.1f} GiB  wall {wall:6.1f} s"
              + ("" if code == 0 else f"  (exit code {code}: the run failed)"), flush=True)
    print(f"peak without / with checkpointing: {peaks[False] / peaks[True]:.2f}x")


if __name__ == "__main__":
    main()
