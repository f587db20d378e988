"""Inter-annotator agreement over tidy label frames (one row per label).

Pure functions: they take a pandas frame with an item column (default ``pair_id``), a rater column
(default ``annotator_id``) and a value column, and return numbers. No store, no UI. The dashboard, the
CLI report and the reference tests all call these same functions.

Which library computes what, and under which convention (the UI quotes :data:`CONVENTIONS`):

- **Cohen's kappa** (two raters): :func:`sklearn.metrics.cohen_kappa_score`. Weighted variants use
  ``weights='linear'`` or ``'quadratic'`` over the levels *observed by the two raters*, by rank — the
  convention of R ``irr::kappa2`` ("equal"/"squared" weights), which is what published values assume.
  Pass ``levels=SCALE_LEVELS`` to weight over the full 7-point scale instead.
- **Fleiss' kappa**: :func:`statsmodels.stats.inter_rater.fleiss_kappa` on the items that carry the
  most common number of labels (Fleiss' formula needs the same number of raters per item).
- **Fleiss' kappa, unequal raters**: Gwet's (2014) generalisation to items with different numbers of
  labels (irrCAC ``fleiss.kappa.raw``), over all items. There is no maintained Python implementation
  we trust (irrCAC 0.4.4 returns wrong values with current pandas, see the reference-set notes), so
  this and Gwet's AC1 are the textbook formulas, checked against the published reference values.
- **Krippendorff's alpha**: the ``krippendorff`` package, from value counts. ``nominal`` on the choice
  (A / B / tie / both bad); ``ordinal`` and ``interval`` on the 7-point preference scale (-3 = A much
  better .. +3 = B much better, ``storage.records.preference_scale``). Ordinal is *Krippendorff's*
  ordinal metric (ranks weighted by marginal frequencies), not Gwet's "ordinal" weights.
- **Gwet's AC1**: unweighted, categories = the categories observed in the selection.
- **Raw agreement**: share of agreeing label pairs among all pairs of labels given to the same item.
- **Bootstrap intervals**: percentile 95% intervals from resampling *items* with replacement.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as _sm_fleiss_kappa
from threadpoolctl import threadpool_limits

ITEM = "pair_id"
RATER = "annotator_id"

#: The nominal categories of a label, in display order.
CHOICE_CATEGORIES: tuple[str, ...] = ("A", "B", "tie", "both_bad")
#: The 7-point ordinal preference scale: -3 (A much better) .. 0 (tie) .. +3 (B much better).
SCALE_LEVELS: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)

Level = Literal["nominal", "ordinal", "interval", "ratio"]
Weights = Literal["linear", "quadratic"] | None

#: Human-readable statement of each metric's convention, shown next to the numbers in the UI.
CONVENTIONS: dict[str, str] = {
    "raw_agreement": "share of agreeing label pairs within items (pooled over all label pairs)",
    "fleiss_kappa": "statsmodels fleiss_kappa, unweighted, items with the most common number of labels",
    "fleiss_kappa_unequal": "Fleiss' kappa with Gwet's (2014) generalisation to unequal labels per item",
    "gwet_ac1": "Gwet's AC1, unweighted, categories observed in the selection",
    "krippendorff_alpha_nominal": "krippendorff package, nominal metric",
    "krippendorff_alpha_ordinal": "krippendorff package, Krippendorff's ordinal metric (not Gwet's weights)",
    "krippendorff_alpha_interval": "krippendorff package, interval metric (squared difference)",
    "cohen_kappa": "scikit-learn cohen_kappa_score; weights over levels observed by the two raters (R irr)",
}


class AgreementError(ValueError):
    """The selection cannot support the metric (e.g. no item has two labels)."""


@dataclass(frozen=True)
class CountTable:
    """Items x categories label counts: the sufficient statistic of every count-based coefficient."""

    counts: np.ndarray  # float, shape (n_items, n_categories)
    categories: tuple
    items: pd.Index

    @property
    def n_items(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_labels(self) -> int:
        return int(self.counts.sum())

    def take(self, rows: np.ndarray) -> CountTable:
        """The table restricted to (or resampled to) the given row positions."""
        return CountTable(self.counts[rows], self.categories, self.items[rows])


# --------------------------------------------------------------------------------------------------
# Shaping


def count_table(
    frame: pd.DataFrame, value: str, *, item: str = ITEM, categories: Sequence | None = None
) -> CountTable:
    """Count labels per item and category; rows whose value is missing are ignored.

    ``categories`` fixes the column order (and adds never-used categories as zero columns); by
    default it is the sorted set of observed values. Values outside ``categories`` are an error.
    """
    data = frame[[item, value]].dropna(subset=[value])
    if categories is None:
        categories = sorted(pd.unique(data[value]).tolist())
    cats = tuple(categories)
    codes = pd.Categorical(data[value], categories=list(cats)).codes
    if (codes < 0).any():
        unknown = sorted(set(data[value][codes < 0].astype(str)))[:5]
        raise AgreementError(f"Values {unknown} are not among the categories {list(cats)}.")
    item_codes, items = pd.factorize(data[item], sort=False)
    counts = np.zeros((len(items), len(cats)), dtype=float)
    np.add.at(counts, (item_codes, codes), 1.0)
    return CountTable(counts, cats, pd.Index(items))


def scale_values(choice: pd.Series | np.ndarray, strength: pd.Series | np.ndarray) -> np.ndarray:
    """The 7-point scale for many labels at once (vectorised ``storage.records.preference_scale``).

    A = -strength, B = +strength (a missing strength counts as 1, 'slightly'), tie = 0, both bad = NaN.
    """
    choice = np.asarray(choice, dtype=object)
    s = pd.to_numeric(pd.Series(np.asarray(strength, dtype=object)), errors="coerce").fillna(1.0).to_numpy(float)
    out = np.full(len(choice), np.nan)
    is_a, is_b = choice == "A", choice == "B"
    out[is_a] = -s[is_a]
    out[is_b] = s[is_b]
    out[choice == "tie"] = 0.0
    return out


def tidy_from_wide(wide: pd.DataFrame, *, item: str = ITEM, rater: str = RATER, value: str = "value") -> pd.DataFrame:
    """Items-in-rows, raters-in-columns data (blank = missing) as a tidy frame of labels."""
    long = wide.stack(future_stack=True).dropna().rename(value).reset_index()
    long.columns = [item, rater, value]
    return long


# --------------------------------------------------------------------------------------------------
# Count-based coefficients (private: they take a CountTable, used for point values and bootstraps)


def _raw_agreement(t: CountTable) -> float:
    c = t.counts
    n = c.sum(1)
    agreeing = (c * (c - 1)).sum()
    pairs = (n * (n - 1)).sum()
    if pairs <= 0:
        raise AgreementError("No item has two labels, so agreement is undefined.")
    return float(agreeing / pairs)


def _modal_rows(t: CountTable) -> tuple[np.ndarray, int]:
    n = t.counts.sum(1)
    eligible = n[n >= 2]
    if eligible.size == 0:
        raise AgreementError("No item has two labels, so Fleiss' kappa is undefined.")
    values, freq = np.unique(eligible, return_counts=True)
    modal = values[freq == freq.max()].max()  # ties: prefer the larger number of raters
    return np.flatnonzero(n == modal), int(modal)


def _fleiss(t: CountTable) -> float:
    rows, _ = _modal_rows(t)
    return float(_sm_fleiss_kappa(t.counts[rows], method="fleiss"))


def _gwet_parts(t: CountTable) -> tuple[float, np.ndarray, int]:
    """Gwet (2014): observed agreement over items with >= 2 labels, category shares over items with >= 1."""
    c = t.counts
    n = c.sum(1)
    c, n = c[n >= 1], n[n >= 1]
    multi = n >= 2
    if not multi.any():
        raise AgreementError("No item has two labels, so agreement is undefined.")
    pa = float(((c[multi] * (c[multi] - 1)).sum(1) / (n[multi] * (n[multi] - 1))).mean())
    pi = (c / n[:, None]).mean(0)
    q = int((c.sum(0) > 0).sum())
    return pa, pi, q


def _fleiss_unequal(t: CountTable) -> float:
    pa, pi, _ = _gwet_parts(t)
    pe = float((pi**2).sum())
    return (pa - pe) / (1 - pe) if pe < 1 else float("nan")


def _ac1(t: CountTable) -> float:
    pa, pi, q = _gwet_parts(t)
    if q < 2:
        return float("nan")
    pe = float((pi * (1 - pi)).sum() / (q - 1))
    return (pa - pe) / (1 - pe)


def _alpha(t: CountTable, level: Level) -> float:
    if (t.counts.sum(1) >= 2).sum() == 0:
        raise AgreementError("No item has two labels, so Krippendorff's alpha is undefined.")
    if level == "nominal":
        domain = list(range(len(t.categories)))
    else:
        domain = [float(v) for v in t.categories]
        if any(b <= a for a, b in itertools.pairwise(domain)):
            raise AgreementError(f"A {level} alpha needs ordered numeric categories, got {t.categories}.")
    # Units with fewer than two values are not pairable; the package ignores them either way.
    return float(krippendorff.alpha(value_counts=t.counts, value_domain=domain, level_of_measurement=level))


# --------------------------------------------------------------------------------------------------
# Public coefficients over tidy frames


def raw_agreement(frame: pd.DataFrame, value: str = "choice", *, item: str = ITEM) -> float:
    """Share of agreeing label pairs among all pairs of labels on the same item (0..1)."""
    return _raw_agreement(count_table(frame, value, item=item))


def fleiss_kappa(
    frame: pd.DataFrame, value: str = "choice", *, item: str = ITEM, categories: Sequence | None = None
) -> float:
    """Fleiss' kappa (statsmodels) over the items that carry the most common number of labels."""
    return _fleiss(count_table(frame, value, item=item, categories=categories))


def fleiss_kappa_unequal(
    frame: pd.DataFrame, value: str = "choice", *, item: str = ITEM, categories: Sequence | None = None
) -> float:
    """Fleiss' kappa generalised by Gwet (2014) to items with different numbers of labels."""
    return _fleiss_unequal(count_table(frame, value, item=item, categories=categories))


def gwet_ac1(frame: pd.DataFrame, value: str = "choice", *, item: str = ITEM) -> float:
    """Gwet's AC1 (unweighted) over the categories observed in the selection."""
    return _ac1(count_table(frame, value, item=item))


def krippendorff_alpha(
    frame: pd.DataFrame,
    value: str = "choice",
    *,
    level: Level = "nominal",
    item: str = ITEM,
    categories: Sequence | None = None,
) -> float:
    """Krippendorff's alpha from the ``krippendorff`` package at the given level of measurement.

    ``ordinal`` is Krippendorff's ordinal metric; for ordinal/interval/ratio the values must be
    numeric (use the ``scale`` column for the 7-point preference scale).
    """
    return _alpha(count_table(frame, value, item=item, categories=categories), level)


def cohen_kappa(
    a: Sequence, b: Sequence, *, weights: Weights = None, levels: Sequence | None = None
) -> float:
    """Cohen's kappa between two aligned label sequences (scikit-learn).

    With ``levels=None`` the weights run over the levels observed by either rater, by rank (R irr's
    convention); pass the full list of levels to weight over an explicit scale.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if len(a) != len(b) or len(a) == 0:
        raise AgreementError("Cohen's kappa needs two non-empty sequences of the same length.")
    labels = None if levels is None else list(levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(cohen_kappa_score(a, b, labels=labels, weights=weights))


@dataclass(frozen=True)
class KappaMatrix:
    """Cohen's kappa for every pair of raters (symmetric, NaN where too few shared items)."""

    kappa: pd.DataFrame
    shared: pd.DataFrame  # number of items both raters labelled


def cohen_kappa_matrix(
    frame: pd.DataFrame,
    value: str = "choice",
    *,
    weights: Weights = None,
    levels: Sequence | None = None,
    raters: Sequence[str] | None = None,
    min_shared: int = 5,
    item: str = ITEM,
    rater: str = RATER,
) -> KappaMatrix:
    """Pairwise Cohen's kappa between raters on the items both labelled (the heatmap).

    ``raters`` restricts (and orders) the matrix; pairs sharing fewer than ``min_shared`` items are
    NaN rather than a noisy number. The diagonal is 1 where the rater has any label.
    """
    data = frame[[item, rater, value]].dropna(subset=[value]).drop_duplicates([item, rater])
    if raters is None:
        raters = sorted(pd.unique(data[rater]).tolist())
    raters = list(raters)
    wide = data[data[rater].isin(raters)].pivot(index=item, columns=rater, values=value).reindex(columns=raters)
    present = wide.notna().to_numpy()
    shared_counts = present.T.astype(int) @ present.astype(int)
    k = np.full((len(raters), len(raters)), np.nan)
    cols = [wide[r].to_numpy() for r in raters]
    for i, j in itertools.combinations(range(len(raters)), 2):
        if shared_counts[i, j] < max(min_shared, 1):
            continue
        both = present[:, i] & present[:, j]
        k[i, j] = k[j, i] = cohen_kappa(cols[i][both], cols[j][both], weights=weights, levels=levels)
    for i in range(len(raters)):
        if shared_counts[i, i] > 0:
            k[i, i] = 1.0
    return KappaMatrix(
        kappa=pd.DataFrame(k, index=raters, columns=raters),
        shared=pd.DataFrame(shared_counts, index=raters, columns=raters),
    )


# --------------------------------------------------------------------------------------------------
# Bootstrap and the summary table
#
# A bootstrap replicate resamples items with replacement, i.e. gives item i an integer weight w_i
# (how often it was drawn). Every coefficient above is a function of sums over items, so a replicate's
# value is the same formula on weighted sums. Computing those sums for a block of replicates at once
# (a matrix product) is ~100x faster than rebuilding and re-scoring a resampled table; the point values
# still come from the libraries, and tests check that all-ones weights reproduce them exactly.


def _replicate_weights(n_items: int, n_boot: int, seed: int, block: int = 100):
    """Blocks of bootstrap weights: arrays (b, n_items) of draw counts, each row summing to n_items."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draws = rng.integers(0, n_items, size=(b, n_items))
        weights = np.zeros((b, n_items))
        for row in range(b):
            weights[row] = np.bincount(draws[row], minlength=n_items)
        yield weights


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _w_raw_agreement(t: CountTable, w: np.ndarray) -> np.ndarray:
    c = t.counts
    n = c.sum(1)
    return _safe_ratio(w @ (c * (c - 1)).sum(1), w @ (n * (n - 1)))


def _w_fleiss(t: CountTable, w: np.ndarray) -> np.ndarray:
    rows, m = _modal_rows(t)  # the item set of the point estimate; its size varies with the weights
    c, wm = t.counts[rows], w[:, rows]
    total = wm.sum(1)
    p_rat = ((c * c).sum(1) - m) / (m * (m - 1.0))
    p_mean = _safe_ratio(wm @ p_rat, total)
    p_cat = _safe_ratio(wm @ c, (total * m)[:, None])
    p_exp = (p_cat**2).sum(1)
    return _safe_ratio(p_mean - p_exp, 1 - p_exp)


def _w_gwet_parts(t: CountTable, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = t.counts
    n = c.sum(1)
    rated = (n >= 1).astype(float)
    multi = n >= 2
    per_item = np.zeros(len(n))
    per_item[multi] = (c[multi] * (c[multi] - 1)).sum(1) / (n[multi] * (n[multi] - 1))
    shares = np.divide(c, n[:, None], out=np.zeros_like(c), where=n[:, None] > 0)
    pa = _safe_ratio(w @ per_item, w @ multi.astype(float))
    pi = _safe_ratio(w @ shares, (w @ rated)[:, None])
    q = ((w @ c) > 0).sum(1)
    return pa, pi, q


def _w_fleiss_unequal(t: CountTable, w: np.ndarray) -> np.ndarray:
    pa, pi, _ = _w_gwet_parts(t, w)
    pe = (pi**2).sum(1)
    return _safe_ratio(pa - pe, 1 - pe)


def _w_ac1(t: CountTable, w: np.ndarray) -> np.ndarray:
    pa, pi, q = _w_gwet_parts(t, w)
    pe = _safe_ratio((pi * (1 - pi)).sum(1), q - 1.0)
    return _safe_ratio(pa - pe, 1 - pe)


def _w_alpha(level: Level) -> Callable[[CountTable, np.ndarray], np.ndarray]:
    """Weighted Krippendorff's alpha using the ``krippendorff`` package's own coincidence/distance steps."""
    from krippendorff import krippendorff as kd

    def weighted(t: CountTable, w: np.ndarray) -> np.ndarray:
        c = t.counts
        v = c.shape[1]
        domain = np.arange(v) if level == "nominal" else np.asarray([float(x) for x in t.categories])
        pairable = np.maximum(c.sum(1), 2)
        per_unit = (c[:, :, None] * c[:, None, :] - c[:, None, :] * np.eye(v)[None]) / (pairable - 1)[:, None, None]
        coincidences = (w @ per_unit.reshape(len(c), v * v)).reshape(-1, v, v)
        metric = kd._distance_metric(level)
        out = np.empty(len(w))
        for r, o in enumerate(coincidences):
            n_v = o.sum(axis=0)
            if (n_v > 0).sum() < 2:
                out[r] = np.nan
                continue
            e = kd._random_coincidences(n_v)
            d = kd._distances(domain, metric, n_v)
            out[r] = 1 - (o * d).sum() / (e * d).sum()
        return out

    return weighted


def bootstrap_ci(
    table: CountTable,
    weighted: Callable[[CountTable, np.ndarray], np.ndarray],
    *,
    n_boot: int = 500,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval over ``n_boot`` bootstrap resamples of the items (rows) of ``table``.

    ``weighted(table, weights)`` returns the statistic for each row of item weights (see above).
    """
    if n_boot <= 0 or table.n_items < 2:
        return float("nan"), float("nan")
    with threadpool_limits(limits=1, user_api="blas"):
        values = np.concatenate([weighted(table, w) for w in _replicate_weights(table.n_items, n_boot, seed)])
    return _percentile_interval(values, n_boot, confidence)


@dataclass(frozen=True)
class MetricSpec:
    """One row of the summary: which statistic, on which column, under which convention."""

    key: str
    label: str
    value_column: str
    statistic: Callable[[CountTable], float]
    weighted: Callable[[CountTable, np.ndarray], np.ndarray]
    categories: tuple | None


def summary_metrics() -> tuple[MetricSpec, ...]:
    """The coefficients the dashboard shows, in display order."""
    return (
        MetricSpec("raw_agreement", "Raw agreement (choice)", "choice", _raw_agreement, _w_raw_agreement,
                   CHOICE_CATEGORIES),
        MetricSpec("fleiss_kappa", "Fleiss' kappa (choice)", "choice", _fleiss, _w_fleiss, CHOICE_CATEGORIES),
        MetricSpec("fleiss_kappa_unequal", "Fleiss' kappa, unequal labels per item (choice)", "choice",
                   _fleiss_unequal, _w_fleiss_unequal, CHOICE_CATEGORIES),
        MetricSpec("gwet_ac1", "Gwet's AC1 (choice)", "choice", _ac1, _w_ac1, CHOICE_CATEGORIES),
        MetricSpec("krippendorff_alpha_nominal", "Krippendorff's alpha, nominal (choice)", "choice",
                   lambda t: _alpha(t, "nominal"), _w_alpha("nominal"), CHOICE_CATEGORIES),
        MetricSpec("krippendorff_alpha_ordinal", "Krippendorff's alpha, ordinal (7-point scale)", "scale",
                   lambda t: _alpha(t, "ordinal"), _w_alpha("ordinal"), SCALE_LEVELS),
        MetricSpec("krippendorff_alpha_interval", "Krippendorff's alpha, interval (7-point scale)", "scale",
                   lambda t: _alpha(t, "interval"), _w_alpha("interval"), SCALE_LEVELS),
    )


def agreement_summary(
    frame: pd.DataFrame,
    *,
    n_boot: int = 500,
    seed: int = 0,
    item: str = ITEM,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every summary coefficient with its bootstrap 95% interval, as a table for the page and CLI.

    ``frame`` needs a ``choice`` column and a numeric ``scale`` column (NaN where the label has no
    place on the 7-point scale, e.g. 'both bad'). Columns of the result: metric, label, convention,
    value, ci_low, ci_high, n_items (items with >= 2 labels used), n_labels (the labels on those items). All
    coefficients are
    resampled with the same replicates (the same items drawn), so their intervals are comparable.
    """
    specs = summary_metrics()
    tables: dict[tuple[str, tuple | None], CountTable] = {}
    for spec in specs:
        key = (spec.value_column, spec.categories)
        if key not in tables:
            tables[key] = count_table(frame, spec.value_column, item=item, categories=spec.categories)
    # One item index over all tables, so a replicate draws the same items for every coefficient.
    items = pd.Index(pd.unique(frame[item]))
    aligned = {k: _align(t, items) for k, t in tables.items()}

    values: dict[str, float] = {}
    used: dict[str, int] = {}
    used_labels: dict[str, int] = {}
    for spec in specs:
        table = aligned[(spec.value_column, spec.categories)]
        per_item = table.counts.sum(1)
        used[spec.key] = int((per_item >= 2).sum())
        used_labels[spec.key] = int(per_item[per_item >= 2].sum())
        try:
            if spec.key == "fleiss_kappa" and used[spec.key]:
                rows = _modal_rows(table)[0]
                used[spec.key], used_labels[spec.key] = rows.size, int(per_item[rows].sum())
            values[spec.key] = spec.statistic(table)
        except AgreementError:
            values[spec.key] = float("nan")

    replicates: dict[str, list[np.ndarray]] = {spec.key: [] for spec in specs}
    if n_boot > 0 and len(items) >= 2:
        # Skinny matrix products: BLAS threads only add contention (3x slower on a loaded 2-core box).
        with threadpool_limits(limits=1, user_api="blas"):
            _run_replicates(specs, aligned, values, replicates, len(items), n_boot, seed)

    rows = []
    for spec in specs:
        low = high = float("nan")
        if replicates[spec.key]:
            low, high = _percentile_interval(np.concatenate(replicates[spec.key]), n_boot, confidence)
        table = aligned[(spec.value_column, spec.categories)]
        rows.append({
            "metric": spec.key, "label": spec.label, "convention": CONVENTIONS[spec.key],
            "value": values[spec.key], "ci_low": low, "ci_high": high, "n_items": used[spec.key],
            "n_labels": used_labels[spec.key],
        })
    return pd.DataFrame(rows)


def _run_replicates(specs, aligned, values, replicates, n_items, n_boot, seed) -> None:
    for weights in _replicate_weights(n_items, n_boot, seed):
        for spec in specs:
            if np.isfinite(values[spec.key]):
                table = aligned[(spec.value_column, spec.categories)]
                replicates[spec.key].append(spec.weighted(table, weights))


def _align(table: CountTable, items: pd.Index) -> CountTable:
    """The table with one row per item of ``items`` (zero rows for items without a value here)."""
    if table.items.equals(items):
        return table
    counts = np.zeros((len(items), table.counts.shape[1]))
    counts[items.get_indexer(table.items)] = table.counts
    return CountTable(counts, table.categories, items)


def _percentile_interval(values: np.ndarray, n_boot: int, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < max(10, n_boot // 2):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
