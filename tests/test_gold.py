"""Gold pairs a manager makes: reviewed as annotators see them, served as gold, scored, never trained on."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from seed import seed_store
from typer.testing import CliRunner

from rlhf import annotation as ann
from rlhf.gold import gold_pairs, label_tally, mark_gold
from rlhf.settings import load_settings
from storage import Store
from storage import queue as queue_repo
from storage.errors import NotFoundError, ValidationError

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def gold_setup(tmp_path):
    settings = load_settings(store={"data_dir": tmp_path / "data"},
                             queue={"gold_rate": 1.0, "reshow_rate": 0.0, "seed": 1, "overlap_target": 2})
    store = Store.from_settings(settings)
    seeded = seed_store(store, n_pairs=4, overlap_target=2)
    return settings, store, seeded


def _answer(store, settings, who: str, choice: str, now: datetime) -> str:
    """``who`` takes their next pair and answers ``choice`` (A or B, in the pair's own terms, whichever side
    the page put A on); returns the pair's id."""
    task = ann.next_task(store, who, settings=settings, now=now)
    a_items = [i.item_id for i in ann.pair_as_shown(store, task.pair_id).left.items]
    left_is_a = [i.item_id for i in task.left.items] == a_items
    side = "left" if (choice == "A") == left_is_a else "right"
    ann.submit_label(store, who, task.assignment_id, side, strength=2, settings=settings, now=now)
    return task.pair_id


def test_a_reviewed_pair_made_gold_is_served_as_gold_scored_and_never_trained_on(gold_setup):
    settings, store, _ = gold_setup
    pair_id = _answer(store, settings, "ann1", "A", T0)
    shown = ann.pair_as_shown(store, pair_id, settings=settings)
    with store.transaction() as con:
        raw = queue_repo.pair_for_display(con, pair_id)
        trainable_before = queue_repo.count_trainable_labels(con)
    assert [i.item_id for i in shown.left.items] == [i["item_id"] for i in raw["generations"][raw["gen_a"]]["items"]]
    assert shown.assignment_id == "" and label_tally(store, pair_id) == {"A": 1}

    mark_gold(store, pair_id, "B", by="manager", note="  A lists a non-candidate  ")
    [gold] = gold_pairs(store)
    assert (gold.pair_id, gold.answer, gold.created_by, gold.note) == (pair_id, "B", "manager", "A lists a non-candidate")
    assert (gold.labels, gold.agreeing) == (1, 0)  # ann1 said A before anyone knew
    with store.transaction() as con:
        assert queue_repo.count_trainable_labels(con) == trainable_before - 1  # gold labels never train

    # With gold_rate 1, the next annotator gets it first, unrecognisably, and is scored on it.
    served = ann.next_task(store, "ann2", settings=settings, now=T0 + timedelta(minutes=1))
    assert served.pair_id == pair_id and served.reason == "gold"
    ann.release_tasks(store, "ann2")
    assert _answer(store, settings, "ann2", "B", T0 + timedelta(minutes=2)) == pair_id
    [gold] = gold_pairs(store)
    assert (gold.labels, gold.agreeing) == (2, 1)
    from rlhf.dashboard import build_dashboard

    quality = build_dashboard(store, settings=settings).quality.set_index("annotator_id")
    assert quality.loc["ann2", "gold_accuracy"] == 1.0 and quality.loc["ann1", "gold_accuracy"] == 0.0

    # Gold labels measure annotators: the TRL export leaves them out unless asked, as training does.
    from rlhf.export import export_labels, trl_records

    assert pair_id not in {r["pair_id"] for r in trl_records(store, with_ids=True, include_heldout=True)}
    kept = trl_records(store, with_ids=True, include_heldout=True, include_gold=True)
    assert sum(r["pair_id"] == pair_id for r in kept) == 2
    summary = export_labels(store, settings.data_dir / "labels.jsonl", fmt="trl", include_heldout=True)
    assert "Left out 2 labels on gold pairs, which measure annotators (--include-gold keeps them)" in summary.sentence()

    mark_gold(store, pair_id, "tie", by="manager")  # a second look replaces the answer
    assert [g.answer for g in gold_pairs(store)] == ["tie"]


def test_a_gold_answer_must_be_a_choice_on_a_pair_with_two_lists(gold_setup):
    _, store, seeded = gold_setup
    with pytest.raises(ValidationError, match="one of A, B, tie, both_bad, not 'C'"):
        mark_gold(store, seeded.pair_ids[0], "C", by="manager")
    with pytest.raises(NotFoundError, match="No pair with id 'pair_nope'"):
        mark_gold(store, "pair_nope", "A", by="manager")
    assert gold_pairs(store) == []


def test_pairs_show_gold_and_gold_list_from_the_shell(gold_setup, monkeypatch):
    from rlhf import runtime
    from rlhf.cli import app
    from rlhf.settings import get_settings

    settings, store, seeded = gold_setup
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    pair_id = seeded.pair_ids[0]
    runner = CliRunner()
    shown = runner.invoke(app, ["pairs", "show", pair_id])
    first_a = ann.pair_as_shown(store, pair_id).left.items[0].title
    assert shown.exit_code == 0 and "List A" in shown.output and f"1. {first_a}" in shown.output, shown.output
    assert "Labels: none yet" in shown.output
    assert "No gold pairs yet" in runner.invoke(app, ["pairs", "gold-list"]).output
    made = runner.invoke(app, ["pairs", "gold", pair_id, "A", "--by", "manager"])
    assert made.exit_code == 0 and f"Pair {pair_id} is gold, answer A:" in made.output
    assert "Gold: answer A, given by manager." in runner.invoke(app, ["pairs", "show", pair_id]).output
    again = runner.invoke(app, ["pairs", "gold", pair_id, "both bad", "--by", "manager"])  # as people type it
    assert again.exit_code == 0 and "answer both_bad (it was A)" in again.output, again.output
    runner.invoke(app, ["pairs", "gold", pair_id, "a", "--by", "manager"])
    listed = runner.invoke(app, ["pairs", "gold-list"]).output
    assert pair_id in listed and "0/0" in listed and "manager" in listed
    refused = runner.invoke(app, ["pairs", "gold", pair_id, "maybe"])
    assert refused.exit_code == 1 and "not 'maybe'" in refused.output
