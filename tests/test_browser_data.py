"""The Data page in headless Debian Chromium: an admin's import of a malformed catalogue says, on the page,
which rows are wrong and why, and imports nothing."""

from __future__ import annotations

import pytest
from browser_support import chromium, login, seeded_app  # noqa: F401
from seed import PASSWORD

pytestmark = pytest.mark.browser


def test_a_malformed_catalogue_says_which_rows_are_wrong_and_imports_nothing(seeded_app, chromium, tmp_path):  # noqa: F811
    from storage import Store
    from storage.catalog import get_items

    server, store_path = seeded_app
    bad = tmp_path / "catalogue.csv"
    bad.write_text("item_id,title,category,price\nX1,Good Mug,Kitchen,3.50\nX2,,Kitchen,2\nX3,Tea Tin,Kitchen,abc\n",
                   encoding="utf-8")
    page = chromium.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    login(page, server.url, "boss", PASSWORD, path="data", timeout_ms=60_000)
    page.get_by_role("heading", name="Import").wait_for(timeout=60_000)
    page.locator("input[type='file']").set_input_files(str(bad))
    page.get_by_role("button", name="Import", exact=True).click(timeout=30_000)
    # What is wrong is in view without a click (the status box used to fold it away).
    page.get_by_text("line 3: empty title").wait_for(state="visible", timeout=30_000)
    assert page.get_by_text("line 4: price 'abc' is not a number").is_visible()
    assert page.get_by_text("Nothing was imported.").first.is_visible()
    with Store(store_path).transaction() as con:
        assert get_items(con, ["X1", "X2", "X3"]) == {}  # all rows or none


def test_a_good_import_says_what_it_imported_in_view(seeded_app, chromium, tmp_path):  # noqa: F811
    """The summary sat inside the folded status box ("Done."), and named the upload's temporary path."""
    server, _ = seeded_app
    good = tmp_path / "new items.csv"
    good.write_text("item_id,title,price\nN1,Linen Apron,12\nN2,Oak Spoon,4.5\n", encoding="utf-8")
    page = chromium.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    login(page, server.url, "boss", PASSWORD, path="data", timeout_ms=60_000)
    page.get_by_role("heading", name="Import").wait_for(timeout=60_000)
    page.locator("input[type='file']").set_input_files(str(good))
    page.get_by_role("button", name="Import", exact=True).click(timeout=30_000)
    page.get_by_text("Imported 2 catalogue rows from new items.csv in").wait_for(state="visible", timeout=30_000)
