"""What a store's stored lists' reasons are, per policy: grounded, only a product line (copied from the prompt,
under a name no candidate has, or a bare product name) or off-topic (:func:`rlhf.reasons.line_verdicts`), and
the share grounded under the earlier rules (a bare name grounded before 03fdc41; before 3b90c85 only a
copied candidate line was a product line). Reads the lists as
they are stored (`recfeedback generate`, rounds); generates and writes nothing. Prints figures.

    .venv/bin/python benchmarks/reasons_bench.py --data-dir /tmp/uci/data            # held-out shoppers, every policy
    .venv/bin/python benchmarks/reasons_bench.py --data-dir DIR --policy ID --split all

The grounded shares are averaged per shopper first, as the evaluation table's ``reasons grounded`` is.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the store's folder (settings.store.data_dir)")
    parser.add_argument("--policy", action="append", default=None, help="a policy id (repeatable; default: all)")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train", "all"])
    args = parser.parse_args()

    from reason_verdicts import verdict_counts

    from rlhf.settings import load_settings
    from storage import Store
    from storage import contexts as contexts_repo
    from storage import generations as gen_repo
    from storage.catalog import get_items

    store = Store.from_settings(load_settings(store={"data_dir": Path(args.data_dir)}))
    with store.transaction() as con:
        contexts = {c.context_id: c for c in contexts_repo.list_contexts(con)
                    if args.split == "all" or c.split == args.split}
        policies = args.policy or [p.policy_id for p in gen_repo.list_policies(con) if p.kind == "llm"]
        gens = gen_repo.generations_for_policies(con, policies, context_ids=list(contexts))
        items = get_items(con, sorted({x.item_id for g in gens for x in g.items}
                                      | {i for c in contexts.values() for i in (*c.history, *c.candidates)}))
    title = {i: it.title for i, it in items.items()}
    category = {i: it.category for i, it in items.items()}
    print(f"store {args.data_dir}: {len(contexts)} {args.split} contexts, {len(gens)} lists of {len(policies)} policies")
    for policy in policies:
        totals: Counter = Counter()
        # context -> (grounded, before names, copy rule) per list
        shares: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for g in (g for g in gens if g.policy_id == policy and g.items):
            c = contexts[g.context_id]
            counts = verdict_counts([(x.reason, title.get(x.item_id), category.get(x.item_id)) for x in g.items],
                                    [title.get(h) for h in c.history], [title.get(i) for i in c.candidates])
            totals += counts
            shares[g.context_id].append(tuple(counts[k] / len(g.items) for k in (
                "grounded", "grounded_before_names", "grounded_copy_rule")))
        if not shares:
            print(f"  {policy}: no lists")
            continue
        per_context = [[sum(col) / len(rows) for col in zip(*rows)] for rows in shares.values()]
        now, before_names, copy_rule = (sum(col) / len(per_context) for col in zip(*per_context))
        n = totals["grounded"] + totals["copy"] + totals["off_topic"]
        print(f"  {policy}: {n} reasons over {len(shares)} shoppers: grounded {totals['grounded']}, a product line "
              f"{totals['copy']} (under a name no candidate has {totals['invented']}, a bare product name "
              f"{totals['bare_name']}), off-topic {totals['off_topic']}; reasons grounded (per shopper) {now:.4f}, "
              f"with bare names grounded {before_names:.4f}, under the copy-only rule {copy_rule:.4f}")


if __name__ == "__main__":
    main()
