"""Section 2, the loop on UCI: rounds run as background processes while the simulated crowd labels (``uci``),
and an earlier run's policies on more held-out shoppers (``uci-more``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from loop_sections.shared import SeededCrowd, earlier_run, pct
from rlhf.settings import load_settings
from storage import Store


def _tiny_policy(folder: Path) -> str:
    """A 2-layer Llama (hidden 64) with SmolLM2's real tokenizer, saved as a local model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.models import load_tokenizer

    if (folder / "config.json").is_file():
        return str(folder)
    tokenizer = load_tokenizer(load_settings().model.policy)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def uci(args) -> dict:
    from rlhf import rounds as R
    from rlhf import simulate as sim
    from rlhf.contexts import build_contexts
    from rlhf.importing import import_online_retail
    from rlhf.pairs import bootstrap_queue
    from storage import contexts as contexts_repo

    data = Path(args.uci_dir)
    print(f"== 2. the loop on UCI Online Retail ({data}), cut {args.cut}, {args.rounds} rounds, policy "
          f"{'tiny (see below)' if args.tiny_policy else args.policy or 'default SmolLM2-135M'}, "
          f"category_credit {args.category_credit}, crowd reason_penalty {args.reason_penalty}, "
          f"probe_reason_features {args.reason_features}, ppo own_reasons_count_copies {args.ppo_copies}, "
          f"structure_weight {args.structure_weight or 'default'}")
    if not data.is_dir():
        print("skipped: data not found\n")
        return {}
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="loop_bench_"))
    overrides = {
        "store": {"data_dir": work / "data", "lock_timeout_s": 60.0},
        "contexts": {"n_candidates": args.candidates, "history_cap": args.history_cap, "heldout_fraction": 0.3},
        "generation": {"list_length": args.list_length, "samples_per_context": 2, "max_new_tokens": args.max_new_tokens,
                    "batch_size": 8},
        "reward_model": {"method": args.rm_method, "backbone": args.rm_backbone, "epochs": args.rm_epochs,
                         "max_length": args.rm_max_length,
                      "learning_rate": args.rm_lr, "min_examples": 4, "logging_steps": 5},
        "ppo": {"steps": args.ppo_steps, "batch_size": args.ppo_batch, "mini_batch_size": max(1, args.ppo_batch // 2),
             "ppo_epochs": 2, "max_new_tokens": args.max_new_tokens, "checkpoint_every": 0},
        "rounds": {"new_pairs": args.new_pairs, "contexts_per_round": args.pool_contexts,
                "eval_contexts": args.eval_contexts, "ensemble_size": args.ensemble, "min_labels": 8,
                "eval_bootstrap_samples": 1000},
        "simulation": {"category_credit": args.category_credit, "reason_penalty": args.reason_penalty},
        "queue": {"overlap_target": args.overlap, "gold_rate": 0.0, "reshow_rate": 0.0},
    }
    if args.reason_features:
        overrides["reward_model"]["probe_reason_features"] = True
    if args.structure_weight is not None:
        overrides["ppo"]["structure_weight"] = args.structure_weight
    if args.ppo_copies:
        overrides["ppo"]["own_reasons_count_copies"] = True
    if args.tiny_policy:
        args.policy = _tiny_policy(work / "tiny_policy")
        print(f"policy: a tiny random-init Llama (2 layers, hidden 64) with SmolLM2's tokenizer at {args.policy} "
              "(machinery, wall times and latency only: its NDCG says nothing about learning)")
    if args.policy:
        overrides["model"] = {"policy": args.policy}
    settings = load_settings(**overrides)
    store = Store.from_settings(settings)
    t0 = time.perf_counter()
    rep = import_online_retail(store, data, settings=settings)
    print(f"import: {rep.items} items, {rep.interactions} interactions in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    built = build_contexts(store, settings=settings, as_of=args.cut, limit=args.max_contexts)
    print(f"contexts at cut {args.cut}: {built.built} in {time.perf_counter() - t0:.1f} s")
    with store.transaction() as con:
        contexts = contexts_repo.list_contexts(con)
    utility = sim.PurchaseUtility.from_store(store, contexts, events=["purchase"],
                                             category_credit=args.category_credit)
    crowd = sim.make_crowd(args.crowd_size, "default", seed=args.seed)
    sim.ensure_accounts(store, crowd)
    t0 = time.perf_counter()
    bootstrap_queue(store, settings, args.initial_pairs, progress=False)
    print(f"zero-shot queue: {args.initial_pairs} pairs sampled in {time.perf_counter() - t0:.1f} s")
    labelling = SeededCrowd(store, settings, crowd, utility, args.seed)
    quiet, quiet_ms = labelling.label(args.labels_per_round)
    print(f"labels before round 1: {quiet}; service latency with NO round running: "
          f"p50 {pct(quiet_ms, 50):.1f} ms, p95 {pct(quiet_ms, 95):.1f} ms ({len(quiet_ms)} calls)")
    results = []
    for k in range(1, args.rounds + 1):
        round_id, pid, _ = R.launch_round(settings)
        t0 = time.perf_counter()
        # The round trains on the labels stored when it takes its snapshot. The crowd labels after that, so
        # that the labels each round sees do not depend on timing and one seed repeats the run.
        while R.pid_alive(pid) and "snapshot" not in R.round_status(store, round_id)["completed_stages"]:
            time.sleep(0.2)
        lat: list[float] = []
        labels = 0
        while R.pid_alive(pid):
            given, service_ms = labelling.label(5)
            lat += service_ms
            labels += given
            if given == 0:
                time.sleep(1.0)
        wall = time.perf_counter() - t0
        status = R.round_status(store, round_id)
        print(f"-- round {k} ({round_id}): {status['status']} in {wall:.0f} s; during it the crowd submitted "
              f"{labels} labels, service latency p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms "
              f"({len(lat)} calls)")
        if status["status"] != "done":
            print(status["error"])
            print(R.log_tail(Path(status["folder"]), 30))
            break
        print("   stage seconds: " + ", ".join(f"{s} {v:.1f}" for s, v in status["timings"].items()))
        ev = json.loads((Path(status["folder"]) / "evaluation.json").read_text())
        table = pd.DataFrame(ev.get("table", []))
        n = args.list_length
        if not table.empty:
            cols = ["policy", "contexts_with_targets", f"ndcg@{n}", "ndcg_lo", "ndcg_hi", f"hr@{n}", "hr_lo", "hr_hi",
                    "validity", "item_validity", "diversity", "reasons_grounded", "reasons_lo", "reasons_hi"]
            print(table[[c for c in cols if c in table]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        for measure, key in (("NDCG", "ndcg_difference"), ("reasons grounded", "reasons_difference")):
            for other, d in (ev.get(key) or {}).items():
                if other in (ev.get("zero_shot_policy_id"), ev.get("previous_policy_id")):
                    print(f"   {measure}, new minus {other}, paired over {d['n']} shoppers: "
                          f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
        m = status["metrics"]
        print(f"   RM held-out accuracy {m.get('rm_heldout_accuracy')}, RM win rate vs previous "
              f"{m.get('rm_win_rate')}, vs zero-shot {m.get('rm_win_rate_vs_zero_shot')}, "
              f"PPO reward {m.get('ppo_reward')}, KL {m.get('ppo_kl')}, "
              f"pairs enqueued {m.get('pairs_enqueued')}")
        results.append({"round": k, "round_id": round_id, "wall_s": wall, "timings": status["timings"],
                        "metrics": m, "table": ev.get("table"), "zero_shot_policy_id": ev.get("zero_shot_policy_id"),
                        "latency_ms": {"p50": pct(lat, 50),
                                                                               "p95": pct(lat, 95)}})
        more, _ = labelling.label(args.labels_per_round)
        print(f"   labels after round {k}: +{more}")
    if results:
        last = results[-1]["table"] or []
        zero = next((r for r in last if r["policy"] == results[-1]["zero_shot_policy_id"]), None)
        final = next((r for r in last if r["policy"] == results[-1]["metrics"].get("policy_id")), None) or \
            (last[0] if last else None)
        pop = next((r for r in last if "popularity" in r["policy"]), None)
        n = args.list_length
        if zero and final and pop:
            print(f"round {len(results)} NDCG@{n} {final[f'ndcg@{n}']:.4f} [{final['ndcg_lo']:.4f}, "
                  f"{final['ndcg_hi']:.4f}] vs zero-shot {zero[f'ndcg@{n}']:.4f} [{zero['ndcg_lo']:.4f}, "
                  f"{zero['ndcg_hi']:.4f}] (ratio {final[f'ndcg@{n}'] / max(zero[f'ndcg@{n}'], 1e-12):.2f}, goal >= 1.2) "
                  f"vs popularity {pop[f'ndcg@{n}']:.4f} [{pop['ndcg_lo']:.4f}, {pop['ndcg_hi']:.4f}]; "
                  f"round {len(results)}'s RM win rate over zero-shot "
                  f"{results[-1]['metrics'].get('rm_win_rate_vs_zero_shot')}")
    print(f"work folder: {work}\n")
    return {"rounds": results}


def uci_more_shoppers(args) -> dict:
    """An earlier ``--section uci`` run's last round and zero-shot policy on MORE held-out shoppers: contexts
    for shoppers the run never built, at its cut and with the settings its last round recorded; lists from
    both policies for the first ``--more-shoppers`` new held-out shoppers with purchases after the cut
    (the only ones NDCG counts), then the product's evaluation over every held-out shopper. The earlier
    run's folder (``--from-workdir``) is copied to ``--workdir`` and never written."""
    from rlhf.cli.loop import format_table
    from rlhf.contexts import build_contexts
    from rlhf.evaluation import (
        compare_policies,
        load_ground_truth,
        paired_ndcg_differences,
        policy_lists_from_store,
    )
    from rlhf.generate import generate_for_store
    from storage import contexts as contexts_repo

    src, work = Path(args.from_workdir), Path(args.workdir)
    if not work.exists():
        shutil.copytree(src, work)
    store, settings, done = earlier_run(str(work))
    last = done[-1]
    with store.transaction() as con:
        cuts = {c.as_of for c in contexts_repo.list_contexts(con)}
    report = json.loads((Path(last.folder) / "evaluation.json").read_text())
    policy, zero = last.policy_id, report["zero_shot_policy_id"]
    (cut,) = cuts
    n = settings.generation.list_length
    before = set(load_ground_truth(store, split="heldout", list_length=n).contexts)
    t0 = time.perf_counter()
    built = build_contexts(store, settings=settings, as_of=cut)
    truth = load_ground_truth(store, split="heldout", list_length=n, events=settings.rounds.eval_events or None)
    fresh = sorted((c for c in truth.contexts if c not in before and truth.future.get(c)),
                   key=lambda c: hashlib.sha1(c.encode()).hexdigest())[: args.more_shoppers]
    print(f"== 2o. {last.round_id}'s policy and the zero-shot policy on more held-out shoppers (cut {cut})\n"
          f"contexts built: {built.built} in {time.perf_counter() - t0:.0f} s; held-out contexts before "
          f"{len(before)}, new held-out shoppers with purchases after the cut: {len(fresh)} asked for")
    for pid in (policy, zero):
        run = generate_for_store(store, settings, pid, context_ids=fresh, progress=True)
        print(f"{pid}: {run.n_generations} lists on {run.n_contexts} contexts, {run.validity:.0%} valid, "
              f"{run.seconds:.0f} s")
    table, differences, _ = compare_policies(store, [policy, zero], settings=settings, split="heldout")
    print(format_table(table, n))
    out = {"round_id": last.round_id, "policy": policy, "zero_shot": zero, "new_contexts": fresh,
           "table": table.to_dict(orient="records"), "differences": {}}
    for other, est in differences.items():
        print(f"NDCG@{n} {policy} minus {other}, paired over {est.n} shoppers: "
              f"{est.mean:+.4f} [{est.lo:+.4f}, {est.hi:+.4f}]")
        out["differences"][other] = {"mean": est.mean, "lo": est.lo, "hi": est.hi, "n": est.n}
    rows = table.set_index("policy")
    print(f"NDCG@{n} ratio {policy} / zero-shot: {rows.loc[policy, f'ndcg@{n}'] / rows.loc[zero, f'ndcg@{n}']:.2f}")
    # The new shoppers alone: a sample independent of the one the earlier run's figure came from.
    truth_new = load_ground_truth(store, split="heldout", context_ids=fresh, list_length=n,
                                  events=settings.rounds.eval_events or None)
    lists = {pid: policy_lists_from_store(store, pid, fresh) for pid in (policy, zero)}
    r = settings.rounds
    est = paired_ndcg_differences(lists, truth_new, [policy, zero], samples=r.eval_bootstrap_samples,
                                  seed=r.eval_seed)[zero]
    print(f"NDCG@{n} {policy} minus zero-shot on the NEW shoppers only, paired over {est.n}: "
          f"{est.mean:+.4f} [{est.lo:+.4f}, {est.hi:+.4f}]\n")
    out["new_only"] = {"mean": est.mean, "lo": est.lo, "hi": est.hi, "n": est.n}
    return out
