"""Label commands: ``recfeedback import-labels`` and ``recfeedback agreement report``."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import typer

from rlhf.cli.common import friendly_errors
from rlhf.wording import counted

agreement_app = typer.Typer(help="Inter-annotator agreement, annotator quality and aggregation.",
                            no_args_is_help=True)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{what} entries look like NAME=VALUE, got {item!r}.")
        out[key.strip()] = value.strip()
    return out


@friendly_errors
def import_labels_command(
    path: Path = typer.Argument(..., help="CSV, TSV, Parquet or JSONL file with one label per row."),
    map_: list[str] = typer.Option(
        None, "--map", help="FIELD=COLUMN: our field (pair_id, annotator_id, choice, strength, gold, created_at, "
                            "time_ms, seconds, rationale, left_side) read from the file's COLUMN. Repeatable."),
    choice: list[str] = typer.Option(None, "--choice", help="RAW=OURS: translate a choice/gold value, e.g. "
                                                             "a1=A, a2=B, equal=tie. Repeatable."),
    annotator_prefix: str = typer.Option("", help="Prefix for external annotator ids, e.g. 'ukp:'."),
) -> None:
    """Import pairwise labels collected elsewhere (validated first; all or nothing)."""
    from rlhf.label_import import LabelMapping, import_labels
    from rlhf.runtime import open_store

    mapping = LabelMapping(columns=_pairs(map_, "--map"), choice_values=_pairs(choice, "--choice"),
                           annotator_prefix=annotator_prefix)
    report = import_labels(open_store(create=True), path, mapping)  # labels may be a new store's first data
    typer.echo(
        f"Imported {counted(report.labels, 'label')} on {counted(report.pairs_created + report.pairs_existing, 'pair')}"
        f" ({counted(report.pairs_created, 'new external pair')}, {report.pairs_existing:,} already in the store), "
        f"{counted(report.annotators_created, 'new external annotator')}, "
        f"{counted(report.gold_answers, 'gold answer')} in {report.seconds:.1f} s."
    )


def _day(value: datetime | None) -> date | None:
    return None if value is None else value.date()


@agreement_app.command("report")
@friendly_errors
def agreement_report(
    round_: list[str] = typer.Option(None, "--round", help="Only pairs of these rounds ('(no round)' for none)."),
    strategy: list[str] = typer.Option(None, "--strategy", help="Only pairs of these strategies."),
    annotator: list[str] = typer.Option(None, "--annotator", help="Only labels by these annotators."),
    source: list[str] = typer.Option(None, "--source", help="Only labels from these sources (app, import, ...)."),
    since: datetime = typer.Option(None, formats=["%Y-%m-%d"], help="First day (UTC) of labels to include."),
    until: datetime = typer.Option(None, formats=["%Y-%m-%d"], help="Last day (UTC) of labels to include."),
    bootstrap: int = typer.Option(None, min=0, help="Bootstrap resamples for the 95% intervals (default: settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print agreement coefficients, aggregation accuracy against gold and flagged annotators (with --json, also
    every annotator's quality figures, as the Agreement page's Annotators table has them)."""
    from rlhf.dashboard import build_dashboard
    from rlhf.runtime import jsonable, open_store
    from rlhf.settings import get_settings
    from storage.analytics import LabelSelection

    selection = LabelSelection(
        round_ids=tuple(round_ or ()) or None, strategies=tuple(strategy or ()) or None,
        annotators=tuple(annotator or ()) or None, sources=tuple(source or ()) or None,
        date_from=_day(since), date_to=_day(until),
    )
    settings = get_settings()
    dash = build_dashboard(open_store(settings), selection, settings, n_boot=bootstrap)
    flagged = dash.quality[dash.quality["flags"] != ""] if len(dash.quality) else dash.quality
    fewest = int(dash.summary["n_items"].min()) if len(dash.summary) else 0
    few = bool(len(dash.summary)) and fewest < settings.quality.min_pairs_for_agreement
    if as_json:
        typer.echo(json.dumps(jsonable({  # NaN (no gold labels, say) becomes null: strict parsers refuse NaN
            "counts": dash.counts,
            "agreement": dash.summary.to_dict(orient="records"),
            "agreement_rests_on_few_pairs": few,  # below quality.min_pairs_for_agreement, as the page warns
            "aggregation": dash.aggregation_report.to_dict(orient="records"),
            "flagged_annotators": flagged[["annotator_id", "labels", "flags"]].to_dict(orient="records"),
            "annotators": dash.quality.to_dict(orient="records"),  # the Agreement page's Annotators table
            "seconds": dash.timings,
        }), indent=2, default=str, allow_nan=False))
        return
    c = dash.counts
    typer.echo(f"{c['labels']:,} labels on {c['pairs']:,} pairs by {c['annotators']:,} annotators "
               f"({c['pairs_with_2plus']:,} pairs with 2+ labels; {c['reshows']:,} re-shows)")
    if dash.summary.empty:
        typer.echo("No pair has two labels yet, so there is no agreement to report.")
    else:
        typer.echo("\nAgreement (95% bootstrap interval over pairs)")
        for r in dash.summary.itertuples():
            interval = f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low == r.ci_low else "(no interval)"
            typer.echo(f"  {r.label:<52} {r.value:7.4f}  {interval}  n={r.n_items:,}")
            typer.echo(f"      {r.convention}")
        if few:
            typer.secho(f"Warning: some coefficients rest on {counted(fewest, 'pair')} with two or more labels "
                        f"(fewer than {settings.quality.min_pairs_for_agreement}, "
                        "quality.min_pairs_for_agreement): read them with their intervals.",
                        fg=typer.colors.YELLOW)
    if len(dash.aggregation_report):
        typer.echo("\nAggregation")
        for r in dash.aggregation_report.itertuples():
            gold = f"accuracy vs gold {r.gold_accuracy:.4f} on {r.gold_pairs:,} pairs" if r.gold_pairs else "no gold"
            typer.echo(f"  {r.method:<12} {r.pairs:,} pairs, mean confidence {r.mean_confidence:.3f}, "
                       f"{r.contested_pairs:,} contested; {gold}")
    typer.echo(f"\nFlagged annotators: {len(flagged):,} of {len(dash.quality):,}")
    for r in flagged.sort_values("labels", ascending=False).head(20).itertuples():
        typer.echo(f"  {r.annotator_id:<24} {r.labels:>6} labels  {r.flags}")
    typer.echo(f"\nComputed in {dash.timings.get('compute_total', 0):.2f} s (read {dash.timings.get('read', 0):.2f} s)")


def register(app: typer.Typer) -> None:
    app.command("import-labels")(import_labels_command)
    app.add_typer(agreement_app, name="agreement")
