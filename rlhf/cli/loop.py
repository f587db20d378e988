"""Loop commands: ``recfeedback simulate`` (a simulated crowd labels the queue) and
``recfeedback evaluate`` (offline metrics of policies against baselines)."""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from rlhf.cli.common import friendly_errors


@friendly_errors
def simulate_command(
    annotators: int = typer.Option(None, "--annotators", "-n", min=1, help="Crowd size (default: settings.simulation)."),
    labels: int = typer.Option(100, "--labels", "-m", min=1, help="Labels to submit (stops early when the queue is empty)."),
    crowd: str = typer.Option(None, "--crowd", help="default | clean | noisy (default: settings.simulation)."),
    seed: int = typer.Option(
        None, "--seed", min=0, help="Seed for the crowd, its answers and (when queue.seed is unset) the queue's draws."),
    utility: str = typer.Option("auto", "--utility",
                                help="Ground truth: auto (demo preferences if any, else purchases) | purchases."),
    reason_penalty: float = typer.Option(
        None, "--reason-penalty", min=0.0,
        help="Careful annotators also judge the reasons: utility-scale units off a list whose every reason is "
        "off-topic or a copied product line (default: settings.simulation; 0 = items only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Let simulated annotators label the queue through the same service the Label page uses."""
    from tqdm import tqdm

    from rlhf import simulate as sim
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    setup_logging()
    settings = get_settings()
    store = open_store(settings)
    with tqdm(total=labels, desc="simulated labels", unit="label", delay=1) as bar:  # no bar for a refusal
        summary = sim.label_queue(store, settings, labels, annotators=annotators, crowd=crowd, seed=seed,
                                  utility=utility, reason_penalty=reason_penalty, progress=bar.update)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{summary['labels']} labels by {summary['annotators']} simulated annotators ({summary['crowd']} crowd); "
               f"stopped: {summary['stopped']}.")
    typer.echo("choices: " + (", ".join(f"{choice.replace('_', ' ')} {n}" for choice, n in summary["choices"].items())
                              or "none"))
    typer.echo(f"simulated time on task: {summary['simulated_hours']} h; wall time {summary['wall_s']} s; "
               f"service p50 {summary['service_p50_ms']} ms, p95 {summary['service_p95_ms']} ms")
    typer.echo(f"crowd raw pairwise agreement (synthetic check): {summary['crowd_agreement_synthetic']}")
    if not summary["labels"] and summary["stopped"] == "queue empty":
        typer.echo("Nothing to label: the queue has no open pair. `recfeedback pairs bootstrap` writes a first "
                   "batch (the app does so on its first start), `pairs make` pairs lists already generated.")
    if summary["labels"]:
        right = summary["right_where_lists_differ"]
        typer.echo(f"truth: {summary['truth_ties_share']:.0%} of these labels were on pairs whose lists are worth "
                   "the same (an answer there says nothing about this truth); "
                   + (f"where they differ, {right:.0%} of the A/B answers picked the better list."
                      if right is not None else "no A/B answer fell on a pair whose lists differ."))


@friendly_errors
def evaluate_command(
    policy: list[str] = typer.Option(
        ..., "--policy", "-p", help="Policy id (repeat to compare several)."
    ),
    split: str = typer.Option("heldout", "--split", help="Contexts to evaluate on."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate on the first N contexts only."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Add popularity and co-purchase."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON records."),
) -> None:
    """Print HR@N / NDCG@N (95% bootstrap intervals), validity, diversity, novelty, coverage and the share of
    reasons about the item or the shopper; then the first policy's NDCG@N minus each other policy's and
    each baseline's, and its share of grounded reasons minus each other policy's, paired over the same shoppers."""
    from rlhf.evaluation import compare_policies, paired_verdict
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    setup_logging()
    settings = get_settings()
    store = open_store(settings)
    table, differences, reasons = compare_policies(store, policy, settings=settings, split=split, baselines=baselines,
                                                   limit=limit)
    if as_json:
        typer.echo(table.to_json(orient="records", indent=2))
        return
    n = settings.generation.list_length
    typer.echo(format_table(table, n))
    if policy[0] not in set(table["policy"]):
        typer.echo(f"{policy[0]} has no lists on the {split} contexts, so nothing is compared with it. "
                   f"Sample them with `recfeedback generate --policy-id {policy[0]} --split {split}`.")
    for other, est in differences.items():
        typer.echo(f"NDCG@{n} {policy[0]} minus {other}, paired over {est.n} shopper{'s' * (est.n != 1)}: "
                   f"{est.mean:+.4f} [{est.lo:+.4f}, {est.hi:+.4f}] ({paired_verdict(est.lo, est.hi)})")
    for other, est in reasons.items():
        typer.echo(f"Reasons grounded, {policy[0]} minus {other}, paired over {est.n} shopper{'s' * (est.n != 1)}: "
                   f"{est.mean:+.4f} [{est.lo:+.4f}, {est.hi:+.4f}] ({paired_verdict(est.lo, est.hi)})")
    for other in dict.fromkeys(policy[1:]):
        if other not in differences and other != policy[0]:
            typer.echo(f"{other} has no lists on the {split} contexts: nothing to compare {policy[0]} with.")


def format_table(table: Any, n: int) -> str:
    """The evaluation table as aligned text, intervals beside their means."""
    def ci(row: Any, name: str, lo: str, hi: str) -> str:
        if row[name] is None or (isinstance(row[name], float) and math.isnan(row[name])):
            return "-"
        return f"{row[name]:.4f} [{row[lo]:.4f}, {row[hi]:.4f}]"

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    header = ["policy", "contexts", f"HR@{n} [95% CI]", f"NDCG@{n} [95% CI]", "valid", "items ok", "diversity",
              "novelty", "coverage", "reasons grounded [95% CI]"]
    rows = [header]
    for _, r in table.iterrows():
        rows.append([
            str(r["policy"]), f"{r['contexts_with_targets']}/{r['contexts']}",
            ci(r, f"hr@{n}", "hr_lo", "hr_hi"), ci(r, f"ndcg@{n}", "ndcg_lo", "ndcg_hi"),
            num(r["validity"], ".3f"), num(r["item_validity"], ".3f"), num(r["diversity"], ".3f"),
            num(r["novelty"], ".0f"), num(r["coverage"], ".4f"),
            ci(r, "reasons_grounded", "reasons_lo", "reasons_hi") if "reasons_grounded" in r else "-",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(contexts = with later purchases / evaluated; HR and NDCG count the whole catalogue; reasons "
                 "grounded = share of reasons that name a word of the item or of the shopper's history besides any "
                 "product line they begin with, and are more than a product's name)")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)
    app.command("evaluate")(evaluate_command)
