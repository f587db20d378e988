"""Sections 2a-2b on UCI without a loop: what lists that need no model reach (``ceiling``) and what the small-data
reward model learns from crowd labels for each input it can read (``rm-inputs``)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loop_sections.shared import PROBE_REASONS, differs, uci_store
from rlhf.settings import load_settings, with_values
from storage import Store


def uci_ceiling(args) -> dict:
    """NDCG@N on UCI's held-out shoppers of lists that need no model (the candidates in the order they are
    shown, and the best N candidates by what the shopper really bought later: the most any policy that
    chooses among the candidates can reach), next to the product's baselines (random candidates among
    them), for each ``--retrievals`` (co-purchase similarity : candidate order). With ``--zero-shot``
    the real policy also writes one list per held-out shopper in each (same seed), and where its picks
    sit among the candidates is printed:
    how much of what a zero-shot policy scores is the order it was shown. Tells how far the loop's policy
    can go before any training is run."""
    from rlhf.evaluation import PolicyLists, evaluation_table, load_ground_truth, policy_lists_from_store
    from rlhf.generate import generate_for_store

    data = Path(args.uci_dir)
    n = args.list_length
    print(f"== 2a. UCI: NDCG@{n} reachable by choosing among {args.candidates} candidates "
          f"(cut {args.cut}, history cap {args.history_cap}, {args.max_contexts} contexts)")
    if not data.is_dir():
        print("skipped: data not found\n")
        return {}
    out: dict = {}
    for order in [o.strip() for o in args.retrievals.split(",") if o.strip()]:
        similarity, _, candidate_order = order.partition(":")
        work = Path(tempfile.mkdtemp(prefix="loop_ceiling_"))
        store, settings = uci_store(args, work, {"copurchase_similarity": similarity,
                                                   "candidate_order": candidate_order})
        r = settings.rounds
        truth = load_ground_truth(store, split="heldout", list_length=n, events=r.eval_events or None)
        shown, oracle = {}, {}
        for cid, context in truth.contexts.items():
            cands = list(context.candidates)
            bought = truth.future.get(cid, set())
            shown[cid] = [cands[:n]]
            oracle[cid] = [sorted(cands, key=lambda i: (i not in bought, cands.index(i)))[:n]]
        # Random candidates are one of the product's own baselines (rlhf.evaluation.RANDOM_CANDIDATES).
        lists = [PolicyLists(f"the first {n} candidates as shown", shown, kind="diagnostic"),
                 PolicyLists("best candidates by later purchases (ceiling)", oracle, kind="diagnostic")]
        positions: list[int] = []
        if args.zero_shot:
            t0 = time.perf_counter()
            run = generate_for_store(store, settings, split="heldout", n_contexts=len(truth.contexts),
                                     samples_per_context=1, seed=args.seed, progress=False)
            zero = policy_lists_from_store(store, run.policy_id, list(truth.contexts))
            lists.append(PolicyLists("zero-shot policy", zero.lists, zero.valid))
            for cid, picked in zero.lists.items():
                cands = list(truth.contexts[cid].candidates)
                positions += [cands.index(i) + 1 for items in picked for i in items if i in cands]
            print(f"[{order}] zero-shot: {sum(len(v) for v in zero.lists.values())} lists in "
                  f"{time.perf_counter() - t0:.0f} s")
        table = evaluation_table(lists, truth, baselines=True, samples=r.eval_bootstrap_samples,
                                 seed=r.eval_seed, exclude_history=r.eval_exclude_history)
        later = sum(len(v) for v in truth.future.values())
        rebought = sum(len(v & truth.owned.get(c, set())) for c, v in truth.future.items())
        print(f"[{order}] {len(truth.contexts)} held-out shoppers, "
              f"{int(table['contexts_with_targets'].iloc[0])} with later purchases; of the {later} items "
              f"bought later, {rebought} ({rebought / max(later, 1):.0%}) were bought before too: no "
              "candidate (and no baseline) may list them")
        for rec in table.to_dict(orient="records"):
            print(f"  {rec['policy']:<48} NDCG@{n} {rec[f'ndcg@{n}']:.3f} [{rec['ndcg_lo']:.3f}, "
                  f"{rec['ndcg_hi']:.3f}]  HR@{n} {rec[f'hr@{n}']:.3f}")
        if positions:
            hist = np.bincount(positions, minlength=args.candidates + 1)[1:]
            print(f"  zero-shot picks by position 1..{args.candidates}: {hist.tolist()}; "
                  f"{np.mean(np.array(positions) <= n):.1%} among the first {n} (uniform: {n / args.candidates:.1%})")
        out[order] = {"table": table.to_dict(orient="records"), "positions": positions}
        shutil.rmtree(work, ignore_errors=True)
    print()
    return out


def reward_inputs_section(args) -> dict:
    """Can the small-data reward model learn what matters? Random lists of candidates per context, crowd
    labels from the truth (``--rm-data uci``: the shopper's LATER purchases, PurchaseUtility, the UCI
    loop's annotators; ``demo``: the demo shop's hidden preferences), the probe's head fitted on the lists
    embedded in each input the product knows (``policy``: the raw ``C07 | reason`` lines; ``resolved``:
    each id followed by its title, category and price), each alone and with the match features
    (rlhf.reward.match: retrieval rank, similarity to the history; the product's default is
    ``resolved + match``), plus benchmark-only variants that the probe does not have: both embeddings side by
    side, the resolved list times the shopper's history, and the match features without an embedding.
    Scored on held-out shoppers' pairs by the TRUE order. Prints accuracy by training labels."""
    from rlhf import simulate as sim
    from rlhf.demo import build_demo, utility_fn_for_store
    from rlhf.models import get_tokenizer
    from rlhf.prompts import build_context_views, format_list_line, render_prompt
    from rlhf.reward.backbones import resolve_backbone
    from rlhf.reward.inputs import reward_inputs
    from rlhf.reward.match import match_features
    from rlhf.reward.probe import fit_bradley_terry, new_probe_scorer
    from storage import catalog as catalog_repo
    from storage import contexts as contexts_repo

    data = Path(args.uci_dir)
    where = (f"UCI, {args.max_contexts} contexts, {args.candidates} candidates, category_credit {args.category_credit}"
             if args.rm_data == "uci" else f"demo shop, {args.le_shoppers} shoppers, {args.le_items} items")
    print(f"== 2b. what the small-data reward model can learn ({where}; {args.lists_per_context} random lists per context)")
    if args.rm_data == "uci" and not data.is_dir():
        print("skipped: data not found\n")
        return {}
    work = Path(tempfile.mkdtemp(prefix="loop_rm_inputs_"))
    if args.rm_data == "uci":
        store, settings = uci_store(args, work)
    else:
        settings = load_settings(store={"data_dir": work / "data"},
                                 demo={"n_items": args.le_items, "n_shoppers": args.le_shoppers, "seed": args.seed},
                                 generation={"list_length": args.list_length})
        store = Store.from_settings(settings)
        build_demo(store, settings, with_accounts=False)
    with store.transaction() as con:
        contexts = contexts_repo.list_contexts(con)
    views = {v.context_id: v for v in build_context_views(store, contexts, attributes=settings.contexts.item_attributes)}
    tokenizer = get_tokenizer(settings.model.policy)
    utility = (sim.PurchaseUtility.from_store(store, contexts, events=["purchase"], category_credit=args.category_credit)
               if args.rm_data == "uci" else utility_fn_for_store(store))
    rng = np.random.default_rng(args.seed)
    n = args.list_length
    lists: dict[str, tuple[str, list[str]]] = {}
    raw, resolved, history, prompt_of = {}, {}, {}, {}
    for c in contexts:
        view = views[c.context_id]
        prompt = prompt_of[c.context_id] = render_prompt(tokenizer, view, n, settings.generation.max_prompt_tokens)
        history[c.context_id] = reward_inputs(prompt, "", "resolved")[0]
        for k in range(args.lists_per_context):
            items = list(rng.choice(view.candidate_ids, size=n, replace=False))
            g = f"{c.context_id}#{k}"
            lists[g] = (c.context_id, items)
            raw[g] = "\n".join(format_list_line(r + 1, view.item_to_short[i], PROBE_REASONS[int(rng.integers(5))])
                               for r, i in enumerate(items))
            resolved[g] = reward_inputs(prompt, raw[g], "resolved")[1]
    by_ctx = {c.context_id: c for c in contexts}
    true_u = {g: float(utility(by_ctx[cid], its)) for g, (cid, its) in lists.items()}
    scorer = new_probe_scorer(settings, resolve_backbone(settings.reward_model.probe_backbone, settings))
    gids = sorted(lists)
    t0 = time.perf_counter()

    def embed(texts: list[str]) -> np.ndarray:
        return scorer.embed_ids(scorer.encode([""] * len(texts), texts), batch_size=64)

    e_raw, e_res = embed([raw[g] for g in gids]), embed([resolved[g] for g in gids])
    ctx_ids = sorted(history)
    e_hist = dict(zip(ctx_ids, embed([history[c] for c in ctx_ids])))
    print(f"embedded {len(gids)} lists twice and {len(ctx_ids)} histories in {time.perf_counter() - t0:.0f} s")
    e_h = np.array([e_hist[lists[g][0]] for g in gids])
    # The match features (rlhf.reward.match) of each list for its context's prompt, by the same encoder.
    match = match_features([prompt_of[lists[g][0]] for g in gids], [raw[g] for g in gids], scorer.embed_lines)
    # How many distinct shoppers bought each listed item before the contexts' cut (DCG-weighted mean of its log,
    # scaled to [0, 1]): what the popularity baseline ranks by, and nothing the prompt shows.
    with store.transaction() as con:
        cut = min(c.as_of for c in contexts)
        before = catalog_repo.interactions_frame(con, before=cut, events=["purchase"])
    log_buyers = np.log1p(before.groupby("item_id")["shopper_id"].nunique())
    log_buyers = log_buyers / max(float(log_buyers.max()), 1e-9)
    weights = 1.0 / np.log2(np.arange(n) + 2.0)
    popularity = np.array([[float(np.dot(weights, [log_buyers.get(i, 0.0) for i in lists[g][1]]) / weights.sum())]
                           for g in gids])
    feats = {"policy": e_raw, "resolved": e_res,
             "policy + resolved (not in product)": np.hstack([e_raw, e_res]),
             "resolved x history (not in product)": np.hstack([e_res, e_res * e_h * np.sqrt(e_res.shape[1])]),
             "match features alone (not in product)": match,
             "rank alone (not in product)": match[:, :1],
             "similarities alone (not in product)": match[:, 1:],
             "policy + match": np.hstack([e_raw, match]),
             "resolved + match": np.hstack([e_res, match]),
             "popularity alone (not in product)": popularity,
             "match + popularity (not in product)": np.hstack([match, popularity]),
             "resolved + match + popularity (not in product)": np.hstack([e_res, match, popularity])}
    default = settings.reward_model.probe_input_format + (" + match" if settings.reward_model.probe_match_features else "")
    row = {g: i for i, g in enumerate(gids)}
    split = {c.context_id: c.split for c in contexts}

    def pairs(heldout: bool) -> list[tuple[str, str]]:
        out = []
        for cid in ctx_ids:
            if (split[cid] == "heldout") != heldout:
                continue
            gs = [f"{cid}#{k}" for k in range(args.lists_per_context)]
            out += [(gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs))]
        return out

    train_pool = pairs(False)
    test = [(a, b) for a, b in pairs(True) if differs(true_u[a], true_u[b])]
    test = [test[i] for i in rng.permutation(len(test))[: args.test_pairs]]
    informative = np.mean([differs(true_u[a], true_u[b]) for a, b in train_pool])
    crowd = sim.make_crowd(args.crowd_size, "default", seed=args.seed)
    scale = sim.utility_scale([true_u[a] - true_u[b] for a, b in train_pool])  # the whole pool's, as labelled
    print(f"train pool {len(train_pool)} pairs ({informative:.0%} with a true difference), test {len(test)} "
          f"held-out pairs with one; crowd {len(crowd)}, scale {scale:.3f}")
    if args.rm_pool == "differ":  # an oracle no product has: ask only where one list is truly better
        train_pool = [(a, b) for a, b in train_pool if differs(true_u[a], true_u[b])]
        print(f"asking only the {len(train_pool)} pairs with a true difference (oracle; the crowd's scale unchanged)")
    sizes = [int(x) for x in args.rm_sizes.split(",")]
    order = rng.permutation(len(train_pool))
    labelled: list[tuple[str, str]] = []  # (winner, loser), crowd-labelled in pool order
    rng_l = np.random.default_rng(args.seed + 1)
    asked = 0
    results: dict[str, dict[int, float]] = {name: {} for name in feats}
    trl_sizes = [int(x) for x in args.rm_trl_sizes.split(",") if x]
    # The full run's reward model above probe_max_examples labels (section 3: --rm-backbone, --rm-epochs, ...).
    trl_settings = with_values(settings, "reward_model", backbone=args.rm_backbone, epochs=args.rm_epochs,
                               max_length=args.rm_max_length, learning_rate=args.rm_lr, seed=args.seed)
    trl_name = f"TRL + LoRA on {args.rm_backbone}, end to end (section 3's, from 2,000 labels)"
    if trl_sizes:
        results[trl_name] = {}
    for size in sorted(set(sizes) | set(trl_sizes)):
        while asked < min(size, len(order)):
            a, b = train_pool[order[asked]]
            asked += 1
            who = crowd[int(rng_l.integers(0, len(crowd)))]
            left_is_a = bool(rng_l.random() < 0.5)
            ul, ur = (true_u[a], true_u[b]) if left_is_a else (true_u[b], true_u[a])
            choice = sim.canonical_choice(sim.judge(who, ul, ur, rng_l, scale=scale, floor=getattr(utility, "floor", None)), left_is_a)
            if choice in ("A", "B"):
                labelled.append((a, b) if choice == "A" else (b, a))
        if size in trl_sizes:
            results[trl_name][size] = _trl_accuracy(labelled, test, raw, lists, prompt_of, true_u, trl_settings,
                                                    work / f"trl_{size}")
        if size not in sizes:
            continue
        for name, x in feats.items():
            diffs = np.array([x[row[w]] - x[row[lo]] for w, lo in labelled])
            weight, _ = fit_bradley_terry(diffs, l2=settings.reward_model.probe_l2)
            score = x @ weight
            results[name][size] = float(np.mean([(score[row[a]] > score[row[b]]) == (true_u[a] > true_u[b])
                                                 for a, b in test]))
    shown = sorted(set(sizes) | set(trl_sizes))
    print("held-out accuracy (true order) by pairs asked: " + "  ".join(f"{s:>6}" for s in shown))
    for name, accs in results.items():
        label = f"{name} (product default)" if name == default else name
        print(f"  {label:<38} " + "  ".join(f"{accs[s]:6.3f}" if s in accs else f"{'-':>6}" for s in shown))
    print(f"  (s.e. of one accuracy ~{np.sqrt(0.25 / max(1, len(test))):.3f})\n")
    shutil.rmtree(work, ignore_errors=True)
    return {"data": args.rm_data, "accuracy": results, "test_pairs": len(test), "train_pool": len(train_pool),
            "pool": args.rm_pool}


def _trl_accuracy(labelled: list[tuple[str, str]], test: list[tuple[str, str]], raw: dict[str, str],
                  lists: dict[str, tuple[str, list[str]]], prompt_of: dict[str, str], true_u: dict[str, float],
                  settings, output_dir: Path) -> float:
    """Held-out accuracy (true order) of the product's TRL + LoRA reward model trained end to end on the
    crowd's (winner, loser) pairs, each list with its context's policy prompt, as a round above
    ``reward_model.probe_max_examples`` labels trains it (``settings.reward_model`` says how)."""
    from rlhf.reward.train import train_reward_model

    frame = pd.DataFrame({"prompt": [prompt_of[lists[w][0]] for w, _ in labelled],
                          "chosen": [raw[w] for w, _ in labelled], "rejected": [raw[lo] for _, lo in labelled]})
    t0 = time.perf_counter()
    result = train_reward_model(frame, settings=settings, output_dir=output_dir, method="lora", progress=False)
    r_a, r_b = result.scorer.score_pairs([prompt_of[lists[a][0]] for a, _ in test], [raw[a] for a, _ in test],
                                         [raw[b] for _, b in test], batch_size=32, progress=False)
    accuracy = float(np.mean([(ra > rb) == (true_u[a] > true_u[b]) for (a, b), ra, rb in zip(test, r_a, r_b)]))
    print(f"  TRL + LoRA on {len(frame)} labelled pairs: trained at {result.pairs_per_second:.2f} pairs/s, "
          f"{time.perf_counter() - t0:.0f} s with scoring; held-out accuracy {accuracy:.3f}", flush=True)
    return accuracy


def summarise_rm_inputs(runs: list[dict]) -> None:
    """Mean held-out accuracy of each reward-model input over rm-inputs runs (one per seed), with the
    spread of the seeds, for the inputs every run has, at each size any of them was scored at."""
    # Runs before the match features named the default input "policy (product default)".
    runs = [{**r, "accuracy": {k.replace(" (product default)", ""): v for k, v in r["accuracy"].items()}} for r in runs]
    names = [k for k in runs[0]["accuracy"] if all(k in r["accuracy"] for r in runs)]
    # Every size any input was scored at (the TRL model only at --rm-trl-sizes): "-" where some run lacks it.
    sizes = sorted({s for k in names for s in runs[0]["accuracy"][k]}, key=int)
    print(f"== rm-inputs over {len(runs)} seeds ({', '.join(sorted({r['data'] for r in runs}))}): mean held-out "
          "accuracy (true order) by pairs asked [min-max over seeds]")
    print(f"{'':<40}" + "".join(f"{s:>20}" for s in sizes))
    for name in names:
        cells = []
        for size in sizes:
            v = [r["accuracy"][name].get(size) for r in runs]
            cells.append("-" if None in v else f"{np.mean(v):.3f} [{min(v):.3f}-{max(v):.3f}]")
        print(f"{name:<40}" + "".join(f"{c:>20}" for c in cells))
    print()
