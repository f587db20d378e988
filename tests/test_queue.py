"""The labelling queue's rules, through the service layer (rlhf.annotation) and storage.queue."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from seed import seed_store

from rlhf import annotation as ann
from rlhf.settings import load_settings
from storage import queue as queue_repo
from storage.errors import ConflictError, ValidationError

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def qsettings(tmp_path):
    """No gold, no re-shows, fixed seed: the priority pipeline alone."""
    return load_settings(store={"data_dir": tmp_path / "data"},
                         queue={"gold_rate": 0.0, "reshow_rate": 0.0, "seed": 1, "lease_minutes": 10})


@pytest.fixture
def qstore(qsettings):
    from storage import Store

    return Store.from_settings(qsettings)


def label(store, who, task, settings, *, choice="left", now=None, **kw):
    return ann.submit_label(store, who, task.assignment_id, choice, strength=kw.pop("strength", 2),
                            settings=settings, now=now, **kw)


def rows(store, sql, params=None):
    with store.transaction() as con:
        return con.execute(sql, params or []).fetchall()


def test_highest_priority_first_and_never_repeated(qstore, qsettings):
    seeded = seed_store(qstore, n_pairs=5, priorities=[1, 5, 3, 4, 2], overlap_target=3)
    order = []
    now = T0
    while (task := ann.next_task(qstore, "alice", settings=qsettings, now=now)) is not None:
        assert task.reason == "priority"
        order.append(task.pair_id)
        label(qstore, "alice", task, qsettings, now=now)
        now += timedelta(seconds=5)
    by_priority = [seeded.pair_ids[i] for i in (1, 3, 2, 4, 0)]
    assert order == by_priority  # highest first, each exactly once for this annotator


def test_request_again_returns_the_same_assignment(qstore, qsettings):
    seed_store(qstore, n_pairs=3)
    first = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    again = ann.next_task(qstore, "alice", settings=qsettings, now=T0 + timedelta(minutes=1))
    assert again.assignment_id == first.assignment_id
    assert rows(qstore, "SELECT count(*) FROM assignments")[0][0] == 1


def test_overlap_target_counts_live_leases(qstore, qsettings):
    seed_store(qstore, n_pairs=1, overlap_target=2)
    a = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    b = ann.next_task(qstore, "bob", settings=qsettings, now=T0)
    assert a.pair_id == b.pair_id
    # Two live leases fill the target: a third annotator gets nothing although nobody labelled yet.
    assert ann.next_task(qstore, "carol", settings=qsettings, now=T0) is None
    label(qstore, "alice", a, qsettings, now=T0)
    label(qstore, "bob", b, qsettings, now=T0, choice="tie")
    assert ann.next_task(qstore, "carol", settings=qsettings, now=T0) is None
    assert rows(qstore, "SELECT status FROM pairs")[0][0] == "complete"


def test_expired_lease_returns_work_and_late_answer_is_refused_when_full(qstore, qsettings):
    seed_store(qstore, n_pairs=1, overlap_target=1)
    a = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    assert ann.next_task(qstore, "bob", settings=qsettings, now=T0 + timedelta(minutes=5)) is None
    later = T0 + timedelta(minutes=11)  # alice walked away; her 10-minute lease ran out
    b = ann.next_task(qstore, "bob", settings=qsettings, now=later)
    assert b is not None and b.pair_id == a.pair_id
    with pytest.raises(ConflictError, match="given to someone else"):
        label(qstore, "alice", a, qsettings, now=later)
    label(qstore, "bob", b, qsettings, now=later)
    assert rows(qstore, "SELECT annotator_id FROM labels") == [("bob",)]


def test_expired_lease_is_still_honoured_when_there_is_room(qstore, qsettings):
    seed_store(qstore, n_pairs=1, overlap_target=2)
    a = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    stored = label(qstore, "alice", a, qsettings, now=T0 + timedelta(minutes=30))
    assert stored.annotator_id == "alice"


def test_double_submit_stores_one_label(qstore, qsettings):
    seed_store(qstore, n_pairs=2)
    task = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    first = label(qstore, "alice", task, qsettings, now=T0)
    second = label(qstore, "alice", task, qsettings, now=T0 + timedelta(seconds=1))
    assert first.label_id == second.label_id
    assert rows(qstore, "SELECT count(*) FROM labels")[0][0] == 1
    # The same account in a second window answered differently: said, not silently dropped.
    with pytest.raises(ConflictError, match="You answered this pair already, perhaps in another window"):
        ann.submit_label(qstore, "alice", task.assignment_id, "both_bad", settings=qsettings)
    assert rows(qstore, "SELECT count(*), min(label_id) FROM labels")[0] == (1, first.label_id)


def test_choice_is_stored_in_canonical_terms_with_the_side_shown(qstore, qsettings):
    seed_store(qstore, n_pairs=30, overlap_target=1)
    seen_sides = Counter()
    for i in range(30):
        task = ann.next_task(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=i))
        left_flagged = task.left.items[0].item_id
        lab = label(qstore, "alice", task, qsettings, choice="left", strength=3,
                    item_flags={"left": {left_flagged: ["irrelevant"]}}, rationale=" ok ", time_ms=1234,
                    now=T0 + timedelta(seconds=i))
        (left_gen, gen_a), = rows(qstore, "SELECT a.left_gen, p.gen_a FROM assignments a JOIN pairs p USING (pair_id) "
                                          "WHERE a.assignment_id = ?", [task.assignment_id])
        shown_left_is_a = left_gen == gen_a
        seen_sides[shown_left_is_a] += 1
        assert lab.choice == ("A" if shown_left_is_a else "B")
        assert lab.left_side == ("A" if shown_left_is_a else "B")
        assert lab.item_flags == {f"{lab.left_side}:{left_flagged}": ["irrelevant"]}
        assert lab.strength == 3 and lab.rationale == "ok" and lab.time_ms == 1234
    # Left/right is randomised per assignment: both orders occur.
    assert seen_sides[True] > 3 and seen_sides[False] > 3


def test_bad_answers_are_refused_and_nothing_is_stored(qstore, qsettings):
    seed_store(qstore, n_pairs=1)
    task = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    with pytest.raises(ValidationError):
        ann.submit_label(qstore, "alice", task.assignment_id, "left", strength=None, settings=qsettings)
    with pytest.raises(ValidationError):
        ann.submit_label(qstore, "alice", task.assignment_id, "middle", settings=qsettings)
    with pytest.raises(ValidationError):
        ann.submit_label(qstore, "alice", task.assignment_id, "tie", item_flags={"left": {"x": ["ugly"]}},
                         settings=qsettings)
    with pytest.raises(ValidationError):
        ann.submit_label(qstore, "alice", task.assignment_id, "tie", rationale="x" * 5000, settings=qsettings)
    with pytest.raises(ConflictError):
        ann.submit_label(qstore, "mallory", task.assignment_id, "tie", settings=qsettings)
    assert rows(qstore, "SELECT count(*) FROM labels")[0][0] == 0
    tie = ann.submit_label(qstore, "alice", task.assignment_id, "tie", strength=3, settings=qsettings)
    assert tie.choice == "tie" and tie.strength is None


@pytest.mark.parametrize("breadth_first", [True, False])
def test_started_pairs_are_finished_first_then_priority_decides(qstore, qsettings, breadth_first):
    """Label Studio's breadth-first: the pair with the most labels so far comes first, so pairs reach their
    majority and their agreement before new ones open; without it the queue follows priority alone."""
    settings = qsettings.model_copy(update={"queue": qsettings.queue.model_copy(update={"breadth_first": breadth_first})})
    seeded = seed_store(qstore, n_pairs=4, priorities=[4, 3, 2, 1], overlap_target=3)
    top, second, third, _ = seeded.pair_ids

    def take(who: str, pair_id: str) -> None:
        """``who`` skips whatever comes before ``pair_id`` and labels it."""
        task = ann.next_task(qstore, who, settings=settings, now=T0)
        while task.pair_id != pair_id:
            ann.skip_task(qstore, who, task.assignment_id, "other", now=T0)
            task = ann.next_task(qstore, who, settings=settings, now=T0)
        label(qstore, who, task, settings, now=T0)

    take("alice", third)
    take("bob", third)
    take("dave", second)  # third has two labels, second one, top none
    served = ann.next_task(qstore, "carol", settings=settings, now=T0).pair_id
    assert served == (third if breadth_first else top)


def test_skip_needs_a_reason_and_the_pair_never_returns(qstore, qsettings):
    seeded = seed_store(qstore, n_pairs=2, overlap_target=3)
    task = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    with pytest.raises(ValidationError):
        ann.skip_task(qstore, "alice", task.assignment_id, "  ")
    ann.skip_task(qstore, "alice", task.assignment_id, "cannot judge", now=T0)
    nxt = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    assert nxt.pair_id != task.pair_id
    label(qstore, "alice", nxt, qsettings, now=T0)
    assert ann.next_task(qstore, "alice", settings=qsettings, now=T0 + timedelta(hours=1)) is None
    # ...but the skipped pair is still there for others, after the one alice labelled (breadth first).
    started = ann.next_task(qstore, "bob", settings=qsettings, now=T0)
    assert started.pair_id == nxt.pair_id == seeded.pair_ids[1]
    label(qstore, "bob", started, qsettings, now=T0)
    assert ann.next_task(qstore, "bob", settings=qsettings, now=T0).pair_id == seeded.pair_ids[0]
    assert rows(qstore, "SELECT skip_reason FROM assignments WHERE status = 'skipped'") == [("cannot judge",)]


def test_undo_within_window_only_latest_and_own(qstore, qsettings):
    seed_store(qstore, n_pairs=3, overlap_target=1)
    t1 = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    label(qstore, "alice", t1, qsettings, now=T0)
    t2 = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    first_label = label(qstore, "alice", t2, qsettings, now=T0 + timedelta(seconds=1))
    with pytest.raises(ConflictError, match="no label"):
        ann.undo_last_label(qstore, "bob", settings=qsettings, now=T0)
    again = ann.undo_last_label(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=20))
    assert again.pair_id == t2.pair_id and again.reason == "undo"
    assert again.left == t2.left  # same sides as before
    assert rows(qstore, "SELECT label_id FROM label_retractions") == [(first_label.label_id,)]
    assert rows(qstore, "SELECT status FROM pairs WHERE pair_id = ?", [t2.pair_id])[0][0] == "open"
    with pytest.raises(ConflictError, match="already undone"):
        ann.undo_last_label(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=21))
    # The re-opened pair comes first, is labelled again, and the new label counts (the old stays as a fact).
    assert ann.next_task(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=22)).pair_id == t2.pair_id
    relabel = label(qstore, "alice", again, qsettings, choice="tie", now=T0 + timedelta(seconds=23))
    assert rows(qstore, "SELECT count(*) FROM labels")[0][0] == 3
    with qstore.transaction() as con:
        current = queue_repo.current_labels(con, pair_ids=[t2.pair_id])
    assert [c.label_id for c in current] == [relabel.label_id]
    # Outside the window: refused.
    with pytest.raises(ConflictError, match="within 60 seconds"):
        ann.undo_last_label(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=200))


def test_undo_in_one_window_never_takes_back_a_label_given_in_another(qstore, qsettings):
    """Two windows of one annotator: the first window's Undo names its own label; the annotator has labelled
    in the second window since, so the undo is refused and nothing is retracted. The right window's undo
    gives the answer back as it was given (shown sides), to be corrected."""
    seed_store(qstore, n_pairs=3, overlap_target=1)
    t1 = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    first = label(qstore, "alice", t1, qsettings, now=T0)
    t2 = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    flagged = t2.right.items[0].item_id
    second = ann.submit_label(qstore, "alice", t2.assignment_id, "right", strength=3, rationale="B fits",
                              item_flags={"right": {flagged: ["irrelevant"]}}, settings=qsettings,
                              now=T0 + timedelta(seconds=1))
    with pytest.raises(ConflictError, match="another window"):
        ann.undo_last_label(qstore, "alice", label_id=first.label_id, settings=qsettings,
                            now=T0 + timedelta(seconds=5))
    assert rows(qstore, "SELECT count(*) FROM label_retractions")[0][0] == 0
    again = ann.undo_last_label(qstore, "alice", label_id=second.label_id, settings=qsettings,
                                now=T0 + timedelta(seconds=6))
    assert again.pair_id == t2.pair_id
    assert again.previous_answer == ann.ShownAnswer("right", 3, {"right": {flagged: ["irrelevant"]}}, "B fits")


def test_a_pair_that_went_back_to_the_queue_says_so_in_words(qstore, qsettings):
    seed_store(qstore, n_pairs=2, overlap_target=1)
    task = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    with qstore.transaction() as con:  # a log-out in another window
        assert queue_repo.release_leases(con, "alice", now=T0) == 1
    with pytest.raises(ConflictError, match=r"no longer yours to label: it went back to the queue \(an undo or a "
                                            r"log-out, perhaps in another window\)\."):
        label(qstore, "alice", task, qsettings, now=T0)


def test_undo_gives_back_the_pair_shown_next_so_pairs_left_stays_right(qstore, qsettings):
    """The Label page submits and leases the next pair in one step; an undo then held two leases, and 'Left'
    counted one pair too few."""
    seed_store(qstore, n_pairs=3, overlap_target=1)
    first = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    _, shown_next = ann.submit_and_next(qstore, "alice", first.assignment_id, "tie", settings=qsettings, now=T0)
    assert ann.get_progress(qstore, "alice", now=T0).queue_left == 2
    again = ann.undo_last_label(qstore, "alice", settings=qsettings, now=T0 + timedelta(seconds=5))
    assert again.pair_id == first.pair_id
    live = rows(qstore, "SELECT pair_id FROM assignments WHERE annotator_id = 'alice' AND status = 'active'")
    assert live == [(first.pair_id,)]  # the pair shown next was given back
    assert ann.get_progress(qstore, "alice", now=T0 + timedelta(seconds=5)).queue_left == 3
    assert shown_next.pair_id != first.pair_id


def test_progress_counts_today_total_and_left(qstore, qsettings):
    seed_store(qstore, n_pairs=4, overlap_target=1)
    yesterday = T0 - timedelta(days=1)
    label(qstore, "alice", ann.next_task(qstore, "alice", settings=qsettings, now=yesterday), qsettings, now=yesterday)
    label(qstore, "alice", ann.next_task(qstore, "alice", settings=qsettings, now=T0), qsettings, now=T0)
    p = ann.get_progress(qstore, "alice", now=T0)
    assert (p.today, p.total, p.queue_left) == (1, 2, 2)
    ann.next_task(qstore, "bob", settings=qsettings, now=T0)  # bob's lease fills one of the two left
    assert ann.get_progress(qstore, "alice", now=T0).queue_left == 1


def test_gold_rate_is_roughly_honoured_and_gold_looks_like_any_pair(tmp_path):
    from storage import Store

    settings = load_settings(store={"data_dir": tmp_path / "d"},
                             queue={"gold_rate": 0.3, "reshow_rate": 0.0, "seed": 7})
    store = Store.from_settings(settings)
    seeded = seed_store(store, n_pairs=100, n_gold=50, overlap_target=3)
    reasons = Counter()
    n = 80
    task = ann.next_task(store, "alice", settings=settings, now=T0)
    for i in range(n):
        reasons[task.reason] += 1
        if task.reason == "gold":
            assert task.pair_id in seeded.gold_ids
        else:
            assert task.pair_id in seeded.pair_ids
        assert not hasattr(task, "is_gold")  # nothing on the task marks it as gold
        _label, task = ann.submit_and_next(store, "alice", task.assignment_id, "left", strength=1,
                                           settings=settings, now=T0 + timedelta(seconds=i))
    share = reasons["gold"] / n
    assert 0.18 <= share <= 0.42, reasons  # 0.3 +- 2.5 binomial standard deviations
    # Gold pairs are served once per annotator and never closed by the overlap cap.
    assert rows(store, "SELECT count(*) FROM pairs WHERE is_gold AND status = 'complete'")[0][0] == 0
    assert rows(store, "SELECT max(n) FROM (SELECT count(*) n FROM labels GROUP BY pair_id)")[0][0] == 1


def test_reshow_swaps_sides_and_is_not_counted_towards_overlap(tmp_path):
    from storage import Store

    settings = load_settings(store={"data_dir": tmp_path / "d"},
                             queue={"gold_rate": 0.0, "reshow_rate": 0.3, "reshow_min_gap": 3, "seed": 3})
    store = Store.from_settings(settings)
    seed_store(store, n_pairs=30, overlap_target=1)
    first_left: dict[str, str] = {}
    reshows = 0
    task = ann.next_task(store, "alice", settings=settings, now=T0)
    for i in range(40):
        now = T0 + timedelta(seconds=i)
        if task is None:
            break
        shown_left = task.left.items[0].reason[:len("Reason a")]  # 'Reason a' or 'Reason b' = which generation
        if task.reason == "reshow":
            reshows += 1
            assert first_left[task.pair_id] != shown_left  # swapped
        else:
            first_left[task.pair_id] = shown_left
        _label, task = ann.submit_and_next(store, "alice", task.assignment_id, "left", strength=1,
                                           settings=settings, now=now)
    assert reshows >= 3
    # Re-show labels are flagged and excluded from the overlap count (target 1 per pair).
    flagged = rows(store, "SELECT count(*) FROM labels WHERE is_reshow")[0][0]
    assert flagged == reshows
    with store.transaction() as con:
        counts = queue_repo.label_counts(con)
    assert max(counts.values()) == 1
    # Each pair is re-shown at most once, and never before min_gap other labels.
    assert rows(store, "SELECT max(n) FROM (SELECT count(*) n FROM assignments WHERE is_reshow GROUP BY pair_id)")[0][0] == 1


def test_release_gives_pairs_back(qstore, qsettings):
    seed_store(qstore, n_pairs=1, overlap_target=1)
    a = ann.next_task(qstore, "alice", settings=qsettings)
    assert ann.next_task(qstore, "bob", settings=qsettings) is None
    assert ann.release_tasks(qstore, "alice") == 1
    assert ann.next_task(qstore, "bob", settings=qsettings).pair_id == a.pair_id


def test_guidelines_default_then_versioned(qstore):
    assert "Keyboard" in ann.get_guidelines(qstore)
    assert ann.set_guidelines(qstore, "# Rules\nBe kind.", updated_by="boss") == 1
    assert ann.set_guidelines(qstore, "# Rules v2", updated_by="boss") == 2
    assert ann.get_guidelines(qstore) == "# Rules v2"
    with pytest.raises(ValidationError):
        ann.set_guidelines(qstore, "   ")
    with pytest.raises(ValidationError, match=r"control character \(0x00\) on line 2"):  # a binary file
        ann.set_guidelines(qstore, "# Rules\nabc\x00def")
    assert ann.get_guidelines(qstore) == "# Rules v2"


def test_parser_problems_become_badges(qstore, qsettings):
    seed_store(qstore, n_pairs=3, overlap_target=1, problems=True)
    badges = set()
    problems = set()
    for _ in range(3):
        task = ann.next_task(qstore, "alice", settings=qsettings)
        for shown in (task.left, task.right):
            problems.update(shown.problems)
            for item in shown.items:
                badges.update(item.badges)
        label(qstore, "alice", task, qsettings)
    assert "not a candidate" in badges and "not a candidate" in problems


def test_an_item_whose_reason_is_its_own_product_line_carries_a_badge(qstore, qsettings):
    seed_store(qstore, n_pairs=2, overlap_target=1, problems=False, own_line_sides="a")
    for _ in range(2):
        task = ann.next_task(qstore, "alice", settings=qsettings)
        sides = {side.items[0].reason.startswith("Reason"): side for side in (task.left, task.right)}
        assert all(item.badges == (ann.COPIED_LINE_BADGE,) for item in sides[False].items)  # "Blue mug no. 5 (...)"
        assert all(item.badges == () for item in sides[True].items)  # off-topic, but no copy: not for a badge
        assert sides[False].problems == ()
        label(qstore, "alice", task, qsettings)


def test_a_task_says_when_both_lists_hold_the_same_items_in_the_same_order(qstore, qsettings):
    seed_store(qstore, n_pairs=3, overlap_target=1, problems=False, same_items_pairs=1)
    seen = []
    for _ in range(3):
        task = ann.next_task(qstore, "alice", settings=qsettings)
        seen.append((task.pair_id, task.same_items))
        if task.same_items:
            assert [i.reason for i in task.left.items] != [i.reason for i in task.right.items]
            reordered = replace(task, right=replace(task.right, items=task.right.items[::-1]))
            assert not reordered.same_items  # the same items ranked otherwise: the lists differ
        label(qstore, "alice", task, qsettings)
    assert sorted(seen) == [("ppair00000", True), ("ppair00001", False), ("ppair00002", False)]


def test_label_page_services_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import rlhf.annotation, rlhf.auth, rlhf.export, annotate_app.ui, annotate_app.navigation; "
            "bad = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_task_shows_the_attributes_the_prompt_describes(qstore, qsettings):
    seed_store(qstore, n_pairs=1, n_gold=0)
    keys = ("color", "material", "style", "rating")
    shop = qsettings.model_copy(update={"contexts": qsettings.contexts.model_copy(update={"item_attributes": keys})})
    task = ann.next_task(qstore, "alice", settings=shop, now=T0)
    shown = [*task.left.items, *task.right.items]
    assert task.attribute_keys == keys
    for item in shown:  # seed: color Navy/Blue/Ivory, rating 3.0-5.0, and n_buyers, which is not shown
        assert any(a.startswith("rating ") for a in item.attributes), item
        assert not any(a.startswith("n_buyers") for a in item.attributes)
        color = ("Navy", "Blue", "Ivory")[int(item.item_id[-4:]) % 3]
        assert (f"color {color}" in item.attributes) == (color.lower() not in item.title.lower())
    history = task.history[0]
    assert task.attributes(history)[-1].startswith("rating ")
    bare = ann.next_task(qstore, "bob", settings=qsettings, now=T0)  # the default: none
    assert bare.attribute_keys == () and all(i.attributes == () for i in bare.left.items)


def test_free_text_is_stored_without_direction_overrides(qstore, qsettings):
    # U+202E turned "override LTR" into "RTL edirrevo" on the manager's drill-down.
    seed_store(qstore, n_pairs=2, overlap_target=1)
    task = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    label(qstore, "alice", task, qsettings, rationale="A \u202eoverride\u202c LTR \u2067x\u2069", now=T0)
    skipped = ann.next_task(qstore, "alice", settings=qsettings, now=T0)
    ann.skip_task(qstore, "alice", skipped.assignment_id, "other: \u202ebackwards")
    assert rows(qstore, "SELECT rationale FROM labels") == [("A override LTR x",)]
    assert rows(qstore, "SELECT skip_reason FROM assignments WHERE status = 'skipped'") == [("other: backwards",)]
