"""Counts in sentences: '1 row', not '1 rows' (a user trial found several of those)."""

from __future__ import annotations

import pytest

from rlhf.wording import counted


@pytest.mark.parametrize(("n", "noun", "plural", "said"), [
    (1, "row", None, "1 row"),
    (0, "row", None, "0 rows"),
    (1204, "catalogue row", None, "1,204 catalogue rows"),
    (1.0, "epoch", None, "1 epoch"),
    (1.5, "epoch", None, "1.5 epochs"),
    (2, "entry", "entries", "2 entries"),
])
def test_counted(n, noun, plural, said):
    assert counted(n, noun, plural) == said


def test_a_one_row_import_says_row(tmp_path, store, settings):
    from rlhf.importing import import_catalog

    path = tmp_path / "one.csv"
    path.write_text("item_id,title\nA1,Oak Spoon\n", encoding="utf-8")
    assert import_catalog(store, path, settings=settings).summary().startswith(f"Imported 1 catalogue row from {path} in")
