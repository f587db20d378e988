"""Data page (engineer, manager, admin): import catalogue/interaction files, export labels."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from annotate_app import ui
from rlhf import annotation as ann
from rlhf import export
from rlhf.errors import RecFeedbackError
from storage.errors import StoreError, ValidationError

if TYPE_CHECKING:  # streamlit's own modules, for the type hints only
    from streamlit.elements.lib.mutable_status_container import StatusContainer
    from streamlit.runtime.uploaded_file_manager import UploadedFile

user = ui.require_page("data")
store = ui.store()

st.title("Data")

summary = ann.queue_summary(store)
cols = st.columns(5)
for col, (name, key) in zip(cols, (("Open pairs", "open_pairs"), ("Complete pairs", "complete_pairs"),
                                   ("Gold pairs", "gold_pairs"), ("Labels", "labels"),
                                   ("Held now", "live_leases"))):
    col.metric(name, f"{summary[key]:,}")

st.subheader("Export labels")
st.caption("Current labels only (undone labels are left out). TRL JSONL holds A/B labels with "
           "prompt / chosen / rejected / margin for trl.RewardTrainer, without the labels on held-out shoppers "
           "(they are for evaluation) or on gold pairs (they measure annotators), as RecFeedback's own reward "
           "model trains; `recfeedback export --format trl --include-heldout --include-gold` keeps them. Parquet "
           "and CSV hold every label, its context's split and whether its pair is gold.")
c1, c3, c2 = st.columns(3)
c1.download_button("Labels as Parquet", data=lambda: export.parquet_bytes(store), file_name="labels.parquet",
                   mime="application/octet-stream", key="data_export_parquet", icon=":material/download:")
c3.download_button("Labels as CSV", data=lambda: export.csv_bytes(store), file_name="labels.csv", mime="text/csv",
                   key="data_export_csv", icon=":material/download:", help="The Parquet table, for a spreadsheet.")
c2.download_button("Labels as TRL JSONL", data=lambda: export.trl_jsonl_bytes(store), file_name="labels_trl.jsonl",
                   mime="application/jsonl", key="data_export_trl", icon=":material/download:")

st.subheader("Import")
try:
    from rlhf import importing
except ImportError:  # pragma: no cover - importing ships with the foundation
    importing = None


def _import_upload(upload: UploadedFile, kind: str, mapping_text: str, status: StatusContainer) -> str | None:
    """Import an uploaded file, showing what is wrong inside ``status``; the summary sentence, or None.

    The upload is saved under its own name in a temporary folder, so messages name the user's file,
    and mapping hints speak of this page's Column mapping box rather than the CLI's --map option.
    """
    wording = importing.MappingWording(
        entry="Column mapping {pair}", remedy="rename it or map one in the Column mapping box, e.g. {column}=YOUR_COLUMN")
    name = Path(upload.name).name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(upload.getvalue())
        try:
            pairs = [p.strip() for p in mapping_text.split(",") if p.strip()]
            mapping = importing.parse_mapping(pairs, wording=wording)
            fn = importing.import_catalog if kind == "Catalogue items" else importing.import_interactions
            report = fn(store, path, mapping=mapping, settings=ui.settings(), wording=wording,
                        on_stage=lambda s: status.update(label=f"Importing: {s}…"))
        except ValidationError as exc:  # open, so the rows and what is wrong with them show at once
            status.update(label="Nothing was imported.", state="error", expanded=True)
            st.error(str(exc).splitlines()[0])
            if exc.problems:
                st.text("\n".join(exc.problems[:200]))
            return None
        except (RecFeedbackError, StoreError) as exc:
            status.update(label="Nothing was imported.", state="error", expanded=True)
            st.error(str(exc))
            return None
    status.update(label="Done.", state="complete")
    return dataclasses.replace(report, source=name).summary()  # the file's name, not the temporary path


if importing is None:
    st.info("File import is not available in this installation; use the `recfeedback import-*` commands.")
else:
    kind = st.radio("What is in the file?", ("Catalogue items", "Interactions"), horizontal=True, key="data_kind")
    upload = st.file_uploader("CSV, Parquet or JSONL file", type=["csv", "tsv", "parquet", "pq", "jsonl", "ndjson"],
                              key="data_upload")
    mapping_text = st.text_input("Column mapping (optional, e.g. `title=name, price=unit_price`)", key="data_mapping")
    if upload is not None and st.button("Import", type="primary", key="data_import"):
        with st.status("Importing…", expanded=False) as status:
            done = _import_upload(upload, kind, mapping_text, status)
        if done is not None:  # outside the folded status box, so it is seen without a click
            st.success(done)
