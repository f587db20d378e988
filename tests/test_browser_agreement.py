"""The Agreement page in headless Debian Chromium: a manager sees numbers and charts, an annotator is refused.

The store is seeded with pairs, a manager, an annotator and 4 x 12 labels from simulated annotators
(with screen sides and times), so that every panel has something to draw.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from browser_support import AppServer, chromium, chromium_available, login  # noqa: F401
from seed import PASSWORD, seed_store

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def agreement_app(tmp_path_factory):
    if not chromium_available():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from storage import Store
    from storage import queue as queue_repo
    from storage.records import Label

    data_dir = tmp_path_factory.mktemp("agreement_browser") / "data"
    store = Store(data_dir / "recfeedback.duckdb")
    seeded = seed_store(store, n_pairs=12, users={"mgr": "manager", "ann1": "annotator"}, overlap_target=4)
    rng = random.Random(3)
    truth = {pid: rng.choice("AB") for pid in seeded.pair_ids}
    labels = []
    t0 = datetime(2026, 1, 5, 9)
    for k, who in enumerate(("sim1", "sim2", "sim3", "sim4")):
        for i, pid in enumerate(seeded.pair_ids):
            left = rng.choice("AB")
            choice = left if who == "sim4" else (truth[pid] if rng.random() < 0.85 else rng.choice(["A", "B", "tie"]))
            labels.append(Label(
                label_id=f"lbl-{who}-{i}", pair_id=pid, annotator_id=who, choice=choice,
                strength=rng.randint(1, 3) if choice in "AB" else None, left_side=left, time_ms=rng.randint(3000, 30000),
                source="simulated", created_at=t0 + timedelta(days=i % 3, minutes=5 * i + k)))
    with store.transaction() as con:
        queue_repo.import_labels(con, labels)
    with AppServer(data_dir) as server:
        yield server


def test_manager_sees_agreement_with_charts(agreement_app, chromium):  # noqa: F811
    page = chromium.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    login(page, agreement_app.url, "mgr", PASSWORD, timeout_ms=60_000)
    page.get_by_role("link", name="Agreement").first.wait_for(timeout=30_000)  # offered in the menu
    page.goto(f"{agreement_app.url}/agreement")
    page.get_by_role("heading", name="Agreement").first.wait_for(timeout=60_000)
    page.get_by_text("Krippendorff's alpha (nominal)").first.wait_for(timeout=60_000)
    # The Cohen's kappa heatmap (first tab) is a drawn Vega-Lite chart (Vega draws after the element is attached).
    drawn = page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg")
    drawn.first.wait_for(timeout=30_000)
    download = page.get_by_role("button", name="Download agreement_summary (CSV)")
    download.first.wait_for(timeout=30_000)  # a rerun may still be redrawing the tab when the chart shows
    assert download.count() == 1
    # The throughput tab draws labels per day; the annotator tab flags the always-left clicker.
    page.get_by_role("tab", name="Throughput & queue").click()
    page.get_by_text("Labels per day").wait_for(timeout=15_000)
    page.get_by_role("tab", name="Annotators").click()
    page.get_by_text("Position bias").wait_for(timeout=15_000)
    page.get_by_role("tab", name="Round quality").click()
    page.get_by_text("No training rounds have run yet").wait_for(timeout=15_000)
    assert page.locator("[data-testid='stVegaLiteChart']").count() >= 3
    assert "Access denied" not in page.inner_text("body")


def test_annotator_is_refused_even_by_url(agreement_app, chromium):  # noqa: F811
    page = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
    login(page, agreement_app.url, "ann1", PASSWORD, timeout_ms=60_000)
    assert page.get_by_role("link", name="Agreement").count() == 0  # not in the menu...
    page.goto(f"{agreement_app.url}/agreement")  # ...and refused by URL
    page.get_by_text("Access denied").wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert "cannot open the Agreement page" in body
    assert "Krippendorff" not in body and page.locator("[data-testid='stVegaLiteChart']").count() == 0
