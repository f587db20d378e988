"""Sections 2p-2s, the reasons: how many of an earlier run's reasons are grounded or copies (``reasons``), and
whether the probe learns reasons from a crowd that judges them (``reasons-rm``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from loop_sections.shared import differs, earlier_run


def reasons_section(args) -> dict:
    """How many reasons are about the item or the shopper (:mod:`rlhf.reasons`), for every round's policy and
    the zero-shot model of an earlier ``--section uci`` (or ``uci-more``) run, read from its store as it is
    (``--from-workdir``; nothing is generated or written): the product's evaluation table, and the last
    round's share minus each other policy's, paired over the shoppers both have lists for."""
    from rlhf.cli.loop import format_table
    from rlhf.evaluation import compare_policies

    store, settings, done = earlier_run(args.from_workdir)
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

    store, settings, _ = earlier_run(args.from_workdir)
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

    test_items = [(a, b) for a, b in pairs["heldout"] if differs(u_item[a], u_item[b])]
    test_reasons = [(a, b) for a, b in pairs["heldout"]
                    if not differs(u_item[a], u_item[b]) and abs(off[a] - off[b]) >= 0.2 - 1e-9]
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
