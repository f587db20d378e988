"""Section 1, label efficiency: labels needed to reach a reward-model held-out accuracy with active selection
(rlhf.active, the round's mix, or an ``--arm`` variant) against random pairs; ``versus`` and ``combine`` pair
and pool earlier runs."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loop_sections.shared import PROBE_REASONS, differs, list_text, uci_store
from rlhf.settings import load_settings
from storage import Store


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
        store, settings = uci_store(args, Path(tmp.name), **rm_settings)
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
    test = [p for p in pairs_for(held_ctx) if differs(true_u[p.gen_a], true_u[p.gen_b])]
    test = [test[i] for i in rng.permutation(len(test))[: args.test_pairs]]
    crowd = sim.make_crowd(args.crowd_size, args.le_crowd, seed=args.seed)
    scale = sim.utility_scale([true_u[p.gen_a] - true_u[p.gen_b] for p in pool])
    print(f"pool: {len(pool)} candidate pairs on {len(train_ctx)} contexts; test: {len(test)} pairs on "
          f"{len(held_ctx)} held-out contexts (label = true utility order); crowd {len(crowd)}, scale {scale:.3f}")
    on_pool = crowd_on_pool(crowd, np.array([[true_u[p.gen_a], true_u[p.gen_b]] for p in pool]), scale=scale,
                            floor=getattr(utility, "floor", None), seed=args.seed)
    on_pool.update(flat_contexts(pool, lists, true_u, train_ctx))
    print(f"training contexts whose {args.lists_per_context} lists are all worth the same: {on_pool['flat_contexts']:.0%}, "
          f"holding {on_pool['no_difference_on_flat']:.0%} of the pairs with no true difference")
    print(f"crowd on the pool: {on_pool['no_difference']:.1%} of pairs have no true difference; raw agreement "
          f"(3 labels a pair) {on_pool['agreement_all']:.3f} on all pairs, {on_pool['agreement_differ']:.3f} on "
          f"those that differ, where one label picks the truly better list {on_pool['accuracy_differ']:.3f} of the time")

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
        frame = pd.DataFrame([{"prompt": prompt(by_ctx[c]), "chosen": list_text(lists[w][1], titles, cats),
                               "rejected": list_text(lists[lo][1], titles, cats), "margin": 0.0}
                              for c, w, lo in examples])
        with tempfile.TemporaryDirectory() as out:
            result = train_reward_model(frame, settings=settings, output_dir=out, progress=False)
        scores = result.scorer.score([prompt(by_ctx[lists[g][0]]) for g in gids],
                                     [list_text(lists[g][1], titles, cats) for g in gids])
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
    return {"curves": curves, "needed": reach, "crowd": on_pool}


def crowd_on_pool(crowd, utilities: np.ndarray, *, scale: float, floor: float | None, seed: int) -> dict:
    """What the crowd's labels on a pool of pairs (true utilities ``[n, 2]``) can carry: the share of pairs
    with no true difference (a label there is noise whatever the crowd), raw agreement on all pairs and on
    those that differ, and how often one label picks the better list where there is one. Every figure
    uses the pool's own utility scale, as the labelling does."""
    from rlhf import simulate as sim

    differ = utilities[differs(utilities[:, 0], utilities[:, 1])]
    return {"no_difference": 1.0 - len(differ) / max(len(utilities), 1),
            "agreement_all": sim.raw_agreement(crowd, utilities, seed=seed, floor=floor, scale=scale),
            "agreement_differ": sim.raw_agreement(crowd, differ, seed=seed, floor=floor, scale=scale),
            "accuracy_differ": sim.accuracy_against_truth(crowd, differ, seed=seed, scale=scale)}


def flat_contexts(pool, lists: dict, true_u: dict[str, float], train_ctx: list[str]) -> dict:
    """The share of training contexts whose lists are all worth the same (every pair there is a tie in
    truth), and the share of the pool's no-difference pairs that sit on them."""
    values: dict[str, set[float]] = {}
    for g, (cid, _) in lists.items():
        values.setdefault(cid, set()).add(round(true_u[g], 9))
    flat = {cid for cid in train_ctx if len(values.get(cid, ())) == 1}
    ties = [p for p in pool if not differs(true_u[p.gen_a], true_u[p.gen_b])]
    return {"flat_contexts": len(flat) / max(len(train_ctx), 1),
            "no_difference_on_flat": sum(p.context_id in flat for p in ties) / max(len(ties), 1)}


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
