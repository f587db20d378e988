"""``recfeedback generate`` (the policy writes lists) and ``recfeedback pairs make`` (fill the queue)."""

from __future__ import annotations

from typing import Any

import typer

from rlhf.cli.common import friendly_errors
from rlhf.wording import counted

pairs_app = typer.Typer(help="Build A/B pairs of lists for the labelling queue; review them; make gold pairs.",
                        no_args_is_help=True)


@friendly_errors
def generate_command(
    policy_id: str = typer.Option(None, "--policy-id", help="Policy to sample (default: the base model's id). "
                                  "A trained policy loads its base model plus LoRA adapter; a baseline "
                                  "(baseline-popularity, baseline-copurchase) writes template lists."),
    model: str = typer.Option(None, "--model", help="Model for a NEW policy id (default: settings.model.policy): "
                              "a local folder, a .gguf file or a cached Hugging Face id."),
    contexts: int = typer.Option(None, "--contexts", min=1, help="How many contexts without lists of this policy "
                                 "(default: settings.generation.contexts_per_run)."),
    context_id: list[str] = typer.Option(
        None, "--context-id", help="Exact context(s) to sample for (repeatable)."
    ),
    split: str = typer.Option("train", help="Context split to draw from: train, heldout or all."),
    buyers_only: bool = typer.Option(False, "--buyers-only", help="With --split heldout: only shoppers who bought "
                                     "something after the cut, the ones HR and NDCG count (e.g. to measure a "
                                     "round on more shoppers than its report had)."),
    samples: int = typer.Option(None, "--samples", min=1, help="Lists per context (default: settings)."),
    constrained: bool = typer.Option(None, "--constrained/--no-constrained",
                                     help="Force the format and candidate ids while decoding (default: settings)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Prompts per batch (default: settings)."),
    temperature: float = typer.Option(None, min=0.0, help="Sampling temperature; 0 is greedy (default: settings)."),
    seed: int = typer.Option(None, min=0, help="Random seed (default: settings.generation.seed)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (off: for logs)."),
) -> None:
    """Sample recommendation lists with reasons from a policy and store them."""
    from rlhf.generate import generate_for_store
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    if buyers_only and (split != "heldout" or context_id):
        raise typer.BadParameter("--buyers-only picks held-out contexts: use it with --split heldout and "
                                 "without --context-id.")
    setup_logging(progress=progress)
    settings = get_settings()
    if settings.model.cpu_threads:
        import torch

        torch.set_num_threads(settings.model.cpu_threads)
    store = open_store(settings)
    if buyers_only:
        from rlhf.evaluation import evaluable_contexts_without_lists
        from rlhf.generate import default_policy_id

        wanted = contexts if contexts is not None else settings.generation.contexts_per_run
        context_id = evaluable_contexts_without_lists(
            store, settings, policy_id or default_policy_id(model or settings.model.policy), wanted)
        if not context_id:
            typer.echo("Nothing to do: every held-out shopper who bought again after the cut already has lists "
                       f"from {policy_id or 'the base model'}.")
            return
    run = generate_for_store(
        store, settings, policy_id, context_ids=context_id or None, n_contexts=contexts,
        split=None if split == "all" else split, model_spec=model, samples_per_context=samples,
        constrained=constrained, seed=seed, batch_size=batch_size, temperature=temperature, progress=progress,
    )
    if not run.generation_ids:
        asked = "every context asked for" if context_id else f"every context of split {split!r}"
        typer.echo(f"Nothing to do: {asked} already has lists from {run.policy_id}.")
        return
    speed = f", {run.completion_tokens / run.seconds:.1f} tokens/s" if run.seconds and run.completion_tokens else ""
    typer.echo(
        f"{run.n_generations} lists for {counted(run.n_contexts, 'context')} from "
        f"{run.policy_id}: "
        f"{run.n_valid} valid ({run.validity:.0%}), {run.seconds:.1f} s{speed}."
    )


@pairs_app.command("make")
@friendly_errors
def pairs_make(
    strategy: str = typer.Option("same_policy", help="same_policy, new_vs_previous or vs_baseline."),
    policy: str = typer.Option(None, "--policy", help="Policy whose lists are paired (default: the latest LLM policy)."),
    baseline: str = typer.Option(None, help="For vs_baseline: popularity (default) or copurchase."),
    limit: int = typer.Option(None, min=1, help="At most this many new pairs (default: as many as possible)."),
    per_context: int = typer.Option(1, "--per-context", min=1, help="At most this many new pairs per context."),
) -> None:
    """Pair stored lists and add the pairs to the labelling queue (never twice the same pair)."""
    from rlhf.pairs import make_pairs
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    if baseline is not None and strategy != "vs_baseline":
        raise typer.BadParameter(f"--baseline names the other side of vs_baseline pairs; {strategy} pairs have "
                                 "none. Add --strategy vs_baseline, or leave --baseline out.", param_hint="'--baseline'")
    setup_logging()
    settings = get_settings()
    report = make_pairs(open_store(settings), settings, strategy=strategy, policy_id=policy,
                        baseline=baseline or "popularity",
                        limit=limit, per_context=per_context)
    other = f" vs {report.other_policy_id}" if report.other_policy_id else ""
    typer.echo(
        f"{counted(report.created, f'new {strategy} pair')} ({report.policy_id}{other}) over "
        f"{counted(report.contexts_considered, 'context')}; skipped {report.skipped_identical} identical, "
        f"{report.skipped_existing} already queued, "
        f"{report.skipped_empty} lists without usable items."
    )
    if report.on_heldout:
        verb = "is" if report.on_heldout == 1 else "are"
        typer.echo(f"{report.on_heldout} of them {verb} on held-out shoppers (the lists a round evaluates): their "
                   "labels measure the reward model and the human win rate, and never train it.")


@pairs_app.command("bootstrap")
@friendly_errors
def pairs_bootstrap(
    pairs: int = typer.Option(None, "--pairs", min=1, help="Contexts to sample two lists for, one pair each "
                              "(default: settings.demo.initial_pairs)."),
    chunk: int = typer.Option(None, "--chunk", min=1, help="Contexts per chunk; each chunk's pairs are queued at once "
                              "(default: settings.demo.initial_chunk_contexts)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per chunk."),
) -> None:
    """Fill a new store's queue with a first batch of pairs written by the real policy.

    `recfeedback app` runs this in the background when the store has no pairs yet; the Label page
    shows its progress.
    """
    from rlhf.bootstrap import run_bootstrap
    from rlhf.runtime import open_store, setup_logging
    from rlhf.settings import get_settings

    setup_logging(progress=progress)
    settings = get_settings()
    if settings.model.cpu_threads:
        import torch

        torch.set_num_threads(settings.model.cpu_threads)
    status = run_bootstrap(open_store(settings), settings, n_pairs=pairs, chunk_contexts=chunk, progress=progress)
    if status.state == "failed":
        typer.secho(f"Error: {status.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{status.pairs} pairs over {status.contexts_done} contexts from {status.policy_id} are in the queue.")


def _echo_list(side: str, shown: Any) -> None:
    typer.echo(f"\nList {side}" + (f"  [{'; '.join(shown.problems)}]" if shown.problems else ""))
    for item in shown.items:
        badges = f"  [{'; '.join(item.badges)}]" if item.badges else ""
        price = f", {item.price:.2f}" if item.price is not None else ""
        typer.echo(f"  {item.rank}. {item.title} ({item.category or 'no category'}{price}) - {item.reason}{badges}")


@pairs_app.command("show")
@friendly_errors
def pairs_show(pair_id: str = typer.Argument(..., help="The pair (ids in `export` files and the Agreement page).")) -> None:
    """Show a pair as annotators see it, list A first, with the labels it has: to review it, e.g. before
    giving it a gold answer."""
    from rlhf.annotation import pair_as_shown
    from rlhf.gold import gold_of, label_tally
    from rlhf.runtime import open_store

    store = open_store()
    task = pair_as_shown(store, pair_id)
    typer.echo(f"Pair {pair_id}, shopper {task.shopper_id}: bought (most recent first) "
               + "; ".join(item.title for item in task.history[:8])
               + (f"; and {len(task.history) - 8} more" if len(task.history) > 8 else ""))
    typer.echo(f"{counted(len(task.candidates), 'candidate')} to choose from.")
    _echo_list("A", task.left)
    _echo_list("B", task.right)
    tally = label_tally(store, pair_id)
    typer.echo("\nLabels: " + (", ".join(f"{choice} {n}" for choice, n in sorted(tally.items())) or "none yet"))
    gold = gold_of(store, pair_id)
    if gold is not None:
        typer.echo(f"Gold: answer {gold.answer}, given by {gold.created_by or 'an import'}"
                   + (f" ({gold.note})" if gold.note else "") + ".")


@pairs_app.command("gold")
@friendly_errors
def pairs_gold(
    pair_id: str = typer.Argument(..., help="The pair (`pairs show PAIR_ID` shows it)."),
    answer: str = typer.Argument(..., help="The right answer in the pair's own terms: A, B, tie or both_bad."),
    note: str = typer.Option(None, "--note", help="Why (kept with the answer)."),
    by: str = typer.Option("cli", "--by", help="Recorded as who gave the answer."),
) -> None:
    """Make a pair gold: the queue mixes it into annotators' work (queue.gold_rate) and the Agreement page
    scores each annotator's answers on it. Gold pairs never train a reward model."""
    from rlhf.gold import gold_answer, mark_gold
    from rlhf.runtime import open_store

    before = mark_gold(open_store(), pair_id, answer, by=by, note=note)
    answer = gold_answer(answer)
    replaced = f" (it was {before})" if before and before != answer else ""
    typer.echo(f"Pair {pair_id} is gold, answer {answer}{replaced}: annotators who have not labelled it will get "
               "it among their pairs.")


@pairs_app.command("gold-list")
@friendly_errors
def pairs_gold_list() -> None:
    """The gold pairs: answer, who gave it, and how many current labels on each agree."""
    from rlhf.gold import gold_pairs
    from rlhf.runtime import open_store

    golds = gold_pairs(open_store())
    if not golds:
        typer.echo("No gold pairs yet: `recfeedback pairs gold PAIR_ID ANSWER` makes one.")
        return
    typer.echo(f"{'pair':<40} {'answer':<9} {'agree':>9}  by")
    for g in golds:
        typer.echo(f"{g.pair_id:<40} {g.answer:<9} {f'{g.agreeing}/{g.labels}':>9}  {g.created_by or ''}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.add_typer(pairs_app, name="pairs")
