"""The loop's measures (issue 7): label efficiency, the loop on real UCI data, stage wall times, and the
annotator-facing latency while a round runs in another process. Prints figures; asserts nothing.

Sections (each can be skipped; every size is a flag):

1. ``--section efficiency`` — labels needed to reach a reward-model held-out accuracy with ACTIVE
   selection (rlhf.active, the round's mix) vs RANDOM pairs. Demo shop (hidden preferences = truth),
   pool of candidate lists per training context, a simulated default crowd (~0.75 agreement) answers
   with :func:`rlhf.simulate.judge`; the reward model (TRL RewardTrainer + LoRA, ``--rm-backbone``) is
   retrained from scratch after each batch and scored on held-out-context pairs whose label is the TRUE
   utility order. Lists are sampled from each context's candidates with templated reasons (not LLM
   samples) so that the pool is large and the CPU budget goes into the reward model. ``--arm`` adds
   selection variants on the same pool, crowd and test pairs (``ensemble`` with another mix, or
   ``laplace`` / ``sandwich`` / ``epig`` / ``pepig``: that quota from the probe's own posterior,
   posterior_selection.py);
   every arm is compared with random and with active, paired by repeat.
2a. ``--section ceiling`` — NDCG@N on UCI of lists that need no model (the first candidates as shown,
   random candidates, the best candidates by later purchases) next to the baselines, for each candidate
   retrieval (``--retrievals``: co-purchase similarity and candidate order): what a policy that
   chooses among the candidates can reach. With ``--zero-shot``, the real policy's lists in each
   retrieval and where its picks sit among the candidates.
2b. ``--section rm-inputs`` — what the small-data reward model (the probe's head) learns from crowd labels
   on random candidate lists, for each input it can read, with and without the match features
   (``--rm-data uci``: truth = later purchases; ``demo``: the demo shop's hidden preferences), by
   training labels. ``--section rm-inputs-mean --combine A.json,B.json,...`` averages seeds' runs.
1v. ``--section versus --combine BASE.json,NEW.json`` — two efficiency runs of the same command and seeds
   under two settings (e.g. the reward model's features), paired repeat by repeat against BASE's random.
2. ``--section uci`` — the real loop on UCI Online Retail: import (rlhf.importing), contexts at a time
   cut (rlhf.contexts), zero-shot lists and a first queue (rlhf.pairs.bootstrap_queue), simulated
   annotators whose ground truth is the shopper's LATER purchases (``PurchaseUtility``,
   ``--category-credit``), then ``--rounds`` training rounds, each run as a BACKGROUND PROCESS
   (rlhf.rounds.launch_round) while the crowd keeps labelling through rlhf.annotation: that gives the
   annotator latency during a round (vs before any round), and each round's stage wall times and its
   evaluation (NDCG@N, HR@N, validity, diversity; popularity and co-purchase baselines; zero-shot).
2o. ``--section uci-more --from-workdir DIR`` — an earlier ``uci`` run's last round and zero-shot policy on
   more held-out shoppers (``--more-shoppers``, those with purchases after the cut), same cut and the
   round's recorded settings: the paired NDCG difference on the new shoppers alone, and pooled.
2p. ``--section reasons --from-workdir DIR`` — the share of reasons about the item or the shopper's history
   (rlhf.reasons) for an earlier run's round policies and zero-shot policy, paired against the last round.
2q. ``--section reasons-rm --from-workdir DIR`` — whether the probe learns the reasons from a crowd that judges
   them (``--reason-penalties``), on that run's real policy lists: held-out accuracy by purchases and by reasons.

Full run (GPU recommended): see benchmarks/results/loop.md for the exact command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rlhf.settings import load_settings
from storage import Store


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


# ============================================================================ 1. label efficiency
def _list_text(items, titles: dict[str, str], cats: dict[str, str]) -> str:
    return "\n".join(f"{k + 1}. {titles[i]} - a good match in {cats.get(i) or 'the shop'}" for k, i in enumerate(items))


def efficiency(args) -> dict:
    """Labels to reach --target held-out accuracy, active vs random (same pool, crowd, seeds)."""
    from posterior_selection import LinearPosterior, select_with_posterior

    from rlhf import simulate as sim
    from rlhf.active import CandidatePair, SelectionShares, select_pairs
    from rlhf.demo import build_demo, utility_fn_for_store
    from rlhf.reward.evaluate import pairwise_accuracy
    from rlhf.reward.train import train_reward_model
    from storage import catalog as catalog_repo
    from storage import contexts as contexts_repo

    rm_name = {"features": "feature Bradley-Terry model",
               "probe": "the product's probe (rlhf.reward.probe, frozen MiniLM, product answer format)"}.get(
        args.le_rm, f"TRL RewardTrainer + LoRA ({args.rm_backbone})")
    where = (f"UCI at {args.cut}, {args.max_contexts} contexts, {args.candidates} candidates, truth = later purchases"
             if args.le_data == "uci" else "demo shop")
    print(f"== 1. label efficiency: active vs random pairs ({where}, {args.le_crowd} crowd, "
          f"reward model: {rm_name}, ensemble {args.le_ensemble}, target accuracy {args.target})")
    tmp = tempfile.TemporaryDirectory()
    rm_settings = {
        "reward_model": {"method": "probe" if args.le_rm == "probe" else "lora", "backbone": args.rm_backbone,
                         "epochs": args.rm_epochs, "batch_size": 16, "max_length": args.rm_max_length,
                         "learning_rate": args.rm_lr, "logging_steps": 1000, "warmup_ratio": 0.0, "seed": args.seed},
        "rounds": {"ensemble_size": 1},
    }
    if args.le_data == "uci":  # the loop's UCI contexts; truth: what each shopper bought after the cut
        store, settings = _uci_store(args, Path(tmp.name), **rm_settings)
        with store.transaction() as con:
            all_contexts = contexts_repo.list_contexts(con)
        utility = sim.PurchaseUtility.from_store(store, all_contexts, events=["purchase"],
                                                 category_credit=args.category_credit)
    else:
        settings = load_settings(
            store={"data_dir": Path(tmp.name) / "data"},
            demo={"n_items": args.le_items, "n_shoppers": args.le_shoppers, "seed": args.seed},
            contexts={"n_candidates": 12, "history_cap": 6}, **rm_settings,
        )
        store = Store.from_settings(settings)
        build_demo(store, settings, with_accounts=False)
        utility = utility_fn_for_store(store)
    if settings.contexts.item_attributes:
        print("items described in the prompts with their attributes: " + ", ".join(settings.contexts.item_attributes))
    with store.transaction() as con:
        contexts = contexts_repo.list_contexts(con)
        items = catalog_repo.get_items(con, list({i for c in contexts for i in (*c.history, *c.candidates)}))
    titles = {k: v.title for k, v in items.items()}
    cats = {k: v.category for k, v in items.items()}
    rng = np.random.default_rng(args.seed)
    n = args.list_length

    def prompt(c) -> str:
        return "Shopper bought: " + "; ".join(titles[i] for i in c.history if i in titles)

    # Pool: L random lists per context, all pairs within a context.
    lists: dict[str, tuple[str, list[str]]] = {}
    for c in contexts:
        cand = [i for i in c.candidates if i in titles]
        if len(cand) < n:
            continue
        for k in range(args.lists_per_context):
            lists[f"{c.context_id}#{k}"] = (c.context_id, list(rng.choice(cand, n, replace=False)))
    by_ctx = {c.context_id: c for c in contexts}
    true_u = {g: float(utility(by_ctx[cid], its)) for g, (cid, its) in lists.items()}
    train_ctx = [c.context_id for c in contexts if c.split != "heldout"]
    held_ctx = [c.context_id for c in contexts if c.split == "heldout"]

    def pairs_for(ctx_ids):
        out = []
        for cid in ctx_ids:
            gs = sorted(g for g in lists if g.startswith(cid + "#"))
            out += [CandidatePair(cid, gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs))]
        return out

    pool = pairs_for(train_ctx)
    test = [p for p in pairs_for(held_ctx) if abs(true_u[p.gen_a] - true_u[p.gen_b]) > 1e-9]
    test = [test[i] for i in rng.permutation(len(test))[: args.test_pairs]]
    crowd = sim.make_crowd(args.crowd_size, args.le_crowd, seed=args.seed)
    scale = sim.utility_scale([true_u[p.gen_a] - true_u[p.gen_b] for p in pool])
    print(f"pool: {len(pool)} candidate pairs on {len(train_ctx)} contexts; test: {len(test)} pairs on "
          f"{len(held_ctx)} held-out contexts (label = true utility order); crowd {len(crowd)}, scale {scale:.3f}")

    def label(pairs, rng_l):
        rows = []
        for p in pairs:
            who = crowd[int(rng_l.integers(0, len(crowd)))]
            left_is_a = bool(rng_l.random() < 0.5)
            ul, ur = (true_u[p.gen_a], true_u[p.gen_b]) if left_is_a else (true_u[p.gen_b], true_u[p.gen_a])
            j = sim.judge(who, ul, ur, rng_l, scale=scale, floor=getattr(utility, "floor", None))
            choice = sim.canonical_choice(j, left_is_a)
            if choice in ("A", "B"):
                win, lose = (p.gen_a, p.gen_b) if choice == "A" else (p.gen_b, p.gen_a)
                rows.append((p.context_id, win, lose))
        return rows

    gids = sorted(lists)
    embedded = _probe_embeddings(store, settings, lists, gids, args.seed) if args.le_rm == "probe" else None

    def fit(examples):
        """A reward model trained on (context, chosen, rejected) -> (scores of every list in ``gids``, and
        when it is the linear probe a function ``"laplace" | "sandwich" -> (weight, precision)``, else None)."""
        if args.le_rm == "features":
            return _feature_rm(examples, lists, by_ctx, items, n, args.seed), None
        if embedded is not None:
            return _probe_rm(examples, embedded, gids, settings.reward_model.probe_l2)
        frame = pd.DataFrame([{"prompt": prompt(by_ctx[c]), "chosen": _list_text(lists[w][1], titles, cats),
                               "rejected": _list_text(lists[lo][1], titles, cats), "margin": 0.0}
                              for c, w, lo in examples])
        with tempfile.TemporaryDirectory() as out:
            result = train_reward_model(frame, settings=settings, output_dir=out, progress=False)
        scores = result.scorer.score([prompt(by_ctx[lists[g][0]]) for g in gids],
                                     [_list_text(lists[g][1], titles, cats) for g in gids])
        return dict(zip(gids, np.asarray(scores, dtype=float))), None

    # Unlabelled pairs like those the model is judged on (random pool pairs), for EPIG's target distribution.
    row_of = {g: i for i, g in enumerate(gids)}
    target_pairs = [pool[i] for i in np.random.default_rng(args.seed + 3).permutation(len(pool))[:512]]
    target_diffs = (np.array([embedded[row_of[p.gen_a]] - embedded[row_of[p.gen_b]] for p in target_pairs])
                    if embedded is not None else None)
    test_better = [p.gen_a if true_u[p.gen_a] > true_u[p.gen_b] else p.gen_b for p in test]
    test_worse = [p.gen_b if true_u[p.gen_a] > true_u[p.gen_b] else p.gen_a for p in test]

    shares = SelectionShares.from_settings(settings.rounds)
    if args.shares:
        shares = SelectionShares(**{k: float(v) for k, v in (kv.split("=") for kv in args.shares.split(","))})
    print(f"active mix: {shares.as_dict()}" + (f", random below {args.warmup_labels} labels" if args.warmup_labels else ""))
    arms, members_of = _arms(args.arm, shares)
    for name, (how, arm_shares) in arms.items():
        if name != "random":
            print(f"arm {name}: {how} selection, mix {arm_shares.as_dict()}")
    curves = {}
    for strategy, (how, arm_shares) in arms.items():
        rng_l = np.random.default_rng(args.seed + 1)  # the same crowd draws for the same seed batch
        rng_pick = np.random.default_rng(args.seed + 2)
        asked: list[CandidatePair] = [pool[i] for i in rng_pick.permutation(len(pool))[: args.seed_pairs]]
        examples = label(asked, rng_l)
        curve = []
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            score_of, post = fit(examples)
            acc = pairwise_accuracy([score_of[g] for g in test_better], [score_of[g] for g in test_worse])
            # What the labels bought so far are worth: how often they agree with the true order, and how far
            # apart in true utility the two lists were (near-ties are where a noisy crowd is a coin flip).
            truthful = float(np.mean([true_u[w] > true_u[lo] for _, w, lo in examples])) if examples else float("nan")
            gap = float(np.mean([abs(true_u[p.gen_a] - true_u[p.gen_b]) for p in asked]))
            curve.append({"pairs_asked": len(asked), "labels_used": len(examples), "accuracy": float(acc),
                          "labels_true": truthful, "mean_true_gap": gap, "train_s": time.perf_counter() - t0})
            print(f"  {strategy:<8} step {step}: {len(asked):>4} pairs asked, {len(examples):>4} usable labels, "
                  f"held-out accuracy {acc:.3f}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            if step == args.steps:
                break
            done = {(p.gen_a, p.gen_b) for p in asked}
            if how == "random":
                rest = [p for p in pool if (p.gen_a, p.gen_b) not in done]
                batch = [rest[i] for i in rng_pick.permutation(len(rest))[: args.batch]]
            else:
                members = [score_of]
                posterior = None
                if how in POSTERIOR_RULES:  # the probe's own posterior: no bootstrap replicas needed
                    if post is None:
                        raise SystemExit(f"{how} selection needs --le-rm probe (a linear head)")
                    posterior = LinearPosterior(embedded, *post(POSTERIOR_RULES[how][0]))
                else:
                    for k in range(1, members_of.get(strategy, args.le_ensemble)):  # bootstrap replicas: disagreement
                        idx = np.random.default_rng(args.seed + 10 * k + step).integers(0, len(examples), len(examples))
                        members.append(fit([examples[i] for i in idx])[0])
                scores = np.vstack([[m[g] for g in gids] for m in members])
                labelled: dict[str, int] = {}
                for p in asked:
                    labelled[p.context_id] = labelled.get(p.context_id, 0) + 1
                arm_mix = _warmed_up(arm_shares, len(examples), args.warmup_labels)
                if posterior is None:
                    sel = select_pairs(pool, scores, gids, args.batch, shares=arm_mix, labelled_per_context=labelled,
                                       exclude=done, seed=args.seed + step)
                else:
                    sel = select_with_posterior(pool, scores, gids, args.batch, posterior, shares=arm_mix,
                                                labelled_per_context=labelled, exclude=done, seed=args.seed + step,
                                                rule=POSTERIOR_RULES[how][1], targets=target_diffs)
                batch = [CandidatePair(s.context_id, s.gen_a, s.gen_b) for s in sel]
            asked += batch
            examples += label(batch, rng_l)
        curves[strategy] = curve

    def needed(curve):
        for prev, cur in zip([None, *curve[:-1]], curve):
            if cur["accuracy"] >= args.target:
                if prev is None or prev["accuracy"] >= args.target:
                    return float(cur["pairs_asked"])
                frac = (args.target - prev["accuracy"]) / max(cur["accuracy"] - prev["accuracy"], 1e-9)
                return prev["pairs_asked"] + frac * (cur["pairs_asked"] - prev["pairs_asked"])
        return None

    reach = {name: needed(curve) for name, curve in curves.items()}
    print(f"labels (pairs asked) to reach accuracy {args.target}: "
          + ", ".join(f"{name} {v}" for name, v in reach.items()))
    for name, v in reach.items():
        if name != "random" and reach["random"] and v:
            print(f"{name} needs {100 * (1 - v / reach['random']):.0f}% fewer labels (goal >= 30%)")
    if not all(reach.values()):
        print("the target was not reached by every arm within the budget: compare the curves instead")
    area = {k: float(np.mean([c["accuracy"] for c in v])) for k, v in curves.items()}
    print("mean accuracy over the curve: " + ", ".join(f"{k} {v:.3f}" for k, v in area.items()) + "\n")
    tmp.cleanup()
    return {"curves": curves, "needed": reach}


#: Posterior arms: how -> (covariance, rule of posterior_selection.select_with_posterior).
POSTERIOR_RULES = {"laplace": ("laplace", "bald"), "sandwich": ("sandwich", "bald"),
                   "epig": ("laplace", "epig"), "pepig": ("laplace", "pepig")}


def _arms(specs: list[str], shares):
    """Arms to compare, and the ensemble size of those that set one: always ``random`` and ``active`` (the
    round's mix, bootstrap-ensemble disagreement), plus each ``--arm NAME=HOW[:uncertainty=..,...]`` with HOW
    ``ensemble`` (``ensemble@K``: K bootstrap members) or a posterior rule (:data:`POSTERIOR_RULES`: that
    quota from the probe's posterior, no ensemble)."""
    from rlhf.active import SelectionShares

    arms = {"random": ("random", SelectionShares.random_only()), "active": ("ensemble", shares)}
    members: dict[str, int] = {}
    for spec in specs or []:
        name, _, rest = spec.partition("=")
        how, _, mix = rest.partition(":")
        if "@" in how:  # ensemble@K: K bootstrap members instead of --le-ensemble
            how, _, k = how.partition("@")
            members[name] = int(k)
        if not name or how not in ("ensemble", *POSTERIOR_RULES) or name in arms:
            raise SystemExit(f"--arm {spec!r}: expected NAME=ensemble|{'|'.join(POSTERIOR_RULES)}[:share=value,...] "
                             "with a new NAME")
        arm_shares = shares if not mix else SelectionShares(
            **{**shares.__dict__, **{k: float(v) for k, v in (kv.split("=") for kv in mix.split(","))}})
        arms[name] = (how, arm_shares)
    return arms, members


def _features(context, items_in_list, items, n_cats: dict[str, int], attr_index: dict[tuple[str, str], int]):
    """Observable features of a list for a context (never the hidden preferences): per position, discounted
    by 1/log2(i+2): the share of the shopper's history in the item's category, the item's category,
    its attribute values, log price and rating."""
    hist = [items[i].category for i in context.history if i in items]
    share = {c: hist.count(c) / len(hist) for c in set(hist)} if hist else {}
    hist_attrs = [items[i].attributes or {} for i in context.history if i in items]
    k = len(n_cats)
    base = 3 + k + len(attr_index)
    keys = ("material", "colour", "color", "style")
    dim = base + k * k + len(keys)
    v = np.zeros(dim)
    for pos, item_id in enumerate(items_in_list):
        it = items.get(item_id)
        if it is None:
            continue
        w = 1.0 / np.log2(pos + 2)
        v[0] += w * share.get(it.category, 0.0)
        attrs = it.attributes or {}
        v[1] += w * np.log1p(float(it.price or 0.0))
        v[2] += w * (float(attrs.get("rating", 4.0)) - 4.0)
        if it.category in n_cats:
            v[3 + n_cats[it.category]] += w
        for key, value in attrs.items():
            j = attr_index.get((key, str(value)))
            if j is not None:
                v[3 + len(n_cats) + j] += w
        if it.category in n_cats:  # history category mix x item category (cross-category taste)
            for c, sh in share.items():
                if c in n_cats:
                    v[base + n_cats[c] * k + n_cats[it.category]] += w * sh
        for a, key in enumerate(keys):  # the item shares an attribute value with the shopper's history
            if key in attrs and hist_attrs:
                v[base + k * k + a] += w * np.mean([h.get(key) == attrs[key] for h in hist_attrs])
    return v


def _warmed_up(shares, n_labels: int, warmup_labels: int):
    """A variant tried in results/loop.md §1c and not kept in the product: below ``warmup_labels``
    labels the model-driven shares (uncertainty, disagreement) go to random."""
    from rlhf.active import SelectionShares

    if n_labels >= warmup_labels:
        return shares
    return SelectionShares(uncertainty=0.0, disagreement=0.0, coverage=shares.coverage,
                           random=shares.random + shares.uncertainty + shares.disagreement)


PROBE_REASONS = ("Matches what they bought before.", "A popular choice in this category.",
                 "Good value for the price.", "Complements their earlier purchases.", "A useful addition for their home.")


def _probe_embeddings(store, settings, lists, gids, seed) -> np.ndarray:
    """Each pool list as the policy would write it (``1. C07 | reason``, ids = retrieval ranks, generic
    reasons) for the product's prompt of its context, turned ONCE into what the product probe's head
    reads (``ProbeScorer.features``: the frozen encoder's embedding, plus the match features when
    ``reward_model.probe_match_features`` is on): the encoder never changes, so every refit of the probe
    only refits its head (what ``train_probe`` does, without re-embedding)."""
    from rlhf.models import get_tokenizer
    from rlhf.prompts import build_context_views, format_list_line, render_prompt
    from rlhf.reward.backbones import resolve_backbone
    from rlhf.reward.probe import new_probe_scorer
    from storage import contexts as contexts_repo

    with store.transaction() as con:
        views = {v.context_id: v for v in build_context_views(
            con, contexts_repo.list_contexts(con), attributes=settings.contexts.item_attributes)}
    tokenizer = get_tokenizer(settings.model.policy)
    prompt_of = {cid: render_prompt(tokenizer, views[cid], settings.generation.list_length,
                                    settings.generation.max_prompt_tokens) for cid in {lists[g][0] for g in gids}}
    rng = np.random.default_rng(seed + 5)
    texts = []
    for g in gids:
        cid, its = lists[g]
        short = views[cid].item_to_short
        texts.append("\n".join(format_list_line(r + 1, short[i], PROBE_REASONS[int(rng.integers(len(PROBE_REASONS)))])
                               for r, i in enumerate(its)))
    scorer = new_probe_scorer(settings, resolve_backbone(settings.reward_model.probe_backbone, settings))
    return scorer.features([prompt_of[lists[g][0]] for g in gids], texts, batch_size=64)


def _probe_rm(examples, embedded, gids, l2):
    """The probe's head fitted on (context, chosen, rejected) -> (scores of every list, and a function
    ``"laplace" | "sandwich" -> (weight, precision)``: the precision is only computed for the arms that
    select from it, not for every refit)."""
    from posterior_selection import laplace_precision, sandwich_precision

    from rlhf.reward.probe import fit_bradley_terry

    row = {g: i for i, g in enumerate(gids)}
    diffs = np.array([embedded[row[w]] - embedded[row[lo]] for _, w, lo in examples])
    weight, _ = fit_bradley_terry(diffs, l2=l2)
    precision = {"laplace": laplace_precision, "sandwich": sandwich_precision}
    return dict(zip(gids, (embedded @ weight).astype(float))), lambda how: (weight,
                                                                             precision[how](diffs, weight, l2=l2))


def _feature_rm(examples, lists, by_ctx, items, n, seed):
    """Bradley-Terry (logistic regression on feature differences, no intercept) -> scores of every list."""
    from sklearn.linear_model import LogisticRegression

    cats = sorted({it.category for it in items.values() if it.category})
    n_cats = {c: i for i, c in enumerate(cats)}
    attrs = sorted({(k, str(v)) for it in items.values() for k, v in (it.attributes or {}).items()
                    if k not in ("rating",) and isinstance(v, str)})
    attr_index = {a: i for i, a in enumerate(attrs)}
    phi = {g: _features(by_ctx[cid], its, items, n_cats, attr_index) for g, (cid, its) in lists.items()}
    if not examples:
        return {g: 0.0 for g in lists}
    x = np.array([phi[w] - phi[lo] for _, w, lo in examples])
    x = np.vstack([x, -x])  # both orders: a symmetric, intercept-free Bradley-Terry fit
    y = np.r_[np.ones(len(examples)), np.zeros(len(examples))]
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000, random_state=seed).fit(x, y)
    w = model.coef_[0]
    return {g: float(phi[g] @ w) for g in lists}


def versus_runs(base_file: str, new_file: str, tags: list[str]) -> list[dict]:
    """Two efficiency runs of the same command and seeds (a setting changed between them) as one run per
    repeat whose arms are ``random`` (the BASE run's random pairs, the reference) and ``TAG:arm`` for every
    other curve, so that :func:`summarise_efficiency` prints each against BASE's random, paired by repeat:
    the same shops, crowds, pools, test pairs and (for random) the same pairs asked."""
    base, new = (json.loads(Path(f).read_text())["efficiency"] for f in (base_file, new_file))
    if len(base) != len(new):
        raise SystemExit(f"{base_file} has {len(base)} repeats, {new_file} {len(new)}: not the same command")
    merged = []
    for b, n in zip(base, new):
        grid = [c["pairs_asked"] for c in b["curves"]["random"]]
        if [c["pairs_asked"] for c in n["curves"]["random"]] != grid:
            raise SystemExit("the two runs asked different numbers of pairs: not the same command")
        curves = {"random": b["curves"]["random"]}
        curves |= {f"{tags[0]}:{k}": v for k, v in b["curves"].items() if k != "random"}
        curves |= {f"{tags[1]}:{k}": v for k, v in n["curves"].items()}
        merged.append({"curves": curves})
    return merged


def summarise_efficiency(runs: list[dict], target: float, goal: str = " (goal >= 30%)") -> None:
    """Mean accuracy curves over repeats (different shops, crowds and seeds) and labels to the target,
    for every arm the runs share, each against random. ``goal`` follows every "fewer labels" figure: the
    issue's goal is about selection (active vs random pairs), not about comparing two reward models."""
    print(f"== label efficiency over {len(runs)} repeats (mean held-out accuracy by pairs asked)")
    names = [k for k in runs[0]["curves"] if all(k in run["curves"] for run in runs)]
    means = {}
    for strategy in names:
        acc = np.array([[c["accuracy"] for c in run["curves"][strategy]] for run in runs])
        asked = [c["pairs_asked"] for c in runs[0]["curves"][strategy]]
        means[strategy] = (asked, acc.mean(axis=0), acc.std(axis=0) / np.sqrt(len(runs)))
    w = max(11, *(len(k) for k in names))  # row labels: arm names in full
    print(f"{'pairs asked':<{w}}  " + "  ".join(f"{a:>6}" for a in means["random"][0]))
    for strategy, (asked, m, se) in means.items():
        print(f"{strategy:<{w}}  " + "  ".join(f"{v:6.3f}" for v in m))
        print(f"{'  +/- s.e.':<{w}}  " + "  ".join(f"{v:6.3f}" for v in se))
    if all("labels_true" in run["curves"][k][-1] for run in runs for k in names):  # runs before 2026-12-05 lack it
        print("labels bought, over all pairs asked by the end: share agreeing with the true order; mean true gap")
        for strategy in names:
            ends = [run["curves"][strategy][-1] for run in runs]
            print(f"  {strategy:<{w}} {np.mean([e['labels_true'] for e in ends]):.3f}   "
                  f"{np.mean([e['mean_true_gap'] for e in ends]):.3f}")
    # Every arm shares each repeat's shop, crowd, pool and test pairs: the paired difference is the fair
    # test of "this arm beats random" (or "beats active") at a given number of labels.
    against = [(k, "random") for k in names if k != "random"]
    if "active" in names:
        against += [(k, "active") for k in names if k not in ("random", "active")]
    for strategy, base in against:
        diff = np.array([[a["accuracy"] - r["accuracy"] for a, r in zip(run["curves"][strategy], run["curves"][base])]
                         for run in runs])
        label = f"{strategy[:6]}-{base[:4]}" if w == 11 else f"{strategy} - {base}"
        print(f"{label:<{w + 9 * (w > 11)}}  " + "  ".join(f"{v:+6.3f}" for v in diff.mean(axis=0)))
        if len(runs) > 1:
            print(f"{'  paired se':<{w + 9 * (w > 11)}}  "
                  + "  ".join(f"{v:6.3f}" for v in diff.std(axis=0, ddof=1) / np.sqrt(len(runs))))

    def needed(asked, m, goal):
        for i, v in enumerate(m):
            if v >= goal:
                if i == 0:
                    return float(asked[0])
                frac = (goal - m[i - 1]) / max(v - m[i - 1], 1e-9)
                return asked[i - 1] + frac * (asked[i] - asked[i - 1])
        return None

    nr = needed(*means["random"][:2], target)
    # The budget-matched figure: how many pairs an arm needs to reach what random reaches with all of them.
    asked, m_random = means["random"][0], means["random"][1]
    budget, reached = asked[-1], float(m_random[-1])
    for strategy in names:
        if strategy == "random":
            continue
        na = needed(*means[strategy][:2], target)
        print(f"pairs to reach mean accuracy {target}: random {nr}, {strategy} {na}")
        if nr and na:
            print(f"{strategy} needs {100 * (1 - na / nr):.0f}% fewer labels{goal}")
        match = needed(*means[strategy][:2], reached)
        if match is None:
            print(f"{strategy} never reaches random's accuracy at {budget} pairs ({reached:.3f})")
        else:
            print(f"{strategy} reaches random's accuracy at {budget} pairs ({reached:.3f}) after {match:.0f} pairs: "
                  f"{100 * (1 - match / budget):.0f}% fewer labels{goal}")
    print()


# ============================================================================ 2a. UCI: what choosing among candidates allows
def _uci_store(args, work: Path, retrieval: dict | None = None, **overrides):
    """A store under ``work`` with UCI imported and contexts built at ``--cut`` as the loop builds them
    (``--candidates``, ``--history-cap``, ``--max-contexts``, 30% of shoppers held out; ``retrieval``:
    other ``contexts`` settings, default the product's; ``overrides``: other settings sections):
    (store, settings)."""
    from rlhf.contexts import build_contexts
    from rlhf.importing import import_online_retail

    contexts = {"n_candidates": args.candidates, "history_cap": args.history_cap, "heldout_fraction": 0.3}
    contexts.update(retrieval or {})
    settings = load_settings(store={"data_dir": work / "data"}, contexts=contexts,
                             generation={"list_length": args.list_length}, **overrides)
    store = Store.from_settings(settings)
    import_online_retail(store, Path(args.uci_dir), settings=settings)
    build_contexts(store, settings=settings, as_of=args.cut, limit=args.max_contexts)
    return store, settings


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
        store, settings = _uci_store(args, work, {"copurchase_similarity": similarity,
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
        store, settings = _uci_store(args, work)
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
    feats = {"policy": e_raw, "resolved": e_res,
             "policy + resolved (not in product)": np.hstack([e_raw, e_res]),
             "resolved x history (not in product)": np.hstack([e_res, e_res * e_h * np.sqrt(e_res.shape[1])]),
             "match features alone (not in product)": match,
             "rank alone (not in product)": match[:, :1],
             "similarities alone (not in product)": match[:, 1:],
             "policy + match": np.hstack([e_raw, match]),
             "resolved + match": np.hstack([e_res, match])}
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
    test = [(a, b) for a, b in pairs(True) if abs(true_u[a] - true_u[b]) > 1e-9]
    test = [test[i] for i in rng.permutation(len(test))[: args.test_pairs]]
    informative = np.mean([abs(true_u[a] - true_u[b]) > 1e-9 for a, b in train_pool])
    crowd = sim.make_crowd(args.crowd_size, "default", seed=args.seed)
    scale = sim.utility_scale([true_u[a] - true_u[b] for a, b in train_pool])
    print(f"train pool {len(train_pool)} pairs ({informative:.0%} with a true difference), test {len(test)} "
          f"held-out pairs with one; crowd {len(crowd)}, scale {scale:.3f}")
    sizes = [int(x) for x in args.rm_sizes.split(",")]
    order = rng.permutation(len(train_pool))
    labelled: list[tuple[str, str]] = []  # (winner, loser), crowd-labelled in pool order
    rng_l = np.random.default_rng(args.seed + 1)
    asked = 0
    results: dict[str, dict[int, float]] = {name: {} for name in feats}
    for size in sizes:
        while asked < min(size, len(order)):
            a, b = train_pool[order[asked]]
            asked += 1
            who = crowd[int(rng_l.integers(0, len(crowd)))]
            left_is_a = bool(rng_l.random() < 0.5)
            ul, ur = (true_u[a], true_u[b]) if left_is_a else (true_u[b], true_u[a])
            choice = sim.canonical_choice(sim.judge(who, ul, ur, rng_l, scale=scale, floor=getattr(utility, "floor", None)), left_is_a)
            if choice in ("A", "B"):
                labelled.append((a, b) if choice == "A" else (b, a))
        for name, x in feats.items():
            diffs = np.array([x[row[w]] - x[row[lo]] for w, lo in labelled])
            weight, _ = fit_bradley_terry(diffs, l2=settings.reward_model.probe_l2)
            score = x @ weight
            results[name][size] = float(np.mean([(score[row[a]] > score[row[b]]) == (true_u[a] > true_u[b])
                                                 for a, b in test]))
    print("held-out accuracy (true order) by pairs asked: " + "  ".join(f"{s:>6}" for s in sizes))
    for name, accs in results.items():
        label = f"{name} (product default)" if name == default else name
        print(f"  {label:<38} " + "  ".join(f"{accs[s]:6.3f}" for s in sizes))
    print(f"  (s.e. of one accuracy ~{np.sqrt(0.25 / max(1, len(test))):.3f})\n")
    shutil.rmtree(work, ignore_errors=True)
    return {"data": args.rm_data, "accuracy": results, "test_pairs": len(test), "train_pool": len(train_pool)}


def summarise_rm_inputs(runs: list[dict]) -> None:
    """Mean held-out accuracy of each reward-model input over rm-inputs runs (one per seed), with the
    spread of the seeds, for the inputs and sizes every run has."""
    # Runs before the match features named the default input "policy (product default)".
    runs = [{**r, "accuracy": {k.replace(" (product default)", ""): v for k, v in r["accuracy"].items()}} for r in runs]
    names = [k for k in runs[0]["accuracy"] if all(k in r["accuracy"] for r in runs)]
    sizes = [s for s in runs[0]["accuracy"][names[0]] if all(s in r["accuracy"][k] for r in runs for k in names)]
    print(f"== rm-inputs over {len(runs)} seeds ({', '.join(sorted({r['data'] for r in runs}))}): mean held-out "
          "accuracy (true order) by pairs asked [min-max over seeds]")
    print(f"{'':<40}" + "".join(f"{s:>20}" for s in sizes))
    for name in names:
        cells = []
        for size in sizes:
            v = [r["accuracy"][name][size] for r in runs]
            cells.append(f"{np.mean(v):.3f} [{min(v):.3f}-{max(v):.3f}]")
        print(f"{name:<40}" + "".join(f"{c:>20}" for c in cells))
    print()


# ============================================================================ 2. UCI loop
def _crowd_labels(store, settings, crowd, utility, n, seed, scale=None):
    """Label up to n pairs with the crowd through rlhf.annotation; returns per-call latencies (ms)."""
    from rlhf import simulate as sim

    rep = sim.run_simulation(store, crowd, utility, n, settings=settings, seed=seed, scale=scale)
    return rep


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
          f"probe_reason_features {args.reason_features}, ppo own_reasons_count_copies {args.ppo_copies}")
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
    quiet = _crowd_labels(store, settings, crowd, utility, args.labels_per_round, args.seed)
    print(f"labels before round 1: {quiet.labels}; service latency with NO round running: "
          f"p50 {pct(quiet.service_ms, 50):.1f} ms, p95 {pct(quiet.service_ms, 95):.1f} ms "
          f"({len(quiet.service_ms)} calls)")
    results = []
    for k in range(1, args.rounds + 1):
        round_id, pid, _ = R.launch_round(settings)
        t0 = time.perf_counter()
        lat: list[float] = []
        labels = 0
        while R.pid_alive(pid):
            rep = _crowd_labels(store, settings, crowd, utility, 5, args.seed + k * 100 + labels)
            lat += rep.service_ms
            labels += rep.labels
            if rep.labels == 0:
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
        more = _crowd_labels(store, settings, crowd, utility, args.labels_per_round, args.seed + k)
        print(f"   labels after round {k}: +{more.labels}")
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
    store, settings, done = _earlier_run(str(work))
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


def _earlier_run(workdir: str):
    """An earlier ``--section uci`` run's store, its last done round's settings (pointed at that store) and
    its done rounds, oldest first."""
    from storage import rounds as rounds_repo

    data = Path(workdir) / "data"
    store = Store(data / "recfeedback.duckdb")
    with store.transaction() as con:
        done = [r for r in rounds_repo.list_rounds(con) if r.status == "done"]
    config = dict(done[-1].config or {})
    config["store"] = {**config.get("store", {}), "data_dir": str(data)}
    return store, load_settings(**config), done


def reasons_section(args) -> dict:
    """How many reasons are about the item or the shopper (:mod:`rlhf.reasons`), for every round's policy and
    the zero-shot model of an earlier ``--section uci`` (or ``uci-more``) run, read from its store as it is
    (``--from-workdir``; nothing is generated or written): the product's evaluation table, and the last
    round's share minus each other policy's, paired over the shoppers both have lists for."""
    from rlhf.cli.loop import format_table
    from rlhf.evaluation import compare_policies

    store, settings, done = _earlier_run(args.from_workdir)
    data = store.path.parent
    last = done[-1]
    zero = json.loads((Path(last.folder) / "evaluation.json").read_text())["zero_shot_policy_id"]
    policies = [last.policy_id, zero, *[r.policy_id for r in reversed(done[:-1])]]
    table, _, reasons = compare_policies(store, policies, settings=settings, split="heldout", baselines=False)
    print(f"== 2p. reasons grounded in the item or the shopper's history: {data}")
    print(format_table(table, settings.generation.list_length))
    out = {"policies": policies, "table": table.to_dict(orient="records"), "reasons_difference": {}}
    for other, est in reasons.items():
        print(f"reasons grounded, {last.policy_id} minus {other}, paired over {est.n} shoppers: "
              f"{est.mean:+.4f} [{est.lo:+.4f}, {est.hi:+.4f}]")
        out["reasons_difference"][other] = {"mean": est.mean, "lo": est.lo, "hi": est.hi, "n": est.n}
    out["title_copies"] = _title_copies(store, policies)
    return out


def _title_copies(store, policies: list[str]) -> dict[str, dict[str, float]]:
    """How much of a policy's reasons is copying: on the held-out shoppers, the share of reasons that begin
    with their own item's title (its first half, at least 8 characters), of reasons that are the title and
    nothing else, of lists with a reason that describes another candidate (the parser's
    ``other_item_reason``, which makes the list invalid), and of reasons that copy a candidate's line and say
    nothing grounded besides (:func:`rlhf.reasons.line_verdicts`' ``copy``); and the share grounded as the
    check counted before it judged what follows a copy (loop.md §2p-2r's figures). Printed and returned per
    policy."""
    from rlhf.reasons import line_verdicts, reason_is_grounded
    from storage import contexts as contexts_repo
    from storage import generations as gen_repo
    from storage.catalog import get_items

    with store.transaction() as con:
        held = {c.context_id: c for c in contexts_repo.list_contexts(con) if c.split == "heldout"}
        gens = gen_repo.generations_for_policies(con, policies, context_ids=list(held))
        items = get_items(con, sorted({x.item_id for g in gens for x in g.items}
                                      | {i for c in held.values() for i in (*c.history, *c.candidates)}))
    titles = {i: (it.title or "").lower().strip() for i, it in items.items()}
    print("copying: share of held-out reasons that begin with their item's title / are only the title / copy a "
          "candidate's line and say nothing grounded besides; share of lists with a reason that describes another "
          "candidate; share of reasons grounded when a copied line counted (the check before §2s)")
    out: dict[str, dict] = {}
    for policy in policies:
        mine = [g for g in gens if g.policy_id == policy]
        lines = [((x.reason or "").lower().strip().rstrip("."), titles.get(x.item_id, "")) for g in mine for x in g.items]
        begins = np.mean([bool(t) and r.startswith(t[: max(8, len(t) // 2)]) for r, t in lines]) if lines else np.nan
        only = np.mean([bool(t) and r == t for r, t in lines]) if lines else np.nan
        other = np.mean([any(p.get("kind") == "other_item_reason" for p in g.problems) for g in mine]) if mine else np.nan
        verdicts, before = [], []
        for g in mine:
            context = held[g.context_id]
            past = [titles.get(h) for h in context.history]
            said = [(x.reason, titles.get(x.item_id), items[x.item_id].category if x.item_id in items else None)
                    for x in g.items]
            verdicts += line_verdicts(said, past, [titles.get(c) for c in context.candidates])
            before += [reason_is_grounded(r, [t, c, *past]) for r, t, c in said]
        copies = float(np.mean([v == "copy" for v in verdicts])) if verdicts else float("nan")
        counted = float(np.mean(before)) if before else float("nan")
        print(f"  {policy:<44} {len(mine):>4} lists  begins with its title {begins:.3f}  only the title {only:.3f}  "
              f"a copy {copies:.3f}  describes another candidate {other:.3f}  grounded, copies "
              f"counted {counted:.3f}")
        out[policy] = {"lists": len(mine), "begins_with_title": float(begins), "only_title": float(only),
                       "copied_line": copies, "other_item_reason_lists": float(other), "grounded_copies_counted": counted}
    return out


def reasons_rm_section(args) -> dict:
    """Would the reward model learn the reasons if the annotators judged them? The real policy lists of an
    earlier ``--section uci`` run (``--from-workdir``, every policy's lists, read as they are), paired within
    each shopper; a simulated crowd labels training shoppers' pairs by the later purchases (as in the loop)
    minus ``--reason-penalties`` utility-scale units for a list whose every reason is off-topic or a copied
    product line (:func:`rlhf.reasons.off_topic_share`; what ``simulation.reason_penalty`` does in the
    product); the probe's head (the product's default input, frozen encoder embedded once) is fitted on those
    labels. Scored on held-out shoppers' pairs: ``items``, the share ordered as the purchases order them
    (pairs whose purchase utility differs), and ``reasons``, the share where the list with fewer ungrounded
    reasons scores higher (pairs equal by purchases whose shares differ). Two more heads also read a reason
    column: ``reason_fit_after_copy`` (``reward_model.probe_reason_features``, off by default: each reason's
    cosine to its item's description or the closest earlier purchase, by the same encoder, read after any
    copied candidate line) and ``reason_fit``, the same with copies included (the column before §2s)."""
    from rlhf import simulate as sim
    from rlhf.models import get_tokenizer
    from rlhf.prompts import build_context_views, render_prompt
    from rlhf.reasons import off_topic_share
    from rlhf.reward.backbones import resolve_backbone
    from rlhf.reward.dataset import context_split
    from rlhf.reward.match import REASON_FEATURES, match_features
    from rlhf.reward.probe import fit_bradley_terry, new_probe_scorer
    from storage import contexts as contexts_repo
    from storage import generations as gen_repo
    from storage.catalog import get_items

    store, settings, _ = _earlier_run(args.from_workdir)
    with store.transaction() as con:
        contexts = contexts_repo.list_contexts(con)
        gens = [g for g in gen_repo.generations_for_contexts(con, [c.context_id for c in contexts]) if g.items]
        items = get_items(con, sorted({i.item_id for g in gens for i in g.items}
                                      | {h for c in contexts for h in c.history}))
    by_ctx = {c.context_id: c for c in contexts}
    per_ctx: dict[str, list] = {}
    for g in gens:
        per_ctx.setdefault(g.context_id, []).append(g)
    per_ctx = {c: gs for c, gs in per_ctx.items() if len(gs) >= 2}
    gens = [g for gs in per_ctx.values() for g in gs]
    views = {v.context_id: v for v in build_context_views(store, [by_ctx[c] for c in per_ctx],
                                                          attributes=settings.contexts.item_attributes)}
    tokenizer = get_tokenizer(settings.model.policy)
    n = settings.generation.list_length
    prompt_of = {c: render_prompt(tokenizer, views[c], n, settings.generation.max_prompt_tokens) for c in per_ctx}
    utility = sim.PurchaseUtility.from_store(store, [by_ctx[c] for c in per_ctx], events=["purchase"],
                                             category_credit=args.category_credit)

    def title(i: str) -> str | None:
        return items[i].title if i in items else None

    def category(i: str) -> str | None:
        return items[i].category if i in items else None

    u_item = {g.generation_id: float(utility(by_ctx[g.context_id], [i.item_id for i in g.items])) for g in gens}
    off = {g.generation_id: off_topic_share([(i.reason, title(i.item_id), category(i.item_id)) for i in g.items],
                                            [title(h) for h in by_ctx[g.context_id].history],
                                            [title(c) for c in by_ctx[g.context_id].candidates]) for g in gens}
    split = {c: context_split(c, args.rm_heldout) for c in per_ctx}
    pairs = {s_: [(a.generation_id, b.generation_id) for c, gs in per_ctx.items() if split[c] == s_
                  for x, a in enumerate(gs) for b in gs[x + 1:]] for s_ in ("train", "heldout")}
    print(f"== 2q. would the reward model learn reasons from annotators who judge them? {len(gens)} policy lists of "
          f"{len(per_ctx)} shoppers ({args.from_workdir}); {len(pairs['train'])} training pairs, "
          f"{len(pairs['heldout'])} held-out")
    print(f"off-topic share of a list: mean {np.mean(list(off.values())):.3f}; lists with none off-topic "
          f"{np.mean([v == 0 for v in off.values()]):.0%}, all off-topic {np.mean([v == 1 for v in off.values()]):.0%}")

    t0 = time.perf_counter()
    scorer = new_probe_scorer(settings, resolve_backbone(settings.reward_model.probe_backbone, settings))
    gids = [g.generation_id for g in gens]
    row = {g: k for k, g in enumerate(gids)}
    product = scorer.features([prompt_of[g.context_id] for g in gens], [g.raw_text for g in gens], batch_size=64)
    # reward_model.probe_reason_features: each reason's fit to its item or the closest earlier purchase, read
    # after any copied candidate line; and the column as it was before §2s, copies included.
    fit = match_features([prompt_of[g.context_id] for g in gens], [g.raw_text for g in gens], scorer.embed_lines,
                         columns=("reason_fit", *REASON_FEATURES), embed_reasons=scorer.embed_texts)
    feats = {"product probe": product, "+ reason fit, copies included (before 2s)": np.hstack([product, fit[:, :1]]),
             "+ reason fit after copy (probe_reason_features)": np.hstack([product, fit[:, 1:]])}
    print(f"embedded {len(gens)} lists and their reasons in {time.perf_counter() - t0:.0f} s")

    test_items = [(a, b) for a, b in pairs["heldout"] if abs(u_item[a] - u_item[b]) > 1e-9]
    test_reasons = [(a, b) for a, b in pairs["heldout"]
                    if abs(u_item[a] - u_item[b]) <= 1e-9 and abs(off[a] - off[b]) >= 0.2 - 1e-9]
    scale = sim.utility_scale([u_item[a] - u_item[b] for a, b in pairs["train"]])
    sizes = [int(x) for x in args.rm_sizes.split(",")]
    penalties = [float(x) for x in args.reason_penalties.split(",")]
    seeds = [args.seed + r for r in range(args.repeats)]
    print(f"held-out pairs scored: {len(test_items)} differ by purchases, {len(test_reasons)} equal by purchases "
          f"with different reasons; purchase utility scale {scale:.3f}; a default crowd of {args.crowd_size} "
          f"and an order of training pairs per seed ({', '.join(map(str, seeds))})")
    results: dict[str, dict[int, list[dict[str, float]]]] = {}
    for seed in seeds:
        crowd = sim.make_crowd(args.crowd_size, "default", seed=seed)
        order = np.random.default_rng(seed).permutation(len(pairs["train"]))
        for penalty in penalties:
            truth = {g: u_item[g] - penalty * scale * off[g] for g in gids}
            rng_l = np.random.default_rng(seed + 1)  # the same annotators, sides and draws under every penalty
            labelled: list[tuple[str, str]] = []
            asked = 0
            for size in sizes:
                while asked < min(size, len(order)):
                    a, b = pairs["train"][order[asked]]
                    asked += 1
                    who = crowd[int(rng_l.integers(0, len(crowd)))]
                    left_is_a = bool(rng_l.random() < 0.5)
                    ul, ur = (truth[a], truth[b]) if left_is_a else (truth[b], truth[a])
                    choice = sim.canonical_choice(sim.judge(who, ul, ur, rng_l, scale=scale), left_is_a)
                    if choice in ("A", "B"):
                        labelled.append((a, b) if choice == "A" else (b, a))
                for name, x in feats.items():
                    diffs = np.array([x[row[w]] - x[row[lo]] for w, lo in labelled])
                    weight, _ = fit_bradley_terry(diffs, l2=settings.reward_model.probe_l2)
                    score = {g: float(x[row[g]] @ weight) for g in gids}
                    results.setdefault(f"penalty {penalty:g}, {name}", {}).setdefault(size, []).append({
                        "items": float(np.mean([(score[a] > score[b]) == (u_item[a] > u_item[b]) for a, b in test_items])),
                        "reasons": float(np.mean([(score[a] > score[b]) == (off[a] < off[b]) for a, b in test_reasons])),
                    })
    print(f"held-out accuracy, items / reasons, mean of {len(seeds)} seeds, by pairs asked "
          f"(a size past the pool asks all {len(pairs['train'])}):")
    print(f"  {'':<64}" + "".join(f"{s:>14}" for s in sizes))
    for name, by_size in results.items():
        cells = [f"{np.mean([r['items'] for r in by_size[s]]):.3f}/{np.mean([r['reasons'] for r in by_size[s]]):.3f}"
                 for s in sizes]
        print(f"  {name:<64}" + "".join(f"{c:>14}" for c in cells))
    spread = max(np.ptp([r["reasons"] for r in runs]) for by_size in results.values() for runs in by_size.values())
    print(f"  (s.e. of one accuracy ~{np.sqrt(0.25 / max(1, len(test_items))):.3f} items, "
          f"~{np.sqrt(0.25 / max(1, len(test_reasons))):.3f} reasons; widest spread of reasons over seeds {spread:.3f})\n")
    return {"results": results, "test_items": len(test_items), "test_reasons": len(test_reasons),
            "lists": len(gens), "shoppers": len(per_ctx), "scale": scale}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["all", "efficiency", "ceiling", "rm-inputs", "uci", "uci-more", "reasons",
                                        "reasons-rm", "combine", "versus", "rm-inputs-mean"], default="all")
    p.add_argument("--retrievals", default="user:interleaved,item:interleaved,item:relevance",
                   help="ceiling: contexts.copurchase_similarity:contexts.candidate_order pairs to compare")
    p.add_argument("--zero-shot", action="store_true",
                   help="ceiling: the real policy also writes one list per held-out shopper in each order")
    p.add_argument("--combine", default="", help="--section combine: comma list of efficiency --json-out files to "
                   "pool; --section versus: BASE,NEW, two runs of the same command and seeds under two settings; "
                   "--section rm-inputs-mean: rm-inputs --json-out files (one per seed) to average")
    p.add_argument("--tags", default="base,new", help="--section versus: names of the BASE and NEW runs' arms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list-length", type=int, default=5)
    p.add_argument("--rm-method", choices=["auto", "lora", "probe"], default="auto",
                   help="uci: reward_model.method of the rounds (runs before 2026-12-01 were LoRA: use lora)")
    p.add_argument("--rm-backbone", default="minilm")
    p.add_argument("--rm-epochs", type=float, default=2.0)
    p.add_argument("--rm-lr", type=float, default=5e-4)
    p.add_argument("--rm-max-length", type=int, default=256)
    p.add_argument("--json-out", default=None)
    p.add_argument("--repeats", type=int, default=1, help="label efficiency, reasons-rm: repeat with seeds seed..seed+R-1")
    p.add_argument("--le-data", choices=["demo", "uci"], default="demo",
                   help="label efficiency: the demo shop (its hidden tastes as truth) or the loop's UCI contexts "
                   "(later purchases as truth, --cut, --max-contexts, --candidates, --history-cap, --category-credit)")
    g = p.add_argument_group("label efficiency")
    g.add_argument("--le-rm", choices=["features", "probe", "trl"], default="features",
                   help="features: Bradley-Terry logistic model on observable list features (fast, CPU); "
                        "probe: the product's small-data reward model (rlhf.reward.probe) on lists in the policy's "
                        "answer format, the pool embedded once (fast, CPU); "
                        "trl: the product's TRL RewardTrainer + LoRA on --rm-backbone (slow on CPU)")
    g.add_argument("--warmup-labels", type=int, default=0,
                   help="active: random instead of uncertainty/disagreement below this many labels "
                        "(a variant tried, not in the product)")
    g.add_argument("--arm", action="append", default=[],
                   help="an extra selection arm besides random and active, NAME=ensemble|laplace|sandwich|epig|pepig[:share=value,...], "
                        "e.g. info=laplace:uncertainty=0,disagreement=0.7 (repeatable; all but ensemble need --le-rm probe; "
                        "epig / pepig: expected predictive information gain on random pool pairs, top-k / drawn)")
    g.add_argument("--le-ensemble", type=int, default=3, help="reward models in the active ensemble (bootstrap)")
    g.add_argument("--le-items", type=int, default=240)
    g.add_argument("--le-shoppers", type=int, default=160)
    g.add_argument("--le-crowd", default="default")
    g.add_argument("--crowd-size", type=int, default=20)
    g.add_argument("--lists-per-context", type=int, default=4)
    g.add_argument("--seed-pairs", type=int, default=40)
    g.add_argument("--batch", type=int, default=40)
    g.add_argument("--steps", type=int, default=5)
    g.add_argument("--test-pairs", type=int, default=300)
    g.add_argument("--target", type=float, default=0.70)
    g.add_argument("--shares", default=None,
                   help="active mix, e.g. uncertainty=0.5,disagreement=0.2,coverage=0.15,random=0.15 "
                        "(default: settings.rounds)")
    u = p.add_argument_group("UCI loop")
    u.add_argument("--uci-dir", default=str(ROOT.parent / "shared" / "data" / "uci_online_retail"))
    u.add_argument("--workdir", default=None)
    u.add_argument("--cut", default="2011-09-01")
    u.add_argument("--max-contexts", type=int, default=400)
    u.add_argument("--candidates", type=int, default=20)
    u.add_argument("--history-cap", type=int, default=10)
    u.add_argument("--policy", default=None, help="model spec (default: settings.model.policy)")
    u.add_argument("--tiny-policy", action="store_true",
                   help="use a tiny random-init policy (CPU smoke run of the machinery; NDCG is meaningless)")
    u.add_argument("--max-new-tokens", type=int, default=160)
    u.add_argument("--ppo-steps", type=int, default=50)
    u.add_argument("--ppo-batch", type=int, default=16)
    u.add_argument("--pool-contexts", type=int, default=100)
    u.add_argument("--eval-contexts", type=int, default=200)
    u.add_argument("--new-pairs", type=int, default=200)
    u.add_argument("--initial-pairs", type=int, default=100)
    u.add_argument("--labels-per-round", type=int, default=300)
    u.add_argument("--overlap", type=int, default=3)
    u.add_argument("--ensemble", type=int, default=3)
    u.add_argument("--rounds", type=int, default=3)
    u.add_argument("--category-credit", type=float, default=0.2)
    u.add_argument("--from-workdir", default=None, help="uci-more, reasons: an earlier --section uci run's --workdir")
    u.add_argument("--more-shoppers", type=int, default=150,
                   help="uci-more: new held-out shoppers (with purchases after the cut) to sample lists for")
    u.add_argument("--rm-data", choices=["uci", "demo"], default="uci", help="rm-inputs: which data and truth")
    u.add_argument("--rm-sizes", default="100,300,1000,3000",
                   help="rm-inputs, reasons-rm: training pairs asked at which the reward models are scored")
    u.add_argument("--reason-penalties", default="0,0.5,1,2",
                   help="reasons-rm: utility-scale units the crowd takes off a list whose every reason is off-topic")
    u.add_argument("--rm-heldout", type=float, default=0.3, help="reasons-rm: share of shoppers held out")
    u.add_argument("--reason-penalty", type=float, default=0.0,
                   help="uci: the crowd also judges reasons (simulation.reason_penalty; 0 = items only, the issue's crowd)")
    u.add_argument("--ppo-copies", action="store_true",
                   help="uci: PPO's own_reasons term marks down copied candidate lines (ppo.own_reasons_count_copies)")
    u.add_argument("--reason-features", action="store_true",
                   help="uci: the rounds' probe reads reason_fit_after_copy (reward_model.probe_reason_features)")
    args = p.parse_args()
    import torch

    print(f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, CUDA {torch.cuda.is_available()}; "
          f"args: {vars(args)}\n", flush=True)
    out = {}
    if args.section in ("all", "efficiency"):
        runs = []
        for r in range(args.repeats):
            runs.append(efficiency(argparse.Namespace(**{**vars(args), "seed": args.seed + r})))
        if args.repeats > 1:
            summarise_efficiency(runs, args.target)
        out["efficiency"] = runs
    if args.section == "combine":  # pool the repeats of earlier efficiency runs (their --json-out files)
        runs = [r for f in args.combine.split(",") if f for r in json.loads(Path(f).read_text())["efficiency"]]
        summarise_efficiency(runs, args.target)
    if args.section == "rm-inputs-mean":  # the mean over seeds of earlier rm-inputs runs (their --json-out files)
        summarise_rm_inputs([json.loads(Path(f).read_text())["rm_inputs"] for f in args.combine.split(",") if f])
    if args.section == "versus":  # two efficiency runs on the same seeds, repeat by repeat
        summarise_efficiency(versus_runs(*args.combine.split(","), tags=args.tags.split(",")), args.target,
                             goal=" (base's random pairs as the reference)")
    if args.section in ("all", "ceiling"):
        out["ceiling"] = uci_ceiling(args)
    if args.section in ("all", "rm-inputs"):
        out["rm_inputs"] = reward_inputs_section(args)
    if args.section in ("all", "uci"):
        out["uci"] = uci(args)
    if args.section == "uci-more":
        out["uci_more"] = uci_more_shoppers(args)
    if args.section == "reasons":
        out["reasons"] = reasons_section(args)
    if args.section == "reasons-rm":
        out["reasons_rm"] = reasons_rm_section(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
