"""The dashboard's SQL (storage.analytics) and services (rlhf.dashboard) on a real store."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from seed import seed_store

from rlhf.dashboard import build_dashboard, kappa_long, throughput_for_chart
from storage import queue as queue_repo
from storage.analytics import LabelSelection
from storage.records import Label

T0 = datetime(2026, 2, 2, 10)


def _label(i: int, pid: str, who: str, choice: str, *, day: int = 0, left: str = "A", reshow: bool = False,
           source: str = "simulated") -> Label:
    return Label(label_id=f"L{i:03d}", pair_id=pid, annotator_id=who, choice=choice,
                 strength=2 if choice in ("A", "B") else None, left_side=left, time_ms=10_000, is_reshow=reshow,
                 source=source, created_at=T0 + timedelta(days=day, minutes=i))


@pytest.fixture
def filled(store):
    seeded = seed_store(store, n_pairs=6, n_gold=1, overlap_target=3)
    p = seeded.pair_ids
    gold = seeded.gold_ids[0]
    labels = [
        # p0, p1 complete with 3 labels; p2 waiting with 2; p3 one label; p4, p5 unlabelled.
        _label(1, p[0], "u1", "A"), _label(2, p[0], "u2", "A"), _label(3, p[0], "u3", "B", day=1),
        _label(4, p[1], "u1", "B"), _label(5, p[1], "u2", "B"), _label(6, p[1], "u3", "B", day=1),
        _label(7, p[2], "u1", "tie"), _label(8, p[2], "u2", "tie", source="app"),
        _label(9, p[3], "u1", "A", day=1),
        _label(10, gold, "u1", "A"), _label(11, gold, "u2", "B"),
        # u1 sees p0 again with sides swapped and answers the same canonical choice; u2 flips on p1.
        _label(12, p[0], "u1", "A", left="B", reshow=True, day=1),
        _label(13, p[1], "u2", "A", left="B", reshow=True, day=1),
        # A label that was undone: it must not count anywhere.
        _label(14, p[4], "u3", "A", day=1),
    ]
    with store.transaction() as con:
        queue_repo.import_labels(con, labels)
        con.execute("INSERT INTO label_retractions (label_id, retracted_by, reason) VALUES ('L014', 'u3', 'undo')")
        # u1's gold label came through the queue as a gold pair; u2's did not (given before the pair was gold).
        con.execute("INSERT INTO assignments (assignment_id, pair_id, annotator_id, reason, status, assigned_at, "
                    "expires_at) VALUES ('as10', ?, 'u1', 'gold', 'done', ?, ?)", [gold, T0, T0])
        con.execute("UPDATE labels SET assignment_id = 'as10' WHERE label_id = 'L010'")
    return store, p, gold


def test_dashboard_numbers_from_the_store(filled, settings) -> None:
    store, _, _ = filled
    dash = build_dashboard(store, LabelSelection(), settings, n_boot=30)
    assert dash.counts["labels"] == 13  # the retracted label is gone
    assert dash.counts["reshows"] == 2
    assert set(dash.labels["label_id"]) == {f"L{i:03d}" for i in range(1, 14)}

    summary = dash.summary.set_index("metric")
    # First labels only: p0 A,A,B  p1 B,B,B  p2 tie,tie  gold A,B -> agreeing pairs 1+3+1+0 of 3+3+1+1.
    assert summary.loc["raw_agreement", "value"] == pytest.approx(5 / 8)

    q = dash.quality.set_index("annotator_id")
    assert q.loc["u1", "self_consistency"] == 1.0 and q.loc["u2", "self_consistency"] == 0.0
    assert q.loc["u1", "gold_accuracy"] == 1.0 and q.loc["u2", "gold_accuracy"] == 0.0
    assert q.loc["u1", "labels"] == 6

    queue = dash.queue.set_index("strategy").loc["seed"]
    assert int(queue["pairs"]) == 7
    # The gold pair (two labels) is counted apart, as queue status does: it is never complete.
    assert (int(queue["complete"]), int(queue["waiting_for_overlap"]), int(queue["unlabelled"])) == (2, 2, 2)
    assert int(queue["gold_pairs"]) == 1

    served = dash.served.set_index("annotator_id")
    assert served.loc["u1", "gold_labels"] == 1 and served.loc["u1", "reshow_labels"] == 1
    assert served.loc["u2", "gold_labels"] == 0  # on the gold pair, but not served to u2 as gold
    assert served.loc["u1", "gold_rate"] == pytest.approx(1 / 6)

    days = dash.throughput.assign(day=pd.to_datetime(dash.throughput["day"]).dt.date).groupby("day")["labels"].sum()
    assert days.loc[date(2026, 2, 2)] == 8 and days.loc[date(2026, 2, 3)] == 5
    assert throughput_for_chart(dash.throughput, top_n=1)["annotator"].isin(["u1", "others"]).all()
    heat = kappa_long(dash.kappa)
    assert {"rater_a", "rater_b", "kappa", "shared"} <= set(heat.columns)
    # Nobody against themself (kappa 1 by definition), and only annotators who share a pair.
    assert not (heat["rater_a"] == heat["rater_b"]).any() and (heat["shared"] > 0).all() and len(heat)
    # The CSV lists each pair of raters once; the heatmap needs both ways round.
    once = kappa_long(dash.kappa, both_ways=False)
    assert 2 * len(once) == len(heat)
    assert set(map(frozenset, zip(once["rater_a"], once["rater_b"], strict=True))) == set(
        map(frozenset, zip(heat["rater_a"], heat["rater_b"], strict=True)))
    assert dash.rounds.empty  # no rounds have run: the page says so


def test_filters_restrict_the_selection(filled, settings) -> None:
    store, _, _ = filled
    by_day = build_dashboard(store, LabelSelection(date_from=date(2026, 2, 3), date_to=date(2026, 2, 3)), settings,
                             n_boot=0)
    assert by_day.counts["labels"] == 5
    only_app = build_dashboard(store, LabelSelection(sources=("app",)), settings, n_boot=0)
    assert only_app.labels["label_id"].tolist() == ["L008"]
    two = build_dashboard(store, LabelSelection(annotators=("u1", "u2")), settings, n_boot=0)
    assert set(two.labels["annotator_id"]) == {"u1", "u2"}
    assert build_dashboard(store, LabelSelection(strategies=("external",)), settings, n_boot=0).counts["labels"] == 0
    assert build_dashboard(store, LabelSelection(round_ids=("(no round)",)), settings, n_boot=0).counts["labels"] == 13


def test_round_quality_reads_rm_metrics_and_human_win_rate(store) -> None:
    from rlhf.dashboard import round_quality
    from storage import analytics
    from storage.records import RewardModelRecord, RoundRecord
    from storage.reward_models import insert_reward_model
    from storage.rounds import insert_evaluation, insert_round

    with store.transaction() as con:
        insert_reward_model(con, RewardModelRecord(
            rm_id="rm1", backbone="tiny", path="/x", round_id="r1",
            metrics={"heldout_accuracy": 0.7, "heldout_accuracy_unselected": 0.75, "gold_accuracy": 0.8,
                     "annotator_agreement": {"u1": {"model_agreement": 0.6}, "u2": {"model_agreement": 0.8}}}))
        insert_round(con, RoundRecord(round_id="r1", status="done", policy_id="new", parent_policy_id="old",
                                      reward_model_id="rm1", metrics={"rm_win_rate": {"mean": 0.65}}))
        insert_round(con, RoundRecord(round_id="r2", status="failed", policy_id=None, parent_policy_id="new"))
        insert_evaluation(con, "e1", {"zero_shot_policy_id": "old", "ndcg_difference": {
            "old": {"mean": 0.02, "lo": -0.01, "hi": 0.05, "n": 40}}}, round_id="r1")
    with store.transaction() as con:  # a later report for the same round (e.g. re-evaluated) is the one shown
        insert_evaluation(con, "e2", {"zero_shot_policy_id": "old", "ndcg_difference": {
            "old": {"mean": 0.03, "lo": 0.01, "hi": 0.05, "n": 240}}, "reasons_difference": {
            "old": {"mean": -0.08, "lo": -0.12, "hi": -0.05, "n": 294}}}, round_id="r1")
        rows = analytics.round_quality_rows(con)
    comparisons = pd.DataFrame({
        "pair_id": ["a", "b", "c", "d", "e", "f", "g", "h"], "annotator_id": "u1",
        "choice": ["A", "B", "tie", "both_bad", "A", "A", "A", "A"],
        "policy_a": ["new", "new", "old", "new", "other", "new", "new", "new"],
        "policy_b": ["old", "old", "new", "old", "new", "old", "old", "old"],
        "strategy": ["active", "new_vs_previous", "active", "active", "active", "active", "active", "same_policy"],
        "selection_reason": ["random", None, "random", "random", "random", "uncertainty", "disagreement", None],
        "is_gold": [False] * 7 + [True],
    })
    # Two more annotators on pair a: its three labels count as one pair, not three.
    comparisons = pd.concat([comparisons, comparisons.iloc[[0, 0]].assign(annotator_id=["u2", "u3"])],
                            ignore_index=True)
    out = round_quality(rows, comparisons).set_index("round_id")
    assert (out.loc["r1", "parent_policy_id"], out.loc["r2", "parent_policy_id"]) == ("old", "new")
    assert out.loc["r1", "rm_heldout_accuracy"] == 0.7 and out.loc["r1", "rm_gold_accuracy"] == 0.8
    assert out.loc["r1", "rm_heldout_accuracy_unselected"] == 0.75
    assert out.loc["r1", "rm_human_agreement"] == pytest.approx(0.7)
    assert out.loc["r1", "rm_win_rate"] == 0.65
    # a: new wins, b: old wins, c: tie (1/2); d (both bad) and e (other policy) are left out, and so are the
    # pairs a model chose (f, g: the round asked where its reward model saw little difference) and gold (h).
    assert out.loc["r1", "human_win_rate"] == pytest.approx(0.5) and out.loc["r1", "human_win_labels"] == 5
    assert out.loc["r1", "human_win_pairs"] == 3 and out.loc["r1", "human_win_interval"] == "0%–100%"
    one = round_quality(rows, comparisons[comparisons["pair_id"] == "a"]).set_index("round_id")
    assert one.loc["r1", "human_win_pairs"] == 1 and one.loc["r1", "human_win_interval"] == "one pair: no interval"
    # Whether the round's lists beat the zero-shot model's, from the paired interval of its latest report.
    assert out.loc["r1", "ndcg_vs_zero_shot"] == "better: +0.030 [+0.010, +0.050] over 240 shoppers"
    assert pd.isna(out.loc["r2", "ndcg_vs_zero_shot"])  # no evaluation: no verdict
    assert out.loc["r1", "reasons_vs_zero_shot"] == "worse: -0.080 [-0.120, -0.050] over 294 shoppers"
    assert pd.isna(out.loc["r2", "reasons_vs_zero_shot"])
    # The tables on the pages say so in words; other empty cells stay empty.
    from annotate_app.ui import with_verdicts_said

    said = with_verdicts_said(out)
    assert said.loc["r2", "ndcg_vs_zero_shot"] == said.loc["r2", "reasons_vs_zero_shot"] == "not measured"
    # The Agreement page's win rate showed a bare None: the filler named a column the table does not have.
    assert said.loc["r2", "human_win_interval"] == said.loc["r2", "human_win_rate"] == "no labels yet"
    assert said.loc["r1", "human_win_rate"] == "50%"
    assert said.loc["r1", "ndcg_vs_zero_shot"] == out.loc["r1", "ndcg_vs_zero_shot"]
    assert pd.isna(said.loc["r2", "rm_heldout_accuracy"])


def test_human_win_rate_reads_how_each_pair_was_chosen_from_the_store(store) -> None:
    """The labels query gives the dashboard each pair's strategy, selection reason and gold flag."""
    from rlhf.dashboard import build_dashboard
    from storage import generations as gen_repo
    from storage.records import Generation, ListItem, Pair, Policy, RoundRecord
    from storage.rounds import insert_round

    def gen(gid: str, policy: str) -> Generation:
        return Generation(gid, "ctx", policy, gid, [ListItem("I1", "because")], [], True)

    chosen = [("random", "active", False), ("uncertainty", "active", False), (None, "new_vs_previous", False),
              (None, "new_vs_previous", True)]
    with store.transaction() as con:
        for policy in ("old", "new"):
            gen_repo.upsert_policy(con, Policy(policy, kind="llm"))
        gen_repo.insert_generations(con, [gen(f"{p}{k}", p) for p in ("old", "new") for k in range(len(chosen))])
        gen_repo.insert_pairs(con, [
            Pair(pair_id=f"q{k}", context_id="ctx", gen_a=f"new{k}", gen_b=f"old{k}", strategy=strategy,
                 priority=1.0, overlap_target=1, selection_reason=reason, is_gold=gold, round_id="r1")
            for k, (reason, strategy, gold) in enumerate(chosen)])
        insert_round(con, RoundRecord(round_id="r1", status="done", policy_id="new", parent_policy_id="old"))
        # The new policy wins every pair but the one pulled from the middle of the reward model's range.
        queue_repo.import_labels(con, [_label(k, f"q{k}", "u1", "B" if k == 1 else "A") for k in range(len(chosen))])
    rounds = build_dashboard(store, LabelSelection(), n_boot=0).rounds.set_index("round_id")
    assert rounds.loc["r1", "human_win_rate"] == 1.0  # q0 (random slice) and q2; not q1 (a model chose it), not gold q3
    assert rounds.loc["r1", "human_win_labels"] == rounds.loc["r1", "human_win_pairs"] == 2
    # `round list` says the same under the round.
    from typer.testing import CliRunner

    from rlhf.cli import app

    out = CliRunner().invoke(app, ["round", "list", "--data-dir", str(store.path.parent)])
    assert out.exit_code == 0, out.output
    assert "annotators prefer it to its parent: 100% [100%, 100%] over 2 pairs (2 labels) no model chose" in out.output


def test_round_list_gives_the_reward_models_accuracy_on_pairs_no_model_chose_where_it_differs(store) -> None:
    """Actively chosen held-out pairs are harder for the next reward model, so `round list` also says the
    accuracy without them, once some held-out pairs were chosen by a model (before, it is the same figure)."""
    from typer.testing import CliRunner

    from rlhf.cli import app
    from storage.records import RoundRecord
    from storage.rounds import insert_round

    def metrics(n_unselected: int, unselected: float) -> dict:
        return {"rm_heldout_accuracy": 0.5, "rm_counts": {"examples_heldout": 12},
                "rm_heldout_accuracy_unselected": unselected, "rm_heldout_unselected_pairs": n_unselected}

    with store.transaction() as con:
        insert_round(con, RoundRecord(round_id="r1", status="done", metrics=metrics(12, 0.5)))
        insert_round(con, RoundRecord(round_id="r2", status="done", metrics=metrics(6, 1.0)))
    out = CliRunner().invoke(app, ["round", "list", "--data-dir", str(store.path.parent)])
    assert out.exit_code == 0, out.output
    r1, r2 = (next(line for line in out.output.splitlines() if line.startswith(r)) for r in ("r1", "r2"))
    assert "rm_acc=0.500 (12 held-out pairs)" in r1
    assert "rm_acc=0.500 (12 held-out pairs; 1.000 on the 6 no model chose)" in r2


def test_the_drill_down_gives_each_answer_as_the_annotator_saw_it(store) -> None:
    """ann1 clicked A and wrote 'list A fits'; the drill-down showed B, the pair's own name for that list."""
    from rlhf.dashboard import annotator_labels

    p = seed_store(store, n_pairs=4, overlap_target=3).pair_ids
    with store.transaction() as con:
        queue_repo.import_labels(con, [
            replace(_label(1, p[0], "u1", "B", left="B"),  # the pair's B was on the left: they clicked it, "A"
                    item_flags={"A:I0003": ["irrelevant"], "B:I0007": ["bad_reason", "duplicate"]}),
            _label(2, p[1], "u1", "B", left="A"),   # B on the right: they clicked B
            _label(3, p[2], "u1", "tie", left="B"),
            _label(4, p[3], "u1", "A", left=None),  # an import without sides: unknown
        ])
    shown = annotator_labels(store, "u1").set_index("pair_id")
    assert shown.loc[p[0], "as_seen"] == "A" and shown.loc[p[0], "choice"] == "B"
    assert shown.loc[p[0], "flags"] == "A I0003: irrelevant; B I0007: bad reason, duplicate"
    assert shown.loc[p[1], "as_seen"] == "B" and shown.loc[p[2], "as_seen"] == "tie"
    assert pd.isna(shown.loc[p[3], "as_seen"])


def test_the_manager_sees_which_pairs_were_skipped_and_why(store) -> None:
    """Skips and their reasons were stored and shown nowhere (Label Studio and Argilla list them)."""
    from rlhf import annotation as ann
    from rlhf.dashboard import skipped_pairs

    seed_store(store, n_pairs=3, overlap_target=2)
    task = ann.next_task(store, "u1")
    ann.skip_task(store, "u1", task.assignment_id, "the lists look truncated")
    other = ann.next_task(store, "u2")
    ann.skip_task(store, "u2", other.assignment_id, "cannot judge furniture")
    shown = skipped_pairs(store)
    assert sorted(shown[["annotator_id", "pair_id", "skip_reason"]].values.tolist()) == [
        ["u1", task.pair_id, "the lists look truncated"], ["u2", other.pair_id, "cannot judge furniture"]]
    assert skipped_pairs(store, LabelSelection(annotators=("u2",)))["annotator_id"].tolist() == ["u2"]
