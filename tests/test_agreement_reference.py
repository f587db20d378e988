"""Every published/reference agreement value in iaa_reference_sets that applies to a dashboard metric.

Each row of expected_values.csv is mapped explicitly either to the rlhf.agreement function the
dashboard uses for that number, or to a skip with the reason we do not compute it. A row that is
neither fails the test, so a new row in the CSV cannot be ignored silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf import agreement as ag

_REF = "iaa_reference_sets"

# (file, coefficient, weighting_or_level prefix) -> (function key, extra)
_COMPUTED = {
    ("krippendorff_alpha", "nominal"): ("alpha", "nominal"),
    ("krippendorff_alpha", "ordinal"): ("alpha", "ordinal"),
    ("krippendorff_alpha", "ordinal (Krippendorff metric)"): ("alpha", "ordinal"),
    ("krippendorff_alpha", "interval"): ("alpha", "interval"),
    ("fleiss_kappa", "unweighted"): ("fleiss", None),
    ("fleiss_kappa_missing_data_gwet", "unweighted"): ("fleiss_unequal", None),
    ("gwet_ac1", "unweighted"): ("ac1", None),
    ("cohen_kappa", "unweighted"): ("cohen", None),
    ("cohen_kappa", "equal (linear) weights on observed levels"): ("cohen", "linear"),
    ("cohen_kappa", "squared weights on observed levels"): ("cohen", "quadratic"),
    ("cohen_kappa", "linear"): ("cohen", "linear"),
    ("cohen_kappa", "quadratic"): ("cohen", "quadratic"),
}
_SKIPPED = {
    ("krippendorff_alpha", "ratio"): "ratio alpha needs a true zero; the 7-point preference scale is bipolar "
                                     "(-3..+3), so the dashboard does not compute it",
    ("cohen_kappa", "disagreement weight by category distance (Toeplitz)"):
        "custom Toeplitz disagreement weights are not offered by the dashboard (it uses none, linear or quadratic)",
}


def _rows() -> list[pd.Series]:
    from conftest import SHARED_DATA  # the folder the shared_data fixture serves (needed at collection time)

    path = SHARED_DATA / _REF / "expected_values.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    return [row for _, row in table.iterrows()]


def _classify(row: pd.Series) -> tuple[str, object]:
    key = (row["coefficient"], row["weighting_or_level"])
    if key in _COMPUTED:
        return "compute", _COMPUTED[key]
    for (coef, prefix), reason in _SKIPPED.items():
        if row["coefficient"] == coef and str(row["weighting_or_level"]).startswith(prefix):
            return "skip", reason
    return "unmapped", None


def _tidy(folder: Path, file: str) -> pd.DataFrame:
    """Any reference file as a tidy frame (pair_id, annotator_id, value)."""
    raw = pd.read_csv(folder / file)
    if file == "wikipedia_fleiss_example_counts.csv":  # counts per category -> one label per count
        counts = raw.set_index("subject")
        rows = []
        for subject, cats in counts.iterrows():
            values = np.repeat(np.arange(1, counts.shape[1] + 1), cats.to_numpy())
            rows += [(subject, f"slot{k}", v) for k, v in enumerate(values)]
        return pd.DataFrame(rows, columns=["pair_id", "annotator_id", "value"])
    if file in ("sas_cohen_kappa_table.csv", "gwet_abstractors_3x3_table.csv"):  # contingency table
        table = raw.set_index(raw.columns[0]).to_numpy()
        rows, item = [], 0
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                for _ in range(int(table[i, j])):
                    rows += [(item, "row", i + 1), (item, "col", j + 1)]
                    item += 1
        return pd.DataFrame(rows, columns=["pair_id", "annotator_id", "value"])
    wide = raw.set_index(raw.columns[0])
    return ag.tidy_from_wide(wide, value="value")


def _raters(row: pd.Series) -> list[str] | None:
    spec = str(row["raters_or_columns"])
    if " vs " in spec and spec.startswith("rater"):
        return [s.strip() for s in spec.split(" vs ")]
    return None


def _compute(frame: pd.DataFrame, row: pd.Series, how: tuple[str, object]) -> float:
    kind, extra = how
    if kind == "alpha":
        return ag.krippendorff_alpha(frame, "value", level=extra)
    if kind == "fleiss":
        return ag.fleiss_kappa(frame, "value")
    if kind == "fleiss_unequal":
        return ag.fleiss_kappa_unequal(frame, "value")
    if kind == "ac1":
        return ag.gwet_ac1(frame, "value")
    if kind == "cohen":
        raters = _raters(row) or ["row", "col"]
        frame = frame[frame["annotator_id"].isin(raters)]
        matrix = ag.cohen_kappa_matrix(frame, "value", weights=extra, raters=raters, min_shared=1)
        return float(matrix.kappa.loc[raters[0], raters[1]])
    raise AssertionError(kind)


_ALL = _rows()


def test_reference_table_is_present_and_complete(shared_data: Path) -> None:
    assert len(_ALL) == 27
    unmapped = [(r["file"], r["coefficient"], r["weighting_or_level"]) for r in _ALL if _classify(r)[0] == "unmapped"]
    assert not unmapped, f"rows neither computed nor explicitly skipped: {unmapped}"


@pytest.mark.parametrize(
    "row", _ALL, ids=[f"{r['file'].split('.')[0]}-{r['coefficient']}-{r['weighting_or_level'][:24]}" for r in _ALL]
)
def test_reference_value(row: pd.Series, shared_data: Path) -> None:
    status, how = _classify(row)
    if status == "skip":
        pytest.skip(str(how))
    assert status == "compute", "unmapped row"
    frame = _tidy(shared_data / _REF, row["file"])
    value = _compute(frame, row, how)
    # The row's own tolerance (every one is <= 1e-3, the bound).
    tolerance = min(float(row["tolerance"]), 1e-3)
    assert value == pytest.approx(float(row["expected_value"]), abs=tolerance)


def test_summary_uses_the_same_statistics_as_the_public_functions() -> None:
    """agreement_summary (what the page shows) equals the per-metric functions on the same labels."""
    rng = np.random.default_rng(3)
    rows = []
    for item in range(60):
        truth = rng.choice(["A", "B", "tie"])
        for rater in rng.choice(8, size=rng.integers(2, 5), replace=False):
            choice = truth if rng.random() < 0.7 else rng.choice(["A", "B", "tie", "both_bad"])
            strength = int(rng.integers(1, 4)) if choice in ("A", "B") else None
            rows.append((f"p{item}", f"r{rater}", choice, strength))
    frame = pd.DataFrame(rows, columns=["pair_id", "annotator_id", "choice", "strength"])
    from storage.records import preference_scale

    frame["scale"] = [preference_scale(c, s) for c, s in zip(frame.choice, frame.strength)]
    frame["scale"] = frame["scale"].astype("float")
    summary = ag.agreement_summary(frame, n_boot=50, seed=1).set_index("metric")
    assert summary.loc["raw_agreement", "value"] == pytest.approx(ag.raw_agreement(frame))
    assert summary.loc["fleiss_kappa_unequal", "value"] == pytest.approx(ag.fleiss_kappa_unequal(frame))
    assert summary.loc["gwet_ac1", "value"] == pytest.approx(ag.gwet_ac1(frame))
    assert summary.loc["krippendorff_alpha_nominal", "value"] == pytest.approx(
        ag.krippendorff_alpha(frame, "choice", level="nominal"))
    assert summary.loc["krippendorff_alpha_ordinal", "value"] == pytest.approx(
        ag.krippendorff_alpha(frame, "scale", level="ordinal"))
    assert summary.loc["fleiss_kappa", "value"] == pytest.approx(ag.fleiss_kappa(frame))
    for metric, r in summary.iterrows():
        assert r.ci_low <= r.value <= r.ci_high, metric


def test_the_summary_counts_the_labels_on_the_pairs_it_used() -> None:
    """'Pairs used 1, Labels 4': the count included labels on pairs with one label, which no coefficient uses."""
    frame = pd.DataFrame([("p0", "r0", "A", 2), ("p0", "r1", "B", 1), ("p1", "r0", "A", 1), ("p2", "r1", "tie", None)],
                         columns=["pair_id", "annotator_id", "choice", "strength"])
    from storage.records import preference_scale

    frame["scale"] = [preference_scale(c, s) for c, s in zip(frame.choice, frame.strength)]
    frame["scale"] = frame["scale"].astype("float")
    summary = ag.agreement_summary(frame, n_boot=0).set_index("metric")
    assert (summary["n_items"] == 1).all() and (summary["n_labels"] == 2).all()


def test_weighted_kappa_levels_convention_is_explicit() -> None:
    """Observed-level weights (R irr) differ from full-scale weights when a level is unused."""
    a = [1, 2, 3, 4, 6, 1, 2]
    b = [1, 3, 3, 4, 6, 2, 2]
    observed = ag.cohen_kappa(a, b, weights="linear")
    full = ag.cohen_kappa(a, b, weights="linear", levels=[1, 2, 3, 4, 5, 6])
    assert observed != pytest.approx(full)


@pytest.mark.parametrize("file", ["krippendorff2011_example.csv", "gwet_5observers.csv", "fleiss1971_diagnoses.csv"])
def test_bootstrap_replicates_use_the_same_formulas(file: str, shared_data: Path) -> None:
    """With every item drawn once (all-ones weights) each replicate statistic equals the library value."""
    frame = _tidy(shared_data / _REF, file)
    table = ag.count_table(frame, "value")
    ones = np.ones((1, table.n_items))
    for spec in ag.summary_metrics():
        if spec.key == "fleiss_kappa" and file != "fleiss1971_diagnoses.csv":
            continue  # statsmodels' Fleiss needs complete items; checked on the complete data set
        assert spec.weighted(table, ones)[0] == pytest.approx(spec.statistic(table), abs=1e-12), spec.key
