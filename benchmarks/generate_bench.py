"""Generation speed and list validity of the default policy (SmolLM2-135M-Instruct from the wheel).

Prints, for each batch size, completion tokens/s and lists/s of constrained sampling; then the share of
valid lists (see rlhf.parsing) over N demo contexts, unconstrained vs constrained (the product's grammar,
which forbids repeating the prompt's example reason) vs constrained-copies-allowed (the grammar without
that rule), with the problems that made lists invalid and what the reasons say. Contexts come from the
demo shop (rlhf.demo, built into a temporary store).

    nice -n 10 .venv/bin/python benchmarks/generate_bench.py                 # full: 1,8,32 and 200 contexts
    nice -n 10 .venv/bin/python benchmarks/generate_bench.py --batch-sizes 1,8 --validity-contexts 40
    .venv/bin/python benchmarks/generate_bench.py --skip-speed --skip-overhead --modes constrained \
        --validity-contexts 40 --validity-batch-size 8 --compare-attributes color,material,style,rating

Every validity row also gives the lists' true utility under the demo shop's hidden preferences
(``rlhf.demo.list_utility``: what the simulated annotators judge by). ``--compare-attributes KEYS``
samples each mode twice on the same contexts and seeds, once with those catalogue attributes in the
prompt (``contexts.item_attributes``) and once without, and prints the paired difference.

Figures are measurements of this machine at this moment: on a shared CPU they vary with load (the
script prints the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_views(n: int, data_dir: Path, attribute_sets: tuple[tuple[str, ...] | None, ...] = (None,)):
    """``n`` contexts of the demo shop as ContextViews (built in a temporary store), once per attribute
    set (None: the settings'), the settings, and the shop's true utility of a list."""
    from rlhf.demo import build_demo, utility_fn_for_store
    from rlhf.prompts import build_context_views
    from rlhf.settings import load_settings
    from storage import Store
    from storage.contexts import list_contexts

    settings = load_settings(store={"data_dir": data_dir})
    store = Store.from_settings(settings)
    build_demo(store, settings, with_accounts=False)
    with store.transaction() as con:
        contexts = list_contexts(con, limit=n)
        views = [build_context_views(con, contexts, attributes=keys) for keys in attribute_sets]
    return views, settings, utility_fn_for_store(store)


def reason_figures(lists, tokenizer=None, cap: int | None = None, views=None) -> dict:
    """How much the reasons say: copies of the prompt's example reason, reasons that repeat five or more
    of its words in a row (near copies), the share of distinct reasons, lists that give every item the
    same reason, mean length in words (reasons are what annotators read); with a tokenizer and the
    reason cap, reasons that used the whole cap (the grammar ended their line) and, of those, the ones
    whose last word is cut (it ends in a letter or digit with no punctuation: "... Loose Leaf Tea T");
    with the context views, reasons that begin with ANOTHER candidate's title (they describe the wrong
    item: "Oak Picture Frame | Oak Wall Hanging (Home Decor, ...)") and with their own item's title, and
    :func:`rlhf.reasons.line_verdicts` on every line: grounded, product lines (``copy``), of which under a
    name no candidate has or a bare product name, and the grounded count under the earlier checks (a bare
    name counted as grounded before 03fdc41; only a candidate's copied line was a copy before 3b90c85)."""
    import re

    from reason_verdicts import verdict_counts

    from rlhf.parsing import describes_other_item
    from rlhf.prompts import EXAMPLE_REASON, copies_example, letters_and_digits

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    example = words(EXAMPLE_REASON)
    example_runs = {tuple(example[i:i + 5]) for i in range(len(example) - 4)}

    def near_copy(text: str) -> bool:
        w = words(text)
        return any(tuple(w[i:i + 5]) in example_runs for i in range(len(w) - 4))

    def norm(text: str) -> str:
        return re.sub(r"[^a-z ]", "", text.lower()).strip()

    reasons = [it.reason for x in lists for it in x.parsed.items]
    titles = {v.context_id: {c.item_id: c.title for c in v.candidates} for v in views or []}
    other_title = own_title = 0
    verdicts: Counter = Counter()
    by_context = {v.context_id: v for v in views or []}
    for x in lists:
        for it in x.parsed.items if x.context_id in titles else []:
            mine = letters_and_digits(titles[x.context_id].get(it.item_id, ""))
            own_title += bool(mine) and letters_and_digits(it.reason).startswith(mine)
            other_title += describes_other_item(it.reason, it.item_id, titles[x.context_id]) is not None
        view = by_context.get(x.context_id)
        if view is not None:
            cats = {c.item_id: c.category for c in view.candidates}
            verdicts += verdict_counts(
                [(it.reason, titles[x.context_id].get(it.item_id), cats.get(it.item_id)) for it in x.parsed.items],
                [h.title for h in view.history], list(titles[x.context_id].values()))
    at_cap = ([r for r in reasons if len(tokenizer(" " + r.strip(), add_special_tokens=False)["input_ids"]) >= cap]
              if tokenizer is not None and cap else [])
    return {
        "at_cap": len(at_cap),
        "at_cap_unpunctuated": sum(r.strip()[-1:].isalnum() for r in at_cap),
        "end_with_punctuation": sum(r.strip()[-1:] in ".!?" for r in reasons) / max(1, len(reasons)),
        "reasons": len(reasons),
        "example_copies": sum(copies_example(r) for r in reasons),
        "example_near_copies": sum(near_copy(r) for r in reasons),
        "distinct_share": len({norm(r) for r in reasons}) / max(1, len(reasons)),
        "one_reason_lists": sum(len(x.parsed.items) > 1 and len({norm(it.reason) for it in x.parsed.items}) == 1
                                for x in lists),
        "mean_words": sum(len(r.split()) for r in reasons) / max(1, len(reasons)),
        "other_item_title": other_title,
        "own_item_title": own_title,
        "grounded": verdicts["grounded"], "product_lines": verdicts["copy"], "off_topic": verdicts["off_topic"],
        "invented_product_lines": verdicts["invented"], "bare_names": verdicts["bare_name"],
        "grounded_copy_rule_before": verdicts["grounded_copy_rule"],
        "grounded_before_names": verdicts["grounded_before_names"],
    }


def constraint_overhead(tokenizer, views, n_items: int, max_reason_tokens: int, batch: int = 8,
                        steps: int = 160) -> dict:
    """Milliseconds per decoding step that the constraint adds (processor) and per list (recompute).

    Random logits stand in for the model, so this isolates the state machine and mask building.
    """
    import torch

    from rlhf.constrained import ConstrainedListProcessor, apply_constraint, constraint_for_view

    torch.manual_seed(0)
    vocab = len(tokenizer)
    constraints = [constraint_for_view(tokenizer, views[i % len(views)], n_items, max_reason_tokens)
                   for i in range(batch)]
    processor = ConstrainedListProcessor(constraints, prompt_length=0)
    ids = torch.zeros((batch, 0), dtype=torch.long)
    spent = 0.0
    for _ in range(steps):
        logits = torch.randn(batch, vocab)
        start = time.perf_counter()
        scores = processor(ids, logits)
        spent += time.perf_counter() - start
        nxt = torch.multinomial(torch.softmax(scores, -1), 1)
        ids = torch.cat([ids, nxt], dim=1)
    per_step = spent / steps * 1000
    logits = torch.randn(batch, ids.shape[1], vocab)
    start = time.perf_counter()
    apply_constraint(logits, ids, constraints)
    recompute = (time.perf_counter() - start) / batch * 1000
    return {"batch": batch, "steps": steps, "processor_ms_per_step": per_step, "recompute_ms_per_list": recompute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--validity-contexts", type=int, default=200)
    parser.add_argument("--validity-batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: settings.generation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the policy's dtype (auto: as the product picks it, rlhf.models.pick_policy_dtype)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-validity", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--modes", default="unconstrained,constrained",
                        help="validity modes to run: unconstrained, constrained, constrained-copies-allowed")
    parser.add_argument("--compare-attributes", default="", metavar="KEYS",
                        help="validity: each mode with these catalogue attributes in the prompt (comma list, "
                        "contexts.item_attributes) and without any")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    import torch

    from rlhf.evaluation import paired_difference
    from rlhf.generate import generate_lists
    from rlhf.models import cpu_has_native_bf16, get_policy_model
    from storage.records import Context

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    needed = max([8] + ([] if args.skip_speed else batch_sizes)
                 + ([] if args.skip_validity else [args.validity_contexts]))
    compared = tuple(k.strip() for k in args.compare_attributes.split(",") if k.strip())
    attribute_sets = (compared, ()) if compared else (None,)
    with tempfile.TemporaryDirectory() as tmp:
        view_sets, settings, utility = demo_views(needed, Path(tmp) / "data", attribute_sets)
    views = view_sets[0]
    g = settings.generation
    max_new = args.max_new_tokens or g.max_new_tokens
    t0 = time.perf_counter()
    model, tokenizer = get_policy_model(settings.model.policy, device=args.device, dtype=args.dtype)
    device = str(next(model.parameters()).device)
    dtype = str(next(model.parameters()).dtype)
    load_s = time.perf_counter() - t0
    hw = {
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": device, "dtype": dtype, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "load_avg_start": os.getloadavg(), "torch": torch.__version__, "cpu_native_bf16": cpu_has_native_bf16(),
    }
    print(f"hardware: {json.dumps(hw)}")
    print(f"model {settings.model.policy} loaded in {load_s:.1f} s; {len(views)} demo contexts; "
          f"{len(views[0].candidates)} candidates each; list length {g.list_length}; max_new_tokens {max_new}; "
          f"max_reason_tokens {g.max_reason_tokens}")
    common = {"n_items": g.list_length, "temperature": g.temperature, "top_p": g.top_p, "top_k": g.top_k,
                  "max_new_tokens": max_new, "max_prompt_tokens": g.max_prompt_tokens,
                  "max_reason_tokens": g.max_reason_tokens, "seed": g.seed, "progress": False}
    results: dict = {"hardware": hw, "speed": [], "validity": {}}
    if not args.skip_overhead:
        over = constraint_overhead(tokenizer, views, g.list_length, g.max_reason_tokens)
        results["constraint_overhead"] = over
        print(f"\nconstraint overhead (random logits, batch {over['batch']}, {over['steps']} steps): "
              f"{over['processor_ms_per_step']:.1f} ms per decoding step; "
              f"{over['recompute_ms_per_list']:.1f} ms per list to recompute the masks (PPO)", flush=True)
    if not args.skip_speed:
        print("\nspeed (constrained sampling, one batch per size):")
        print(f"{'batch':>5} {'lists':>5} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'lists/s':>8}")
        for b in batch_sizes:
            start = time.perf_counter()
            lists = generate_lists(model, tokenizer, views[:b], samples_per_context=1, constrained=True,
                                   batch_size=b, **common)
            secs = time.perf_counter() - start
            toks = sum(x.completion_tokens for x in lists)
            row = {"batch_size": b, "lists": len(lists), "seconds": secs, "completion_tokens": toks,
                   "tokens_per_s": toks / secs, "lists_per_s": len(lists) / secs,
                   "mean_prompt_tokens": sum(x.prompt_tokens for x in lists) / len(lists)}
            results["speed"].append(row)
            print(f"{b:>5} {len(lists):>5} {secs:>8.1f} {toks:>7} {toks / secs:>9.1f} {len(lists) / secs:>8.3f}"
                  f"   (mean prompt {row['mean_prompt_tokens']:.0f} tokens)", flush=True)
    if not args.skip_validity:
        subset = views[: args.validity_contexts]
        print(f"\nvalidity over {len(subset)} demo contexts (1 sample each, T={g.temperature}, "
              f"batch {args.validity_batch_size}):")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        known = ("unconstrained", "constrained", "constrained-copies-allowed")
        if unknown := [m for m in modes if m not in known]:
            parser.error(f"unknown mode(s) {unknown}; choose from {known}")
        contexts = {v.context_id: Context(v.context_id, v.shopper_id, datetime(2000, 1, 1), [], []) for v in subset}
        runs = [(name, keys, run_views) for name in modes for keys, run_views in zip(attribute_sets, view_sets)]
        per_context: dict[tuple[str, tuple[str, ...] | None], dict[str, float]] = {}
        for name, keys, views_run in runs:
            subset = views_run[: args.validity_contexts]
            constrained = name != "unconstrained"
            start = time.perf_counter()
            lists = generate_lists(model, tokenizer, subset, samples_per_context=1, constrained=constrained,
                                   forbid_example=name == "constrained", batch_size=args.validity_batch_size,
                                   **common)
            shown = subset[0].attributes
            label = f"{name}, attributes {'+'.join(shown) or 'none'}" if args.compare_attributes else name
            short_to_item = {v.context_id: v.short_to_item for v in subset}
            value = per_context[(name, keys)] = {
                x.context_id: utility(contexts[x.context_id],
                                      [short_to_item[x.context_id].get(s, s) for s in x.parsed.short_ids])
                for x in lists}
            secs = time.perf_counter() - start
            valid = sum(x.parsed.is_valid for x in lists)
            kinds = Counter(k for x in lists for k in x.parsed.problem_kinds())
            items = sum(x.parsed.n_valid for x in lists) / (len(lists) * g.list_length)
            # Position bias: lists that are just the first N candidates in the order shown.
            in_order = sum(x.parsed.short_ids == [f"C{k:02d}" for k in range(1, g.list_length + 1)] for x in lists)
            reasons = reason_figures(lists, tokenizer, g.max_reason_tokens, subset)
            results["validity"][label] = {
                "attributes": list(shown), "mean_true_utility": sum(value.values()) / len(value),
                "true_utility": value, "mean_prompt_tokens": sum(x.prompt_tokens for x in lists) / len(lists),
                "lists": len(lists), "valid": valid, "rate": valid / len(lists), "usable_item_share": items,
                "problems": dict(kinds), "seconds": secs, "first_n_in_order": in_order, "reasons": reasons,
                "completion_tokens": sum(x.completion_tokens for x in lists),
                "example": lists[0].raw_text, "texts": [x.raw_text for x in lists],
            }
            print(f"  {label:>26}: mean true utility {sum(value.values()) / len(value):.3f}, mean prompt "
                  f"{results['validity'][label]['mean_prompt_tokens']:.0f} tokens")
            print(f"  {label:>26}: {valid}/{len(lists)} valid ({valid / len(lists):.0%}); usable items "
                  f"{items:.0%} of asked; lists with each problem: {dict(kinds)}; {in_order} lists are just "
                  f"C01..C{g.list_length:02d} in order; {secs:.0f} s", flush=True)
            print(f"    reasons: {reasons['reasons']}; copies of the prompt's example reason "
                  f"{reasons['example_copies']} (near copies, 5+ of its words in a row: "
                  f"{reasons['example_near_copies']}); distinct {reasons['distinct_share']:.0%}; lists repeating one "
                  f"reason for every item {reasons['one_reason_lists']}; mean {reasons['mean_words']:.1f} words; "
                  f"{reasons['at_cap']} used the whole {g.max_reason_tokens}-token cap, "
                  f"{reasons['at_cap_unpunctuated']} of them ending without punctuation; "
                  f"{reasons['end_with_punctuation']:.0%} of all end in . ! or ?; beginning with another "
                  f"candidate's title {reasons['other_item_title']}, with their own item's "
                  f"{reasons['own_item_title']}")
            print(f"    verdicts (rlhf.reasons): grounded {reasons['grounded']}, a product line {reasons['product_lines']} "
                  f"(under a name no candidate has {reasons['invented_product_lines']}, a bare product name "
                  f"{reasons['bare_names']}), off-topic {reasons['off_topic']}; grounded when a bare name counted "
                  f"{reasons['grounded_before_names']}, when only a candidate's copied line counted "
                  f"{reasons['grounded_copy_rule_before']}")
            print("    example: " + lists[0].raw_text.replace("\n", "\n             "))
        for name in modes if args.compare_attributes else []:
            with_attrs, without = per_context[(name, compared)], per_context[(name, ())]
            diff = paired_difference(with_attrs, without)
            results.setdefault("attributes_effect", {})[name] = asdict(diff)
            print(f"  {name}: true utility with attributes minus without, paired over {diff.n} contexts: "
                  f"{diff.mean:+.3f} [{diff.lo:+.3f}, {diff.hi:+.3f}]")
    results["hardware"]["load_avg_end"] = os.getloadavg()
    print(f"\nload average at end: {os.getloadavg()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
