"""Issue 7's "done when", in a real browser: an engineer starts a round on the Training page, watches it finish
without reloading, and an annotator's Label page then serves one of the new policy's pairs.

The round is real (a background process: snapshot, reward model, PPO, generation, selection, enqueue) on the
tiny 2-layer policy and the labelled demo store of :mod:`round_support`, with every size small.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest
from browser_support import AppServer, chromium, chromium_available, current_task, login  # noqa: F401
from round_support import as_environment, labelled_base, tiny_model, tiny_sections  # noqa: F401
from seed import PASSWORD

pytestmark = pytest.mark.browser


def _round_rows(store) -> list[tuple[str, str]]:
    with store.transaction() as con:
        return con.execute("SELECT round_id, status FROM rounds ORDER BY created_at").fetchall()


def test_an_engineer_starts_a_round_in_the_browser_and_its_pairs_reach_an_annotator(
        labelled_base, tiny_model, tmp_path, chromium):  # noqa: F811
    if not chromium_available():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from rlhf.auth import create_user
    from storage import Store

    data_dir = tmp_path / "data"
    shutil.copytree(labelled_base, data_dir)
    store = Store(data_dir / "recfeedback.duckdb")
    create_user(store, "eng", PASSWORD, "engineer")
    create_user(store, "ann", PASSWORD, "annotator")
    assert _round_rows(store) == []

    with AppServer(data_dir, env=as_environment(tiny_sections(data_dir, tiny_model))) as server:
        page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        login(page, server.url, "eng", PASSWORD, path="training")
        # Full: the settings' own (tiny) sizes; Quick would lay the demo's quick sizes over them.
        page.locator(".st-key-training-size").get_by_text("Full", exact=True).click()
        start = page.get_by_role("button", name="Start a round")
        page.wait_for_function("() => ![...document.querySelectorAll('label')]"
                               ".some(l => l.innerText === 'Quick' && l.querySelector('input:checked'))")
        start.click()
        page.get_by_text(re.compile(r"Round round_\w+ started in the background")).wait_for(timeout=30_000)
        (round_id, status), = _round_rows(store)
        assert status == "running"
        # The live view: the running round's stages, its Cancel button, a second start refused by the button.
        page.get_by_text("Current round", exact=True).wait_for(timeout=15_000)
        page.get_by_role("button", name="Cancel round").wait_for(timeout=15_000)
        assert page.get_by_role("button", name="Start a round").is_disabled()

        # The page follows the round to its end by itself: no reload, no click.
        deadline = time.monotonic() + 600
        while _round_rows(store)[0][1] == "running" and time.monotonic() < deadline:
            time.sleep(2)
        assert _round_rows(store) == [(round_id, "done")], (server.log(), (data_dir / "rounds" / round_id /
                                                                           "round.log").read_text()[-3000:])
        page.get_by_text("Latest round", exact=True).wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Cancel round").count() == 0
        assert f"Round {round_id} — done" in page.inner_text("body")
        assert page.get_by_role("button", name="Start a round").is_enabled()

        # An annotator who logs in now is served one of the round's pairs, with the round's new policy in it.
        annotator = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        login(annotator, server.url, "ann", PASSWORD, path="label")
        assignment = current_task(annotator, timeout_ms=30_000)
        with store.transaction() as con:
            (pair_round, policies), = con.execute(
                "SELECT p.round_id, list_sort([ga.policy_id, gb.policy_id]) FROM assignments a "
                "JOIN pairs p USING (pair_id) JOIN generations ga ON ga.generation_id = p.gen_a "
                "JOIN generations gb ON gb.generation_id = p.gen_b WHERE a.assignment_id = ?", [assignment]).fetchall()
            (new_policy,), = con.execute("SELECT policy_id FROM policies WHERE round_id = ?", [round_id]).fetchall()
        assert pair_round == round_id and new_policy in policies
