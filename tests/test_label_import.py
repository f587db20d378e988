"""Importing external pairwise labels: validation first, one transaction, and a faithful round trip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rlhf.label_import import LabelMapping, import_labels
from storage import ValidationError
from storage.analytics import LabelSelection, label_frame


def _write(tmp_path: Path, rows: list[dict], name: str = "labels.csv") -> Path:
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


GOOD = [
    {"pid": "q1", "worker": "w1", "answer": "a1", "how_sure": 3, "gold": "a1", "ts": "2024-03-01T10:00:00Z",
     "secs": 12.5, "why": "clearer"},
    {"pid": "q1", "worker": "w2", "answer": "a2", "how_sure": 1, "gold": "a1", "ts": "2024-03-01T10:01:00Z",
     "secs": 8, "why": "shorter"},
    {"pid": "q1", "worker": "w3", "answer": "equal", "how_sure": None, "gold": "a1", "ts": "2024-03-02T09:00:00Z",
     "secs": 20, "why": None},
    {"pid": "q2", "worker": "w1", "answer": "a2", "how_sure": 2, "gold": None, "ts": "2024-03-02T09:05:00Z",
     "secs": 5, "why": "more relevant"},
    {"pid": "q2", "worker": "w2", "answer": "a2", "how_sure": 2, "gold": None, "ts": "2024-03-02T09:06:00Z",
     "secs": 6, "why": "same"},
]
MAPPING = LabelMapping(
    columns={"pair_id": "pid", "annotator_id": "worker", "choice": "answer", "strength": "how_sure",
             "gold": "gold", "created_at": "ts", "seconds": "secs", "rationale": "why"},
    choice_values={"a1": "A", "a2": "B", "equal": "tie"},
)


def _count(store, table: str) -> int:
    with store.transaction() as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_imported_labels_round_trip(store, tmp_path: Path, suffix: str) -> None:
    report = import_labels(store, _write(tmp_path, GOOD, "labels" + suffix), MAPPING)
    assert (report.labels, report.pairs_created, report.annotators_created, report.gold_answers) == (5, 2, 3, 1)
    with store.transaction() as con:
        frame = label_frame(con, LabelSelection(), with_rationale=True).sort_values(["pair_id", "annotator_id"])
        pairs = con.execute("SELECT pair_id, source, strategy, status, is_gold, overlap_target FROM pairs "
                            "ORDER BY pair_id").fetchall()
        kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM annotators").fetchall()}
    assert frame["choice"].tolist() == ["A", "B", "tie", "B", "B"]
    assert frame["strength"].tolist()[:2] == [3, 1] and pd.isna(frame["strength"].tolist()[2])
    assert frame["time_ms"].tolist() == [12500, 8000, 20000, 5000, 6000]
    assert frame["rationale"].tolist()[0] == "clearer"
    assert (frame["label_source"] == "import").all() and (frame["pair_source"] == "external").all()
    assert frame["gold_choice"].tolist()[:3] == ["A", "A", "A"] and frame["gold_choice"].isna().tolist()[3:] == [True, True]
    assert frame["created_at"].iloc[0] == pd.Timestamp("2024-03-01 10:00:00")
    assert pairs == [("q1", "external", "external", "external", True, 3),
                     ("q2", "external", "external", "external", False, 2)]
    assert kinds == {"external"}


def test_reimport_is_refused_and_changes_nothing(store, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    import_labels(store, path, MAPPING)
    with pytest.raises(ValidationError, match="already in the store"):
        import_labels(store, path, MAPPING)
    assert _count(store, "labels") == 5 and _count(store, "pairs") == 2


def test_missing_column_is_named(store, tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in GOOD]
    with pytest.raises(ValidationError) as err:
        import_labels(store, _write(tmp_path, rows), MAPPING)
    assert "missing column 'choice'" in str(err.value) and "answer" in str(err.value)
    assert _count(store, "labels") == 0 and _count(store, "pairs") == 0 and _count(store, "annotators") == 0


def test_unknown_choice_lists_the_row_and_imports_nothing(store, tmp_path: Path) -> None:
    rows = [dict(r) for r in GOOD]
    rows[3]["answer"] = "a3"
    with pytest.raises(ValidationError) as err:
        import_labels(store, _write(tmp_path, rows), MAPPING)
    assert "row 4: unknown choice 'a3'" in str(err.value)
    assert _count(store, "labels") == 0 and _count(store, "pairs") == 0


def test_duplicate_pair_and_annotator_is_refused(store, tmp_path: Path) -> None:
    rows = [dict(r) for r in GOOD] + [dict(GOOD[0], answer="a2")]
    with pytest.raises(ValidationError) as err:
        import_labels(store, _write(tmp_path, rows), MAPPING)
    assert "rows 1, 6: duplicate label for pair 'q1' by annotator 'w1'" in str(err.value)
    assert _count(store, "labels") == 0


def test_other_problems_are_all_listed(store, tmp_path: Path) -> None:
    rows = [dict(r) for r in GOOD]
    rows[0]["how_sure"] = 7          # strength out of range
    rows[2]["how_sure"] = 2          # strength on a tie
    rows[1]["gold"] = "a2"           # gold disagrees within pair q1
    rows[3]["ts"] = "not a date"
    rows[4]["worker"] = ""
    with pytest.raises(ValidationError) as err:
        import_labels(store, _write(tmp_path, rows), MAPPING)
    text = str(err.value)
    for fragment in ("row 1: strength must be 1, 2 or 3", "row 3: a strength is given for a tie",
                     "pair 'q1': rows give different gold answers", "row 4: created_at is not a date/time",
                     "row 5: empty annotator_id"):
        assert fragment in text
    assert _count(store, "labels") == 0


def test_mapping_refuses_unknown_fields_and_targets() -> None:
    with pytest.raises(ValidationError, match="Unknown field"):
        LabelMapping(columns={"votes": "x"})
    with pytest.raises(ValidationError, match="targets"):
        LabelMapping(choice_values={"a1": "left"})


def test_cli_import_then_agreement_report(tmp_path: Path, monkeypatch) -> None:
    """`recfeedback import-labels` with --map/--choice, then `agreement report` reads the numbers back."""
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        path = _write(tmp_path, GOOD)
        args = ["import-labels", str(path), "--map", "pair_id=pid", "--map", "annotator_id=worker",
                "--map", "choice=answer", "--map", "strength=how_sure", "--map", "gold=gold",
                "--map", "created_at=ts", "--map", "seconds=secs",
                "--choice", "a1=A", "--choice", "a2=B", "--choice", "equal=tie", "--annotator-prefix", "ext:"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Imported 5 labels on 2 pairs" in result.output
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 1 and "already in the store" in again.output
        report = CliRunner().invoke(app, ["agreement", "report", "--bootstrap", "20", "--json"])
        assert report.exit_code == 0, report.output
        import json

        def no_nan(name: str) -> None:  # strict parsers (JS, Go) refuse NaN: a missing figure must be null
            raise AssertionError(f"{name} in the JSON report")

        data = json.loads(report.output, parse_constant=no_nan)
        assert data["counts"]["labels"] == 5 and data["counts"]["annotators"] == 3
        raw = next(r for r in data["agreement"] if r["metric"] == "raw_agreement")
        # q1: A, B, tie -> 0 of 3 label pairs agree; q2: B, B -> 1 of 1.
        assert raw["value"] == pytest.approx(0.25)
    finally:
        get_settings.cache_clear()


def test_a_pair_id_shaped_like_ours_but_missing_is_refused(store, tmp_path: Path) -> None:
    """A typo in one of our pair ids became an external pair with no lists; other tools' ids still import."""
    from storage.ids import new_id

    typo = new_id("pair")  # the shape of this store's ids, and not in it
    rows = [{"pair_id": typo, "annotator_id": "w1", "choice": "A"}, {"pair_id": "q9", "annotator_id": "w1",
                                                                     "choice": "B"}]
    with pytest.raises(ValidationError, match="The file names 1 pair id shaped like this store's") as refused:
        import_labels(store, _write(tmp_path, rows))
    assert refused.value.problems == [f"pair {typo!r} is not in this store"]
    assert _count(store, "labels") == 0 and _count(store, "pairs") == 0
    assert import_labels(store, _write(tmp_path, rows[1:], "other.csv")).pairs_created == 1  # q9: external


def test_the_json_report_says_null_where_a_figure_is_missing(tmp_path: Path, monkeypatch) -> None:
    """Without gold answers the gold accuracy is missing: the JSON said NaN, which strict parsers refuse."""
    import json

    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        rows = [{"pair_id": p, "annotator_id": w, "choice": c}
                for p, w, c in [("q1", "w1", "A"), ("q1", "w2", "A"), ("q2", "w1", "B"), ("q2", "w2", "A")]]
        assert CliRunner().invoke(app, ["import-labels", str(_write(tmp_path, rows))]).exit_code == 0
        report = CliRunner().invoke(app, ["agreement", "report", "--bootstrap", "10", "--json"])
        assert report.exit_code == 0, report.output

        def no_nan(name: str) -> None:
            raise AssertionError(f"{name} in the JSON report")

        data = json.loads(report.output, parse_constant=no_nan)
        assert all(r["gold_accuracy"] is None for r in data["aggregation"])
        # Every annotator's row of the page's Annotators table, so the CLI can check it too.
        assert {r["annotator_id"]: r["labels"] for r in data["annotators"]} == {"w1": 2, "w2": 2}
        assert {"loo_agreement", "gold_accuracy", "left_share", "flags"} <= set(data["annotators"][0])
        assert data["agreement_rests_on_few_pairs"]  # two pairs: the page warns, and so does the report
        text = CliRunner().invoke(app, ["agreement", "report", "--bootstrap", "0"]).output
        assert "Warning: some coefficients rest on 2 pairs" in text and "nan" not in text
    finally:
        get_settings.cache_clear()


def test_a_file_without_labels_is_refused(store, tmp_path: Path) -> None:
    """A header-only file said "Imported 0 labels" and exited 0."""
    from rlhf.errors import ImportFileError

    path = tmp_path / "empty.csv"
    path.write_text("pair_id,annotator_id,choice\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="empty.csv has no labels in it"):
        import_labels(store, path)
    book = tmp_path / "book.xlsx"
    book.write_bytes(b"PK")
    with pytest.raises(ImportFileError, match="unsupported file type '.xlsx'"):
        import_labels(store, book)
