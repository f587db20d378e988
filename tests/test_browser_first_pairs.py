"""A new store in a real browser: the Label page shows the first-pairs job, then the first pair, unreloaded, and
a pair that arrives after the empty queue starts from the same answer as every other."""

from __future__ import annotations

import os

import pytest
from browser_support import AppServer, chromium, chromium_available, current_task, login  # noqa: F401
from seed import PASSWORD, seed_store

pytestmark = pytest.mark.browser


def test_the_first_pair_appears_by_itself_while_the_job_runs(tmp_path, chromium):  # noqa: F811
    if not chromium_available():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from rlhf import bootstrap
    from rlhf.settings import load_settings
    from storage import Store

    data_dir = tmp_path / "data"
    store = Store(data_dir / "recfeedback.duckdb")
    seed_store(store, n_pairs=0, users={"ann1": "annotator"})
    settings = load_settings(store={"data_dir": data_dir})
    # The job's process is this test (alive); it has done nothing yet.
    bootstrap.write_status(settings, bootstrap.BootstrapStatus(
        state="running", contexts_total=4, pid=os.getpid(), message="Writing lists for contexts 1-2"))
    with AppServer(data_dir) as server:
        page = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
        login(page, server.url, "ann1", PASSWORD)
        page.get_by_text("The model is writing the first pairs").wait_for(timeout=20_000)
        assert page.locator("[data-task]").count() == 0
        # The job enqueues its first chunk: the page, polling every few seconds, shows the pair.
        seed_store(store, n_pairs=2, prefix="q")
        bootstrap.write_status(settings, bootstrap.BootstrapStatus(
            state="running", contexts_done=2, contexts_total=4, pairs=2, pid=os.getpid()))
        assert current_task(page, timeout_ms=30_000)
        assert "writing the first pairs" not in page.inner_text("body")


def test_a_pair_that_arrives_after_an_empty_queue_starts_from_the_usual_answer(tmp_path, chromium):  # noqa: F811
    # Streamlit drops the state of widgets a run did not draw: after the empty-queue page, the next pair's
    # strength started on "slightly better" where every other pair starts on "clearly better".
    if not chromium_available():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from rlhf import bootstrap
    from rlhf.settings import load_settings
    from storage import Store

    data_dir = tmp_path / "data"
    store = Store(data_dir / "recfeedback.duckdb")
    seed_store(store, n_pairs=1, users={"ann1": "annotator"}, overlap_target=1)
    settings = load_settings(store={"data_dir": data_dir})
    bootstrap.write_status(settings, bootstrap.BootstrapStatus(
        state="running", contexts_done=1, contexts_total=4, pairs=1, pid=os.getpid()))
    with AppServer(data_dir) as server:
        page = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
        login(page, server.url, "ann1", PASSWORD)
        current_task(page)
        page.locator(".st-key-label_choice").get_by_text("A", exact=True).click()
        page.locator(".st-key-label_strength").get_by_text("much better", exact=True).click()
        page.locator(".st-key-label_submit button").click()
        page.get_by_text("The model is writing the first pairs").wait_for(timeout=20_000)
        seed_store(store, n_pairs=1, prefix="q", overlap_target=1)  # the job's next pair
        bootstrap.write_status(settings, bootstrap.BootstrapStatus(
            state="running", contexts_done=2, contexts_total=4, pairs=2, pid=os.getpid()))
        current_task(page, timeout_ms=30_000)
        page.wait_for_timeout(1_500)
        checked = page.evaluate("() => [...document.querySelectorAll('.st-key-label_strength input[type=radio]')]"
                                ".map(r => r.checked)")
        assert checked == [False, True, False], checked  # clearly better, as on every new pair
