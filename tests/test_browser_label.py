"""End to end in headless Debian Chromium against `streamlit run annotate_app/Home.py`.

An annotator logs in, labels three pairs with the mouse and one with the keyboard, undoes the last
one; the rows are checked in DuckDB. An annotator cannot reach the Users page by URL; a logged-in
/login shows the Label page. A catalogue title with <script> and **markdown** shows literally and runs
nothing. A panel opened right after logging in stays open when a widget in it reruns the page. The undo button
leaves by itself when the undo window ends.
"""

from __future__ import annotations

import json

import pytest
from browser_support import chromium, current_task, login, seeded_app, wait_for_task_change  # noqa: F401
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from seed import EVIL_TITLE, PASSWORD

pytestmark = pytest.mark.browser


def _db(path, sql, params=None):
    from storage import Store

    store = Store(path, migrate=False)
    with store.transaction() as con:
        return con.execute(sql, params or []).fetchall()


def _expected_canonical(db_path, assignment_id: str, shown: str) -> str:
    (left_gen, gen_a), = _db(db_path, "SELECT a.left_gen, p.gen_a FROM assignments a JOIN pairs p USING (pair_id) "
                                      "WHERE a.assignment_id = ?", [assignment_id])
    if shown in ("tie", "both_bad"):
        return shown
    left_is_a = left_gen == gen_a
    return "A" if (shown == "left") == left_is_a else "B"


def test_annotator_labels_by_mouse_and_keyboard_then_undoes(seeded_app, chromium):  # noqa: F811
    server, db_path = seeded_app
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, server.url, "ann1", PASSWORD)

    # The <script> title is shown as text, and nothing ran.
    task = current_task(page)
    body = page.inner_text("body")
    assert EVIL_TITLE in body
    assert page.locator("script", has_text="alert(1)").count() == 0
    assert page.locator("b", has_text="bold").count() == 0 and page.locator("strong", has_text="bold").count() == 0
    # Items show the attributes the policy's prompt describes (contexts.item_attributes: colour, rating), not
    # the others.
    meta = page.locator(".rf-meta").first.inner_text()
    assert " · rating " in meta, meta
    assert "Details" in page.locator(".rf-table").first.inner_text() and "n_buyers" not in body

    expected: dict[str, str] = {}
    # Three labels with the mouse: A (with a flag on its first item), B, Tie.
    for shown, option in (("left", "A"), ("right", "B"), ("tie", "Tie")):
        choice = page.locator(".st-key-label_choice")
        if shown == "left":
            page.locator(f"[class*='st-key-label_flags_{task}_left_1'] button", has_text="irrelevant").click()
        choice.get_by_text(option, exact=True).click()
        page.locator(".st-key-label_submit button").click()
        expected[task] = _expected_canonical(db_path, task, shown)
        task = wait_for_task_change(page, task)

    # One with the keyboard: 4 = both bad, Enter = submit. The shortcuts must outlive the hidden iframe
    # that installed them (Streamlit may remount it on a rerun; a listener of the iframe's would die with
    # it), so remove that iframe first.
    page.wait_for_function("() => document.__rf_installed_rf_keys_js === true", timeout=10_000)
    page.evaluate("() => document.querySelectorAll('.st-key-rf_keys_js iframe').forEach(f => f.remove())")
    # A key pressed while the page is still settling after the last rerun can be lost (as it can for a
    # person); press again, a bounded number of times, until the choice shows.
    both_bad_checked = ("() => { const c = document.querySelectorAll('.st-key-label_choice input[type=radio]');"
                        " return c.length === 4 && c[3].checked; }")
    for attempt in range(3):
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press("4")
        try:
            page.wait_for_function(both_bad_checked, timeout=5_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                state = page.evaluate(
                    "() => ({active: document.activeElement && document.activeElement.tagName,"
                    " installed: document.__rf_installed_rf_keys_js === true,"
                    " radios: [...document.querySelectorAll('.st-key-label_choice input[type=radio]')]"
                    ".map(r => [r.checked, r.disabled])})")
                raise AssertionError(f"key 4 did not choose 'Both bad' after 3 presses; page state: {state}")
    page.keyboard.press("Enter")
    expected[task] = "both_bad"
    keyboard_task = task
    task = wait_for_task_change(page, task)

    # Undo the keyboard label: its pair comes back.
    page.get_by_role("button", name="Undo last label").click()
    back = wait_for_task_change(page, task)
    page.get_by_text("Your last label was undone").wait_for(timeout=10_000)
    (back_pair,), = _db(db_path, "SELECT pair_id FROM assignments WHERE assignment_id = ?", [back])
    (kb_pair,), = _db(db_path, "SELECT pair_id FROM assignments WHERE assignment_id = ?", [keyboard_task])
    assert back_pair == kb_pair

    rows = _db(db_path, "SELECT assignment_id, choice, strength, CAST(item_flags AS VARCHAR), time_ms, label_id "
                        "FROM labels WHERE annotator_id = 'ann1' ORDER BY created_at")
    assert [r[0] for r in rows] == list(expected)
    assert [r[1] for r in rows] == list(expected.values())
    assert rows[0][2] == 2 and rows[2][2] is None  # default strength "clearly"; none for a tie
    flags = json.loads(rows[0][3])
    assert len(flags) == 1 and list(flags.values()) == [["irrelevant"]]
    assert all(r[4] > 0 for r in rows)  # time on task recorded
    retracted = _db(db_path, "SELECT label_id FROM label_retractions")
    assert retracted == [(rows[3][5],)]
    assert dialogs == []
    context.close()


def test_annotator_cannot_open_users_page_by_url(seeded_app, chromium):  # noqa: F811
    server, _ = seeded_app
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    login(page, server.url, "ann2", PASSWORD)
    # The menu does not offer it...
    assert page.get_by_role("link", name="Users").count() == 0
    # ...and typing the URL reaches only the page's refusal.
    page.goto(f"{server.url}/users")
    page.get_by_text("Access denied").wait_for(timeout=20_000)
    assert "New account" not in page.inner_text("body")
    # An admin in another browser gets the page.
    admin = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
    login(admin, server.url, "boss", PASSWORD)
    admin.goto(f"{server.url}/users")
    admin.get_by_text("New account").wait_for(timeout=20_000)
    context.close()


def _open_logged_out(page, url: str) -> None:
    """Open ``url`` without a session: the log-in form, and no "Page not found" over it."""
    page.goto(url)
    page.get_by_role("textbox", name="User name").wait_for(timeout=30_000)
    page.wait_for_timeout(1_500)  # Streamlit raises its page-not-found dialog just after the first run
    assert "Page not found" not in page.inner_text("body")


def test_a_deep_link_opened_logged_out_shows_the_login_and_then_the_page(seeded_app, chromium):  # noqa: F811
    # A bookmarked page URL met while logged out: the log-in form alone (no "Page not found" over it),
    # and after logging in, the page the link named.
    server, _ = seeded_app
    page = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
    _open_logged_out(page, f"{server.url}/users")
    page.get_by_role("textbox", name="User name").fill("boss")
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("New account").wait_for(timeout=30_000)
    assert page.url.rstrip("/").endswith("/users")
    # The session cookie still lands (a redirect after log-in would drop the script that writes it).
    page.wait_for_function("() => document.cookie.includes('recfeedback_session=')", timeout=30_000)
    page.context.close()


def test_the_login_url_logs_in_and_opened_logged_in_shows_the_default_page(seeded_app, chromium):  # noqa: F811
    # /login logged out: the form, which Streamlit's "Page not found" dialog would make inert, and the
    # session cookie lands after logging in there. Met again with a live session: the Label page.
    server, _ = seeded_app
    page = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
    _open_logged_out(page, f"{server.url}/login")
    login(page, server.url, "ann2", PASSWORD, path="login")
    current_task(page, timeout_ms=30_000)
    page.goto(f"{server.url}/login")
    current_task(page, timeout_ms=30_000)
    page.wait_for_timeout(1_500)  # Streamlit raises its page-not-found dialog just after the first run
    assert "Page not found" not in page.inner_text("body")
    assert page.get_by_role("textbox", name="User name").count() == 0
    # The Label page at its own path, and the root that leads there (Streamlit served /label as "not found").
    for path in ("label", ""):
        page.goto(f"{server.url}/{path}")
        current_task(page, timeout_ms=30_000)
        page.wait_for_timeout(1_500)
        assert "Page not found" not in page.inner_text("body") and page.url == f"{server.url}/label", path
    page.context.close()


def test_an_open_panel_stays_open_at_the_first_click_after_logging_in(seeded_app, chromium):  # noqa: F811
    # The run that writes the session cookie has one element more at the top than the runs after it; if that
    # shifted the page, Streamlit would remount every expander and close the one the annotator is using.
    server, _ = seeded_app
    page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    login(page, server.url, "ann3", PASSWORD)
    task = current_task(page)
    page.wait_for_function("() => document.cookie.includes('recfeedback_session=')", timeout=30_000)
    page.get_by_text("Skip this pair").click()
    reason = page.locator("[class*='st-key-label_skip_reason_']")
    reason.wait_for(state="visible", timeout=10_000)
    option = page.get_by_role("option", name="context unclear")
    for _attempt in range(3):  # a click while the page is still settling may not open the list
        reason.click()
        try:
            option.wait_for(state="visible", timeout=5_000)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    option.click()  # a rerun
    page.wait_for_function(
        "() => document.querySelector('[class*=\"st-key-label_skip_reason_\"] input')?.value === 'context unclear'",
        timeout=15_000)
    page.wait_for_timeout(3_000)  # let the rerun finish drawing
    assert page.locator("[class*='st-key-label_skip_note_']").is_visible()
    assert current_task(page) == task
    page.context.close()


def test_the_undo_button_goes_by_itself_when_its_time_is_up(tmp_path, chromium):  # noqa: F811
    # An annotator who reads the next pair for longer than the undo window must not be offered an Undo that
    # the store would refuse: the button leaves without any click.
    from browser_support import BROWSER_USERS, AppServer
    from seed import seed_store

    from storage import Store

    data_dir = tmp_path / "data"
    seed_store(Store(data_dir / "recfeedback.duckdb"), n_pairs=3, users=BROWSER_USERS)
    with AppServer(data_dir, env={"RECFEEDBACK_QUEUE__UNDO_WINDOW_S": "6"}) as server:
        page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        login(page, server.url, "ann1", PASSWORD)
        task = current_task(page)
        page.locator(".st-key-label_choice").get_by_text("A", exact=True).click()
        page.locator(".st-key-label_submit button").click()
        wait_for_task_change(page, task)
        undo = page.get_by_role("button", name="Undo last label")
        undo.wait_for(state="visible", timeout=5_000)
        undo.wait_for(state="detached", timeout=15_000)
        page.wait_for_timeout(1_000)
        assert undo.count() == 0
        page.context.close()


def test_the_last_number_key_wins_and_enter_keeps_its_meaning_on_panels_but_not_on_flags(seeded_app, chromium):  # noqa: F811
    server, db_path = seeded_app
    from rlhf.auth import create_user
    from storage import Store

    create_user(Store(db_path, migrate=False), "ann4", PASSWORD, "annotator")
    page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    login(page, server.url, "ann4", PASSWORD)
    task = current_task(page)
    checked = ("() => [...document.querySelectorAll('.st-key-label_choice input[type=radio]')]"
               ".findIndex(r => r.checked)")
    # Two keys a few milliseconds apart: each used to keep re-clicking its own option for seconds, so the
    # choice flipped back and forth and Enter could store the first key's.
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.wait_for_function(f"() => ({checked})() === 1", timeout=10_000)
    seen = set()
    for _ in range(12):
        page.wait_for_timeout(150)
        seen.add(page.evaluate(checked))
    assert seen == {1}, seen
    # Enter on a panel's header opens the panel; it does not submit the answer.
    page.locator("summary", has_text="Skip this pair").focus()
    page.keyboard.press("Enter")
    page.locator("[class*='st-key-label_skip_reason_']").wait_for(state="visible", timeout=10_000)
    page.wait_for_timeout(1_000)
    assert _db(db_path, "SELECT count(*) FROM labels WHERE annotator_id = 'ann4'") == [(0,)]
    assert current_task(page) == task
    # A flag is part of the answer: Enter right after clicking one submits, with the flag kept.
    flag = page.locator(f"[class*='st-key-label_flags_{task}_left_1'] button", has_text="irrelevant")
    flag.click()
    page.keyboard.press("Enter")
    wait_for_task_change(page, task)
    (choice, flags), = _db(db_path, "SELECT choice, CAST(item_flags AS VARCHAR) FROM labels "
                                    "WHERE annotator_id = 'ann4'")
    assert choice == _expected_canonical(db_path, task, "right")
    assert list(json.loads(flags).values()) == [["irrelevant"]]
    page.context.close()
