"""Annotation commands: export labels, set the labelling guidelines, see the queue."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from rlhf.cli.common import friendly_errors
from rlhf.errors import RecFeedbackError

guidelines_app = typer.Typer(help="Show or set the labelling guidelines shown on the Label page.", no_args_is_help=True)
queue_app = typer.Typer(help="Inspect the labelling queue.", no_args_is_help=True)


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    trl = "trl"


#: The export format a file name's suffix asks for, and the suffix each format writes.
SUFFIX_FORMATS = {".parquet": ExportFormat.parquet, ".csv": ExportFormat.csv, ".jsonl": ExportFormat.trl}
SUFFIX_OF = {fmt: suffix for suffix, fmt in SUFFIX_FORMATS.items()}


class TrlStyle(str, Enum):
    conversational = "conversational"
    text = "text"


@friendly_errors
def export_command(
    out: Path = typer.Option(..., "--out", help="File to write (replaced atomically). A .parquet, .csv or .jsonl "
                             "name picks the format."),
    fmt: ExportFormat | None = typer.Option(None, "--format", help="parquet or csv: every current label (csv for "
                                            "a spreadsheet); trl: prompt/chosen/rejected/margin JSONL for "
                                            "trl.RewardTrainer. Default: from --out's suffix."),
    style: TrlStyle = typer.Option(TrlStyle.conversational, help="TRL only: chat messages or plain strings."),
    with_ids: bool = typer.Option(False, "--with-ids", help="TRL only: add label_id, pair_id, annotator_id."),
    include_gold: bool = typer.Option(False, "--include-gold", help="TRL only: keep labels on gold pairs, which "
                                      "measure annotators (left out by default, as RecFeedback's own reward model "
                                      "leaves them out)."),
    include_heldout: bool = typer.Option(False, "--include-heldout", help="TRL only: keep labels on held-out "
                                         "shoppers, whom offline evaluation scores policies on (left out by default, "
                                         "as RecFeedback's own reward model leaves them out)."),
) -> None:
    """Export labels (undone labels are never exported)."""
    from rlhf.export import export_labels
    from rlhf.runtime import open_store

    suffix_says = _format_from_suffix(out) if out.suffix.lower() in SUFFIX_FORMATS else None
    if fmt is not None and suffix_says is not None and fmt is not suffix_says:
        raise typer.BadParameter(f"--format {fmt.value} does not write {out.suffix} files; name the file "
                                 f"{SUFFIX_OF[fmt]} or leave --format out.", param_hint="--format")
    fmt = fmt or _format_from_suffix(out)
    trl_only = [flag for flag, given in (("--style", style is not TrlStyle.conversational), ("--with-ids", with_ids),
                                         ("--include-gold", include_gold), ("--include-heldout", include_heldout)) if given]
    if fmt is not ExportFormat.trl and trl_only:
        raise typer.BadParameter(f"{', '.join(trl_only)} {'applies' if len(trl_only) == 1 else 'apply'} only to "
                                 f"the TRL export; the {fmt.value} export has every current label with its ids.",
                                 param_hint=trl_only[0])
    store = open_store()
    kwargs = {} if fmt is not ExportFormat.trl else {
        "style": style.value, "with_ids": with_ids, "include_gold": include_gold, "include_heldout": include_heldout}
    summary = export_labels(store, out, fmt=fmt.value, **kwargs)
    typer.echo(summary.sentence())


def _format_from_suffix(out: Path) -> ExportFormat:
    """The export format a file name asks for (.parquet, .csv, or .jsonl for TRL), else a request to say it."""
    if out.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[out.suffix.lower()]
    raise typer.BadParameter(f"cannot tell the format from the name {out.name!r}: name the file .parquet, .csv or "
                             ".jsonl, or give --format parquet|csv|trl.", param_hint="--format")


@guidelines_app.command("set")
@friendly_errors
def guidelines_set(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A markdown file."),
    by: str = typer.Option("cli", help="Recorded as the author of this version."),
) -> None:
    """Replace the guidelines with the content of a markdown file (the old version is kept)."""
    from rlhf.annotation import set_guidelines
    from rlhf.runtime import open_store

    try:
        body = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecFeedbackError(f"{file.name} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                               f"{exc.start}); save it as UTF-8 and try again.") from None
    version = set_guidelines(open_store(), body, updated_by=by)
    typer.echo(f"Guidelines saved as version {version}.")


@guidelines_app.command("show")
@friendly_errors
def guidelines_show() -> None:
    """Print the current guidelines."""
    from rlhf.annotation import get_guidelines
    from rlhf.runtime import open_store

    typer.echo(get_guidelines(open_store()))


@queue_app.command("status")
@friendly_errors
def queue_status() -> None:
    """Open / complete / gold pairs, live leases and labels."""
    from rlhf.annotation import queue_summary
    from rlhf.runtime import open_store

    typer.echo(json.dumps(queue_summary(open_store()), indent=2))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.add_typer(guidelines_app, name="guidelines")
    app.add_typer(queue_app, name="queue")
