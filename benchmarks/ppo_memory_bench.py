"""Peak memory and wall time of the product's PPO command with a setting off and on. Prints figures.

The setting is ``ppo.gradient_checkpointing`` (default: activation checkpointing, a memory figure) or,
with ``--setting bf16``, ``ppo.bf16`` (bf16 autocast on a CPU with AMX/AVX512-BF16, a speed figure).
Each setting runs ``recfeedback ppo`` as its own child process on the same store (a fresh demo store
unless ``--store``), and the child's own peak RSS is read from ``os.wait4``'s resource usage, so one
run's peak cannot leak into the other's figure. ``--reward-model none`` by default: the structural
reward terms only, so no reward model has to be trained first (a reward model adds its own encoder,
small next to the policy); pass ``--reward-model latest`` on a store that has one.

Usage::

    .venv/bin/python benchmarks/ppo_memory_bench.py                          # 2 steps of 4 episodes
    .venv/bin/python benchmarks/ppo_memory_bench.py --setting bf16 --repeats 2  # off/on alternating
    .venv/bin/python benchmarks/ppo_memory_bench.py --store /path/to/data --reward-model latest
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "recfeedback")]  # the console script of this venv


def run_ppo(env: dict[str, str], args: argparse.Namespace, on: bool) -> tuple[float, float, int]:
    """(peak RSS GiB, wall seconds, exit code) of one ``recfeedback ppo`` child process, ``args.setting``
    off or ``on``."""
    cmd = [*CLI, "ppo", "--steps", str(args.steps), "--limit-contexts", str(args.contexts)]
    if args.reward_model != "latest":
        cmd += ["--reward-model", args.reward_model]
    child_env = {**env, f"RECFEEDBACK_PPO__{args.setting.upper()}": str(on).lower()}
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
    parser.add_argument("--ppo-epochs", type=int, default=2, help="2: a quick round's; the product default is 4")
    parser.add_argument("--setting", default="gradient_checkpointing", choices=["gradient_checkpointing", "bf16"],
                        help="the ppo setting to turn off and on (the other keeps its product default)")
    parser.add_argument("--repeats", type=int, default=1, help="off/on pairs, alternating")
    args = parser.parse_args()

    data = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="ppo_mem_")) / "data"
    env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "RECFEEDBACK_PPO__BATCH_SIZE": str(args.batch), "RECFEEDBACK_PPO__MINI_BATCH_SIZE": str(args.batch),
           "RECFEEDBACK_PPO__PPO_EPOCHS": str(args.ppo_epochs), "RECFEEDBACK_PPO__MAX_NEW_TOKENS": str(args.max_new_tokens),
           "RECFEEDBACK_PPO__CHECKPOINT_EVERY": "0"}
    if not args.store:
        subprocess.run([*CLI, "init", "--demo"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"command: {' '.join(sys.argv)}")
    print(f"hardware: {platform.machine()}, {os.cpu_count()} CPU cores; store {data}; {args.steps} PPO steps of "
          f"{args.batch} episodes, {args.ppo_epochs} PPO epochs, {args.max_new_tokens} new tokens, reward model "
          f"{args.reward_model}", flush=True)
    peaks: dict[bool, list[float]] = {False: [], True: []}
    walls: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for on in (False, True):
            peak, wall, code = run_ppo(env, args, on)
            peaks[on].append(peak)
            walls[on].append(wall)
            print(f"{args.setting}={str(on).lower():<5}  peak RSS {peak:5.1f} GiB  wall {wall:6.1f} s"
                  + ("" if code == 0 else f"  (exit code {code}: the run failed)"), flush=True)
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    wall = {k: statistics.median(v) for k, v in walls.items()}
    print(f"{args.setting} off / on (medians): peak RSS {peak[False] / peak[True]:.2f}x, "
          f"wall time {wall[False] / wall[True]:.2f}x")


if __name__ == "__main__":
    main()
