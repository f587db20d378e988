"""A manager excludes a flagged annotator's labels, and can lift it: nothing is deleted either way."""

from __future__ import annotations

import pytest
from seed import seed_store

from rlhf import annotation as ann
from rlhf.errors import RecFeedbackError
from rlhf.exclusion import exclude_annotator, excluded_annotators, restore_annotator
from storage import queue as queue_repo
from storage.errors import ConflictError, NotFoundError
from storage.users import get_annotator


def _label(store, who: str, n: int) -> list[str]:
    pairs = []
    for _ in range(n):
        task = ann.next_task(store, who)
        ann.submit_label(store, who, task.assignment_id, "left", strength=2)
        pairs.append(task.pair_id)
    return pairs


def _status(store, pair_id: str) -> str:
    with store.transaction() as con:
        return con.execute("SELECT status FROM pairs WHERE pair_id = ?", [pair_id]).fetchone()[0]


def test_exclusion_retracts_every_label_reopens_pairs_and_restores(store, settings):
    seed_store(store, n_pairs=3, overlap_target=2, users={"spam": "annotator", "good": "annotator",
                                                          "boss": "manager"})
    spam_pairs = _label(store, "spam", 3)
    good_pairs = _label(store, "good", 3)
    assert sorted(spam_pairs) == sorted(good_pairs) and {_status(store, p) for p in spam_pairs} == {"complete"}
    with store.transaction() as con:
        before = len(queue_repo.current_labels(con))

    done = exclude_annotator(store, "spam", by="boss")
    assert done.labels == 3 and done.account_changed and "Excluded 3 labels of spam" in done.sentence()
    with store.transaction() as con:
        current = queue_repo.current_labels(con)
        assert len(current) == before - 3 and "spam" not in {x.annotator_id for x in current}
        assert not get_annotator(con, "spam").active
        assert con.execute("SELECT count(*) FROM labels WHERE annotator_id = 'spam'").fetchone()[0] == 3  # kept
    assert {_status(store, p) for p in spam_pairs} == {"open"}  # below their overlap again: others label them
    row = excluded_annotators(store)["spam"]
    assert list(excluded_annotators(store)) == ["spam"] and (row.labels, row.excluded_by) == (3, "boss")
    assert abs((queue_repo.utcnow() - row.excluded_at).total_seconds()) < 60  # who and when, for the record
    with pytest.raises(ConflictError, match="excluded by a manager"):  # not "already undone"
        ann.undo_last_label(store, "spam")
    assert exclude_annotator(store, "spam", by="boss").labels == 0  # nothing left to exclude

    back = restore_annotator(store, "spam", reactivate=True)
    assert back.labels == 3 and back.account_changed and "3 labels of spam count again" in back.sentence()
    with store.transaction() as con:
        assert len(queue_repo.current_labels(con)) == before and get_annotator(con, "spam").active
    assert {_status(store, p) for p in spam_pairs} == {"complete"} and excluded_annotators(store) == {}
    assert restore_annotator(store, "spam").sentence() == "Nothing to restore: no label of spam is excluded."


def test_a_restore_without_reactivating_says_the_account_stays_off(store, settings):
    """Labels counted again while the account stayed deactivated, and nothing said so: the annotator could not
    log in, and the manager could not see why (only admins open the Users page)."""
    seed_store(store, n_pairs=2, overlap_target=2, users={"ann": "annotator", "boss": "manager"})
    _label(store, "ann", 1)
    exclude_annotator(store, "ann", by="boss")
    back = restore_annotator(store, "ann")
    assert back.still_inactive and "ann's account stays deactivated, so they cannot log in" in back.sentence()
    exclude_annotator(store, "ann", by="boss")
    assert "stays deactivated" not in restore_annotator(store, "ann", reactivate=True).sentence()


def test_restoring_leaves_undone_labels_undone(store, settings):
    seed_store(store, n_pairs=2, overlap_target=2, users={"ann": "annotator", "boss": "manager"})
    _label(store, "ann", 2)
    ann.undo_last_label(store, "ann")
    assert exclude_annotator(store, "ann", by="boss", deactivate=False).labels == 1
    assert restore_annotator(store, "ann").labels == 1
    with store.transaction() as con:
        assert len(queue_repo.current_labels(con)) == 1
        assert get_annotator(con, "ann").active  # never deactivated


def test_unknown_annotator_and_oneself_are_refused(store, settings):
    seed_store(store, n_pairs=1, users={"boss": "manager"})
    with pytest.raises(NotFoundError, match="No annotator named 'ghost': no account and no label"):
        exclude_annotator(store, "ghost", by="boss")
    with pytest.raises(RecFeedbackError, match="cannot exclude your own labels"):
        exclude_annotator(store, "boss", by="boss")
    with pytest.raises(NotFoundError):
        restore_annotator(store, "ghost")


def test_the_latest_exclusion_comes_first_with_who_made_it(store, settings):
    """Two managers excluded two annotators: the list says who excluded whom, the most recent first. An
    annotator excluded twice (the account kept, new labels since) is shown with the latest manager."""
    seed_store(store, n_pairs=3, overlap_target=3, users={"ann_a": "annotator", "ann_b": "annotator",
                                                          "lead": "manager", "boss": "manager"})
    _label(store, "ann_a", 2)
    exclude_annotator(store, "ann_a", by="boss", deactivate=False)
    _label(store, "ann_b", 1)
    exclude_annotator(store, "ann_b", by="lead")
    rows = list(excluded_annotators(store).values())
    assert [(r.annotator_id, r.labels, r.excluded_by) for r in rows] == [("ann_b", 1, "lead"), ("ann_a", 2, "boss")]
    assert rows[0].excluded_at >= rows[1].excluded_at
    _label(store, "ann_a", 1)
    exclude_annotator(store, "ann_a", by="lead")
    again = excluded_annotators(store)["ann_a"]
    assert (again.labels, again.excluded_by) == (3, "lead") and next(iter(excluded_annotators(store))) == "ann_a"
