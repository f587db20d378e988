"""Reward-model benchmark on real human preferences (issue 5). Prints figures; asserts nothing.

Tasks (choose with --tasks):

- ``ukp``: UKPConvArg1 "which argument is more convincing", CROSS-TOPIC. The 32 topic/side files belong
  to 16 debates; we hold out whole debates (both sides), which is stricter than the paper's
  leave-one-topic/side-out: ``--ukp-folds`` folds over the 16 debates (debates sorted by name, debate i
  in fold i mod k). ``--ukp-max-folds`` runs only the first folds (time). Pairs: the Strict subset
  (``strict_label`` a1/a2, as in Habernal & Gurevych 2016) unless ``--ukp-all`` (``gold_label`` a1/a2,
  dropping 'equal' and null). Prompt: the debate title and the stance.
- ``hh``: Anthropic HH-RLHF harmless-base TEST file (2,312 pairs), deterministic 80/20 split by a hash of
  the dialogue prompt (identical prompts never straddle the split). Floor: "longer reply wins" = 0.443.
- ``demo``: the demo shop in the PRODUCT's format: prompts rendered by ``rlhf.prompts.render_prompt``
  (policy tokenizer), answers ``1. C07 | reason`` of random candidates with generic reasons, labels from
  the default simulated crowd (~0.75 agreement, one label per pair) on TRAIN contexts, tested on pairs
  of HELD-OUT contexts labelled by the TRUE utility order. Run once per ``--input-formats`` entry
  (``rlhf.reward.inputs``: ``resolved`` names each item and keeps only the history as the prompt;
  ``policy`` reads the raw texts), same pairs and labels.
- Throughput (pairs/s) and peak RSS of every training run are printed with it.

Sizes are flags so that the shared 2-core CPU can run a subset; the output says exactly what ran.
Example (what benchmarks/results/reward_model.md records)::

    nice -n 10 .venv/bin/python benchmarks/reward_model_bench.py --tasks ukp,hh --backbones minilm,policy
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def ukp_frame(strict: bool) -> pd.DataFrame:
    """One row per labelled pair: debate, prompt, chosen, rejected (argument texts)."""
    pairs = pd.read_parquet(DATA / "ukpconvarg1" / "pairs.parquet")
    args = pd.read_parquet(DATA / "ukpconvarg1" / "arguments.parquet")
    label_col = "strict_label" if strict else "gold_label"
    pairs = pairs[pairs[label_col].isin(["a1", "a2"])]
    if strict:
        pairs = pairs[pairs["in_strict"]]
    text = dict(zip(zip(args["topic"], args["arg_id"]), args["text"]))
    stance = dict(zip(zip(args["topic"], args["arg_id"]), args["stance"]))
    rows = []
    for r in pairs.itertuples(index=False):
        t1, t2 = text[(r.topic, r.arg1_id)], text[(r.topic, r.arg2_id)]
        win_first = getattr(r, label_col) == "a1"
        rows.append({
            "debate": r.topic.split("_")[0], "topic": r.topic,
            "prompt": f"{r.debate_title}: {stance[(r.topic, r.arg1_id)]}",
            "chosen": t1 if win_first else t2, "rejected": t2 if win_first else t1,
        })
    return pd.DataFrame(rows)


def hh_frame() -> pd.DataFrame:
    h = pd.read_parquet(DATA / "hh_rlhf_harmless_base_test" / "pairs.parquet")
    return pd.DataFrame({
        "prompt": h["prompt"], "chosen": h["chosen_response"], "rejected": h["rejected_response"],
        "split": ["test" if _hash_unit(p) < 0.2 else "train" for p in h["prompt"]],
    })


def run_one(name: str, backbone: str, train: pd.DataFrame, test: pd.DataFrame, args: argparse.Namespace,
            input_format: str = "resolved", method: str = "lora") -> dict:
    from rlhf.reward.evaluate import evaluate_frame
    from rlhf.reward.train import peak_rss_mb, train_reward_model
    from rlhf.settings import load_settings

    lr = args.lr_minilm if backbone == "minilm" else args.lr_policy
    settings = load_settings(reward_model={
        "backbone": backbone, "epochs": args.epochs, "learning_rate": lr, "batch_size": args.batch_size,
        "max_length": args.max_length, "center_rewards_coefficient": 0.01, "lora_r": args.lora_r,
        "lora_alpha": 2 * args.lora_r, "seed": args.seed, "logging_steps": 20, "input_format": input_format,
        "method": method, "probe_backbone": backbone, "probe_input_format": input_format,
    })
    with tempfile.TemporaryDirectory() as tmp:
        result = train_reward_model(train, settings=settings, output_dir=tmp, backbone=backbone,
                                    max_steps=args.max_steps, progress=not args.quiet)
        t0 = time.perf_counter()
        metrics = evaluate_frame(result.scorer, test, batch_size=64)
        eval_s = time.perf_counter() - t0
    losses = result.losses()
    row = {
        "task": name, "method": method, "backbone": backbone, "input_format": input_format, "n_train": len(train), "n_test": len(test),
        "accuracy": metrics["accuracy"], "ece": metrics["ece"],
        "train_s": round(result.train_seconds, 1), "pairs_per_s": round(result.pairs_per_second, 2),
        "eval_pairs_per_s": round(len(test) / eval_s, 1), "peak_rss_mb": round(peak_rss_mb(), 0),
        "first_loss": round(losses[0], 4) if losses else None, "final_loss": round(losses[-1], 4) if losses else None,
        "lr": lr,
    }
    print(json.dumps(row), flush=True)
    del result
    return row


def sweep(name: str, backbones: list[str], train: pd.DataFrame, test: pd.DataFrame, args: argparse.Namespace,
          input_formats: tuple[str, ...] = ("resolved",)) -> list[dict]:
    """One run per method x backbone x input format x training size (nested prefixes of one shuffle)."""
    order = np.random.default_rng(args.seed).permutation(len(train))
    sizes = sorted({min(int(n), len(train)) for n in args.train_sizes.split(",") if n} or {len(train)}) \
        if args.train_sizes else [len(train)]
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        for bb in backbones:
            for fmt in input_formats:
                for n in sizes:
                    rows.append(run_one(name, bb, train.iloc[np.sort(order[:n])], test, args,
                                        input_format=fmt, method=method))
    return rows


def bench_ukp(args: argparse.Namespace, backbones: list[str]) -> list[dict]:
    frame = ukp_frame(strict=not args.ukp_all)
    debates = sorted(frame["debate"].unique())
    k = args.ukp_folds
    print(f"UKP: {len(frame)} pairs, {len(debates)} debates, {frame['topic'].nunique()} topic/side files, "
          f"{k} folds over debates, running {min(args.ukp_max_folds, k)}", flush=True)
    rows = []
    rng = np.random.default_rng(args.seed)
    for fold in range(min(args.ukp_max_folds, k)):
        held = {d for i, d in enumerate(debates) if i % k == fold}
        train = frame[~frame["debate"].isin(held)]
        test = frame[frame["debate"].isin(held)]
        if args.train_pairs and len(train) > args.train_pairs:
            train = train.iloc[np.sort(rng.choice(len(train), args.train_pairs, replace=False))]
        if args.test_pairs and len(test) > args.test_pairs:
            test = test.iloc[np.sort(rng.choice(len(test), args.test_pairs, replace=False))]
        assert not set(train["topic"]) & set(test["topic"]), "topic leak"
        longer = float(np.mean(test["chosen"].str.len() > test["rejected"].str.len()))
        print(f"fold {fold}: held-out debates {sorted(held)}; train {len(train)}, test {len(test)} pairs; "
              f"'longer argument wins' on the test pairs: {longer:.3f}", flush=True)
        rows += [row | {"heldout_debates": sorted(held), "longer_wins_floor": round(longer, 3)}
                 for row in sweep(f"ukp_fold{fold}", backbones, train, test, args)]
    return rows


def bench_hh(args: argparse.Namespace, backbones: list[str]) -> list[dict]:
    frame = hh_frame()
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    overlap = set(train["prompt"]) & set(test["prompt"])
    longer = float(np.mean(test["chosen"].str.len() > test["rejected"].str.len()))
    print(f"HH harmless test file: {len(frame)} pairs -> train {len(train)}, test {len(test)}; "
          f"prompts in both splits: {len(overlap)}; 'longer reply wins' on our test split: {longer:.3f}", flush=True)
    rng = np.random.default_rng(args.seed)
    if args.hh_train_pairs and len(train) > args.hh_train_pairs:
        train = train.iloc[np.sort(rng.choice(len(train), args.hh_train_pairs, replace=False))]
    if args.hh_test_pairs and len(test) > args.hh_test_pairs:
        test = test.iloc[np.sort(rng.choice(len(test), args.hh_test_pairs, replace=False))]
        longer = float(np.mean(test["chosen"].str.len() > test["rejected"].str.len()))
        print(f"HH test subsample: {len(test)} pairs; 'longer reply wins' on it: {longer:.3f}", flush=True)
    return [row | {"longer_wins_floor": round(longer, 3)} for row in sweep("hh_harmless", backbones, train, test, args)]


REASONS = ("Matches what they bought before.", "A popular choice in this category.", "Good value for the price.",
           "Complements their earlier purchases.", "A useful addition for their home.")


def demo_frames(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) preference frames on the demo shop in the product's prompt and answer format."""
    from rlhf import simulate as sim
    from rlhf.demo import build_demo, utility_fn_for_store
    from rlhf.models import get_tokenizer
    from rlhf.prompts import build_context_views, format_list_line, render_prompt
    from rlhf.settings import load_settings
    from storage import Store
    from storage import contexts as contexts_repo

    tmp = tempfile.mkdtemp(prefix="rm_demo_")
    settings = load_settings(store={"data_dir": Path(tmp) / "data"},
                             demo={"n_items": 240, "n_shoppers": args.demo_shoppers, "seed": args.seed})
    store = Store.from_settings(settings)
    build_demo(store, settings, with_accounts=False)
    utility = utility_fn_for_store(store)
    with store.transaction() as con:
        contexts = contexts_repo.list_contexts(con)
        views = {v.context_id: v for v in build_context_views(con, contexts)}
    tokenizer = get_tokenizer(settings.model.policy)
    n, rng = settings.generation.list_length, np.random.default_rng(args.seed)
    crowd = sim.make_crowd(20, "default", seed=args.seed)

    def pairs_of(ctx, k_pairs):
        view = views[ctx.context_id]
        prompt = render_prompt(tokenizer, view, n, settings.generation.max_prompt_tokens)
        out = []
        for _ in range(k_pairs):
            picks = [rng.choice(len(view.candidates), n, replace=False) for _ in range(2)]
            texts = ["\n".join(format_list_line(r + 1, view.short_ids[i], REASONS[int(rng.integers(len(REASONS)))])
                               for r, i in enumerate(p)) for p in picks]
            u = [utility(ctx, [view.candidates[i].item_id for i in p]) for p in picks]
            out.append((prompt, texts, u))
        return out

    train_rows, test_rows = [], []
    train_ctx = [c for c in contexts if c.split != "heldout"]
    held_ctx = [c for c in contexts if c.split == "heldout"]
    raw = [x for c in train_ctx for x in pairs_of(c, args.demo_pairs_per_context)]
    scale = sim.utility_scale([u[0] - u[1] for _, _, u in raw])
    for prompt, texts, u in raw:
        left_is_a = bool(rng.random() < 0.5)
        ul, ur = (u[0], u[1]) if left_is_a else (u[1], u[0])
        choice = sim.canonical_choice(sim.judge(crowd[int(rng.integers(len(crowd)))], ul, ur, rng, scale=scale),
                                      left_is_a)
        if choice in ("A", "B"):
            win = 0 if choice == "A" else 1
            train_rows.append({"prompt": prompt, "chosen": texts[win], "rejected": texts[1 - win]})
    for prompt, texts, u in (x for c in held_ctx for x in pairs_of(c, args.demo_pairs_per_context)):
        if abs(u[0] - u[1]) > 1e-9:
            win = 0 if u[0] > u[1] else 1
            test_rows.append({"prompt": prompt, "chosen": texts[win], "rejected": texts[1 - win]})
    train, test = pd.DataFrame(train_rows), pd.DataFrame(test_rows)
    if args.train_pairs and len(train) > args.train_pairs:
        train = train.iloc[np.sort(rng.choice(len(train), args.train_pairs, replace=False))]
    if args.test_pairs and len(test) > args.test_pairs:
        test = test.iloc[np.sort(rng.choice(len(test), args.test_pairs, replace=False))]
    return train, test


def bench_demo(args: argparse.Namespace, backbones: list[str]) -> list[dict]:
    train, test = demo_frames(args)
    print(f"demo shop: train {len(train)} crowd-labelled pairs on train contexts, test {len(test)} pairs on "
          f"held-out contexts (label = true utility order)", flush=True)
    if args.frozen_probe:  # the probe that became the product's small-data model: run it through the product
        for fmt in [f for f in args.input_formats.split(",") if f]:
            sizes = sorted({min(n, len(train)) for n in (300, len(train))})
            accs = [run_one("demo", "minilm", train.iloc[np.random.default_rng(0).permutation(len(train))[:n]],
                            test, args, input_format=fmt, method="probe")["accuracy"] for n in sizes]
            print(f"frozen MiniLM + logistic head (the product's probe, l2 0.25 = C 1), input {fmt}: " +
                  ", ".join(f"{n} labels {a:.3f}" for n, a in zip(sizes, accs)), flush=True)
    return sweep("demo", backbones, train, test, args, tuple(f for f in args.input_formats.split(",") if f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="ukp,hh")
    parser.add_argument("--backbones", default="minilm,policy")
    parser.add_argument("--ukp-folds", type=int, default=4, help="folds over the 16 debates")
    parser.add_argument("--ukp-max-folds", type=int, default=1, help="run only the first N folds")
    parser.add_argument("--ukp-all", action="store_true", help="all gold a1/a2 pairs instead of the Strict subset")
    parser.add_argument("--train-pairs", type=int, default=0, help="subsample UKP training pairs (0 = all)")
    parser.add_argument("--test-pairs", type=int, default=0, help="subsample UKP test pairs (0 = all)")
    parser.add_argument("--hh-train-pairs", type=int, default=0, help="subsample HH training pairs (0 = all)")
    parser.add_argument("--hh-test-pairs", type=int, default=0, help="subsample the HH test split (0 = all)")
    parser.add_argument("--demo-shoppers", type=int, default=160, help="demo: shoppers (contexts) in the shop")
    parser.add_argument("--demo-pairs-per-context", type=int, default=4, help="demo: random list pairs per context")
    parser.add_argument("--input-formats", default="resolved,policy", help="demo: reward-model input formats to run")
    parser.add_argument("--frozen-probe", action="store_true",
                        help="demo: also fit a logistic head on frozen MiniLM embeddings (a reference, seconds)")
    parser.add_argument("--methods", default="lora", help="reward-model methods to run: lora, probe (rlhf.reward.probe)")
    parser.add_argument("--train-sizes", default="",
                        help="comma list of training-set sizes, nested subsets of one shuffle (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lr-minilm", type=float, default=1e-3)
    parser.add_argument("--lr-policy", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json-out", default="")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"command: {' '.join(sys.argv)}")
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
          f"torch threads {torch.get_num_threads()}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}; "
          f"torch {torch.__version__}", flush=True)
    backbones = [b for b in args.backbones.split(",") if b]
    rows: list[dict] = []
    started = time.perf_counter()
    tasks = [t for t in args.tasks.split(",") if t]
    if "ukp" in tasks:
        rows += bench_ukp(args, backbones)
    if "hh" in tasks:
        rows += bench_hh(args, backbones)
    if "demo" in tasks:
        rows += bench_demo(args, backbones)
    print(f"\nSUMMARY (wall {time.perf_counter() - started:.0f} s)")
    table = pd.DataFrame(rows)
    if not table.empty:
        cols = [c for c in ("task", "method", "backbone", "input_format", "n_train", "n_test", "accuracy", "longer_wins_floor", "ece", "train_s", "pairs_per_s",
                            "eval_pairs_per_s", "peak_rss_mb", "first_loss", "final_loss") if c in table]
        print(table[cols].to_string(index=False))
        ukp = table[table["task"].str.startswith("ukp")]
        for bb, group in ukp.groupby(["method", "backbone", "n_train"]):
            print(f"UKP cross-topic mean accuracy, {bb}: {group['accuracy'].mean():.3f} over {len(group)} fold(s)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
