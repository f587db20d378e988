"""Figures for the loop's building blocks: crowd calibration, active selection, offline evaluation.

Prints (never asserts):
1. raw pairwise agreement and accuracy of the simulated crowds (default / clean / noisy, several sizes),
   and the human win rate their left bias would give a policy as good as its parent always shown on the right;
2. active selection time for a round-sized pool, and how the picks differ from random; what measuring on
   the picked pairs does to a round's human win rate (2b) and to a reward model's held-out accuracy (2c),
   against the random slice (2b takes about 5 minutes);
3. labelling through the annotation service by a simulated crowd (labels/s, service latency);
4. offline evaluation on UCI Online Retail at a time cut: popularity and co-purchase baselines plus a
   random-catalogue floor, HR@N / NDCG@N with 95% bootstrap intervals, and the time it takes.

Run: ``.venv/bin/python benchmarks/loop_parts_bench.py [--skip-uci] [--cut 2011-09-01]``
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf import active, evaluation, simulate
from rlhf.settings import load_settings
from storage import Store


def crowd_figures() -> None:
    print("== 1. simulated crowds: raw pairwise agreement (3 labels per pair) and accuracy vs truth")
    utilities = simulate.synthetic_utility_pairs(4000, seed=777)
    print(f"{'crowd':8} {'size':>4} {'agreement (4 seeds)':>28} {'accuracy':>9} {'spammers':>8} {'build s':>8}")
    for kind in simulate.CROWD_KINDS:
        for n in (5, 20, 50):
            agreements, accs, spam, build = [], [], [], []
            for seed in range(4):
                t0 = time.perf_counter()
                crowd = simulate.make_crowd(n, kind, seed=seed)
                build.append(time.perf_counter() - t0)
                agreements.append(simulate.raw_agreement(crowd, utilities, seed=seed + 10))
                accs.append(simulate.accuracy_against_truth(crowd, utilities, seed=seed))
                spam.append(sum(p.behaviour != "bt" for p in crowd))
            print(f"{kind:8} {n:>4} {np.mean(agreements):>10.3f} ({min(agreements):.3f}-{max(agreements):.3f})"
                  f"{'':>5} {np.mean(accs):>9.3f} {np.mean(spam):>8.1f} {np.mean(build):>8.2f}")
    print("target for 'default': 0.73-0.77 (InstructGPT labellers: 72.6 +/- 1.5%)\n")
    side_figures(utilities)


def side_figures(utilities: np.ndarray) -> None:
    """The human win rate of a new policy exactly as good as its parent, by where its list is shown: what
    the queue's coin per assignment (``storage.queue.next_assignment``) protects the win rate from.

    Both columns of ``utilities`` come from one distribution, so the true win rate is 0.5; what the crowd
    gives beyond that is its left bias, counted for whichever policy is shown on the left.
    """
    print("== 1b. human win rate of a policy as good as its parent (truth: 0.500), by the side it is shown on")
    print(f"{'crowd':8} {'new always on the right':>24} {'sides on a coin (queue)':>24}   (20 annotators, 4 seeds, "
          f"{len(utilities)} pairs each)")
    for kind in simulate.CROWD_KINDS:
        fixed, coin = [], []
        for seed in range(4):
            crowd = simulate.make_crowd(20, kind, seed=seed)
            rng = np.random.default_rng(seed + 100)
            for new_left_share, out in ((0.0, fixed), (0.5, coin)):
                wins = []
                for u_new, u_parent in utilities:
                    new_left = rng.random() < new_left_share
                    who = crowd[int(rng.integers(0, len(crowd)))]
                    left, right = (u_new, u_parent) if new_left else (u_parent, u_new)
                    side = simulate.judge(who, left, right, rng).side
                    if side in ("left", "right"):
                        wins.append(float((side == "left") == new_left))
                    elif side == "tie":
                        wins.append(0.5)
                out.append(np.mean(wins))
        print(f"{kind:8} {np.mean(fixed):>24.3f} {np.mean(coin):>24.3f}")
    print()


def active_figures() -> None:
    print("== 2. active selection: 200 pairs from a pool of 2000 contexts x 4 lists (12,000 candidates), K=3")
    rng = np.random.default_rng(0)
    by_context = {f"c{c:05d}": [f"g{c:05d}_{j}" for j in range(4)] for c in range(2000)}
    gen_ids = [g for ids in by_context.values() for g in ids]
    scores = rng.normal(0, 2, len(gen_ids)) + rng.normal(0, 0.7, (3, len(gen_ids)))
    candidates = active.candidate_pairs(by_context)
    labelled = {c: int(rng.integers(0, 5)) for c in by_context}
    times = []
    for seed in range(5):
        t0 = time.perf_counter()
        chosen = active.select_pairs(candidates, scores, gen_ids, 200, labelled_per_context=labelled, seed=seed)
        times.append(time.perf_counter() - t0)
    stats = active.pair_statistics(candidates, scores, gen_ids)
    print(f"time: median {np.median(times) * 1000:.0f} ms over 5 runs")
    frame = pd.DataFrame([{"reason": p.selection_reason, "abs_gap": abs(p.stats["mean_gap"]),
                           "minority": p.stats["minority"], "labelled": p.stats["context_labelled"]} for p in chosen])
    print(frame.groupby("reason").agg(n=("abs_gap", "size"), mean_abs_gap=("abs_gap", "mean"),
                                      mean_minority=("minority", "mean"), mean_ctx_labelled=("labelled", "mean"))
          .round(3).to_string())
    print(f"pool: mean |gap| {np.abs(stats['mean_gap']).mean():.3f}, mean minority {stats['minority'].mean():.3f}, "
          f"mean ctx labelled {np.mean(list(labelled.values())):.2f}\n")


def win_rate_sample_figures(n_contexts: int = 400, new_lists: int = 4, budget: int = 200, repeats: int = 32) -> None:
    """The human win rate of a better new policy, read from a round's chosen pairs, by why they were chosen.

    A synthetic round: per context one parent list and ``new_lists`` new ones, the new policy better by a
    fixed gap; the round's candidates (new-new and new-parent pairs) are scored by a 3-member ensemble
    that sees the truth through noise and chosen with the default shares. The default crowd judges every
    new-parent pair three times, sides on a coin, so each subset below averages the same labels: they
    differ only in which pairs they hold.
    """
    print(f"== 2b. human win rate of a better new policy, by how its pairs were chosen ({n_contexts} contexts, "
          f"{new_lists} new lists each, {budget} pairs chosen, default shares and crowd, {repeats} seeds)")
    print(f"{'RM noise':>8} {'RM accuracy':>11} {'true gap':>8} {'every new-parent pair':>22} {'random slice':>13} "
          f"{'chosen by the model':>20} {'labels random / model':>22}")
    for rm_noise in (0.5, 1.0, 2.0):
        for gap in (0.0, 0.5, 1.0):
            rows = []
            for seed in range(repeats):
                rng = np.random.default_rng(seed)
                crowd = simulate.make_crowd(20, "default", seed=seed)
                level = rng.normal(0.0, 1.0, n_contexts)
                utility: dict[str, float] = {}
                by_context: dict[str, list[str]] = {}
                for c in range(n_contexts):
                    ids = [f"c{c:04d}_p"] + [f"c{c:04d}_n{k}" for k in range(new_lists)]
                    by_context[f"c{c:04d}"] = ids
                    for g in ids:
                        utility[g] = float(level[c] + (0.0 if g.endswith("_p") else gap)
                                           + rng.normal(0.0, math.sqrt(0.5)))
                gen_ids = sorted(utility)
                scores = np.array([utility[g] for g in gen_ids]) + rng.normal(0.0, rm_noise, (3, len(gen_ids)))
                candidates = active.candidate_pairs(by_context)
                chosen = active.select_pairs(candidates, scores, gen_ids, budget, seed=seed)
                mean_score = dict(zip(gen_ids, scores.mean(axis=0)))
                labels: dict[tuple[str, str], list[float]] = {}
                right = []
                for p in candidates:
                    parent, new = sorted((p.gen_a, p.gen_b), key=lambda g: not g.endswith("_p"))
                    if not parent.endswith("_p"):
                        continue
                    right.append((mean_score[new] > mean_score[parent]) == (utility[new] > utility[parent]))
                    wins = []
                    for _ in range(3):
                        new_left = rng.random() < 0.5
                        left, right_u = (utility[new], utility[parent]) if new_left else (utility[parent], utility[new])
                        side = simulate.judge(crowd[int(rng.integers(0, len(crowd)))], left, right_u, rng).side
                        if side in ("left", "right"):
                            wins.append(float((side == "left") == new_left))
                        elif side == "tie":
                            wins.append(0.5)
                    labels[(p.gen_a, p.gen_b)] = wins

                def rate(pairs: Sequence[Any], labels: dict[tuple[str, str], list[float]] = labels) -> tuple[float, int]:
                    got = [w for p in pairs for w in labels.get((p.gen_a, p.gen_b), [])]
                    return (float(np.mean(got)) if got else float("nan")), len(got)

                random_slice = rate([p for p in chosen if p.selection_reason == active.RANDOM_REASON])
                by_model = rate([p for p in chosen if p.selection_reason != active.RANDOM_REASON])
                rows.append((np.mean(right), rate(candidates)[0], random_slice[0], by_model[0], random_slice[1],
                             by_model[1]))
            m = np.nanmean(np.array(rows), axis=0)
            print(f"{rm_noise:>8.1f} {m[0]:>11.3f} {gap:>8.1f} {m[1]:>22.3f} {m[2]:>13.3f} {m[3]:>20.3f} "
                  f"{m[4]:>11.0f} / {m[5]:<9.0f}")
    print("(noise and gap in units of the spread between two lists of one context; RM accuracy: the ensemble's\n"
          " mean on every new-parent pair against the truth; ties count one half)\n")


def rm_accuracy_sample_figures(n_contexts: int = 400, lists: int = 5, budget: int = 200, repeats: int = 16) -> None:
    """A reward model's held-out accuracy against the crowd, by how the held-out pairs were chosen.

    A synthetic round as in 2b (lists of one context differ by the unit spread): the previous reward model
    (3 members, truth + noise 1.0) chooses 200 pairs with the default shares; the crowd labels each three
    times (majority, ties dropped); the next reward model (truth + independent noise) is scored on them, as
    the product scores a reward model on its held-out split.
    """
    print(f"== 2c. the next reward model's accuracy against the crowd's majority, by how the pairs were chosen "
          f"({n_contexts} contexts x {lists} lists, {budget} pairs chosen by its predecessor, {repeats} seeds)")
    print(f"{'next RM noise':>13} {'every pair':>11} {'random slice':>13} {'chosen by the model':>20}")
    for next_noise in (0.25, 0.5, 1.0):
        rows = []
        for seed in range(repeats):
            rng = np.random.default_rng(seed)
            crowd = simulate.make_crowd(20, "default", seed=seed)
            level = rng.normal(0.0, 1.0, n_contexts)
            utility = {f"c{c:04d}_{k}": float(level[c] + rng.normal(0.0, math.sqrt(0.5)))
                       for c in range(n_contexts) for k in range(lists)}
            by_context = {f"c{c:04d}": [f"c{c:04d}_{k}" for k in range(lists)] for c in range(n_contexts)}
            gen_ids = sorted(utility)
            truth = np.array([utility[g] for g in gen_ids])
            previous = truth + rng.normal(0.0, 1.0, (3, len(gen_ids)))
            nxt = dict(zip(gen_ids, truth + rng.normal(0.0, next_noise, len(gen_ids))))
            candidates = active.candidate_pairs(by_context)
            chosen = active.select_pairs(candidates, previous, gen_ids, budget, seed=seed)

            pool = [candidates[i] for i in rng.choice(len(candidates), size=budget, replace=False)]
            random_slice = [p for p in chosen if p.selection_reason == active.RANDOM_REASON]
            by_model = [p for p in chosen if p.selection_reason != active.RANDOM_REASON]
            rows.append(tuple(_majority_agreement(pairs, crowd, utility, nxt, rng)
                              for pairs in (pool, random_slice, by_model)))
        m = np.nanmean(np.array(rows), axis=0)
        print(f"{next_noise:>13.2f} {m[0]:>11.3f} {m[1]:>13.3f} {m[2]:>20.3f}")
    print("(every pair: 200 drawn from the whole pool; the random slice is 15% of the chosen pairs)\n")


def _majority_agreement(pairs: Sequence[Any], crowd: Sequence[Any], utility: dict[str, float],
                        scores: dict[str, float], rng: np.random.Generator) -> float:
    """Share of ``pairs`` whose crowd majority (3 labels, sides on a coin; ties left out) the scores agree with."""
    hits = []
    for p in pairs:
        votes = []
        for _ in range(3):
            a_left = rng.random() < 0.5
            left, right = (p.gen_a, p.gen_b) if a_left else (p.gen_b, p.gen_a)
            side = simulate.judge(crowd[int(rng.integers(0, len(crowd)))], utility[left], utility[right], rng).side
            if side in ("left", "right"):
                votes.append("A" if (side == "left") == a_left else "B")
        if votes.count("A") == votes.count("B"):
            continue
        hits.append(float((scores[p.gen_a] > scores[p.gen_b]) == (votes.count("A") > votes.count("B"))))
    return float(np.mean(hits)) if hits else float("nan")


def service_figures() -> None:
    print("== 3. simulated crowd labelling through rlhf.annotation (seeded store, 60 pairs x overlap 3)")
    sys.path.insert(0, str(ROOT / "tests"))
    from seed import seed_store  # tests/seed.py: a small shop with pairs, through the repositories

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(store={"data_dir": Path(tmp) / "data"})
        store = Store.from_settings(settings)
        seed_store(store, n_pairs=60, overlap_target=3, seed=1)
        crowd = simulate.make_crowd(20, "default", seed=0)
        simulate.ensure_accounts(store, crowd)

        def utility(context, items):
            return float(sum(int(i[-4:]) for i in items)) / 100.0

        report = simulate.run_simulation(store, crowd, utility, 180, settings=settings, seed=0)
        s = report.summary()
        with store.transaction() as con:
            from storage import queue as queue_repo

            labels = queue_repo.current_labels(con)
        print(f"{s['labels']} labels in {s['wall_s']} s ({s['labels'] / max(s['wall_s'], 1e-9):.1f} labels/s); "
              f"service calls p50 {s['service_p50_ms']} ms, p95 {s['service_p95_ms']} ms; choices {s['choices']}")
        per_pair = [simulate.observed_agreement([lab for lab in labels if lab.pair_id == pid])
                    for pid in sorted({lab.pair_id for lab in labels})]
        est = evaluation.bootstrap_ci(per_pair, seed=0)
        print(f"observed raw agreement in the store: {simulate.observed_agreement(labels):.3f} "
              f"(per-pair bootstrap 95% CI {est.lo:.3f}-{est.hi:.3f}, {est.n} pairs)\n")


def uci_figures(cut: str, max_contexts: int) -> None:
    print(f"== 4. offline evaluation on UCI Online Retail, cut {cut}, N = 5")
    from rlhf.importing import import_online_retail
    from storage import contexts as contexts_repo
    from storage.records import Context

    data = ROOT.parent / "shared" / "data" / "uci_online_retail"
    if not data.is_dir():
        print(f"skipped: {data} not found\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(store={"data_dir": Path(tmp) / "data"})
        store = Store.from_settings(settings)
        t0 = time.perf_counter()
        rep = import_online_retail(store, data, settings=settings)
        print(f"import: {rep.items} items, {rep.interactions} purchases in {time.perf_counter() - t0:.1f} s")
        cut_ts = pd.Timestamp(cut)
        with store.transaction() as con:
            from storage import evaluation_queries as q

            before = q.interactions_before(con, cut_ts)
            after = con.execute("SELECT DISTINCT shopper_id FROM interactions WHERE ts >= ?", [cut_ts]).df()
        # A simple context per shopper active on both sides of the cut (stand-in for the contexts module).
        hist = before.sort_values("ts").drop_duplicates(["shopper_id", "item_id"], keep="last")
        counts = hist.groupby("shopper_id").size()
        eligible = sorted(set(counts[counts >= 2].index) & set(after["shopper_id"]))
        rng = np.random.default_rng(0)
        chosen = sorted(rng.choice(eligible, size=min(max_contexts, len(eligible)), replace=False))
        contexts = []
        for sid in chosen:
            items = hist[hist["shopper_id"] == sid]["item_id"].tolist()[-20:]
            contexts.append(Context(f"ctx_{sid}", sid, cut_ts.to_pydatetime(), items, [], "bench", "heldout"))
        with store.transaction() as con:
            contexts_repo.insert_contexts(con, contexts)
        t0 = time.perf_counter()
        truth = evaluation.load_ground_truth(store, split="heldout", list_length=5, events=["purchase"])
        t_load = time.perf_counter() - t0
        catalogue = sorted(truth.catalogue)
        random_lists = {c: [list(rng.choice(catalogue, 5, replace=False))] for c in truth.contexts}
        floor = evaluation.PolicyLists("random-catalogue", random_lists, kind="baseline")
        t0 = time.perf_counter()
        table = evaluation.evaluation_table([floor], truth, samples=1000)
        t_eval = time.perf_counter() - t0
        from rlhf.cli.loop import format_table

        print(f"{len(truth.contexts)} held-out contexts; targets: median "
              f"{np.median([len(v) for v in truth.future.values()]):.0f} distinct items bought after the cut; "
              f"catalogue {len(truth.catalogue)} items")
        print(format_table(table, 5))
        print(f"time: load ground truth {t_load:.2f} s, baselines + metrics + bootstrap {t_eval:.2f} s\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-uci", action="store_true")
    parser.add_argument("--cut", default="2011-09-01")
    parser.add_argument("--contexts", type=int, default=1000)
    args = parser.parse_args()
    crowd_figures()
    active_figures()
    win_rate_sample_figures()
    rm_accuracy_sample_figures()
    service_figures()
    if not args.skip_uci:
        uci_figures(args.cut, args.contexts)


if __name__ == "__main__":
    main()
