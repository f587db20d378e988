"""Simulated annotators: behaviour of one judgment, the crowd's calibration, labelling via the service."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf import simulate as sim
from rlhf.settings import load_settings


def _draws(profile: sim.AnnotatorProfile, u_left: float, u_right: float, n: int = 2000, **kw) -> list[sim.Judgment]:
    rng = np.random.default_rng(1)
    return [sim.judge(profile, u_left, u_right, rng, **kw) for _ in range(n)]


def test_careful_annotator_follows_bradley_terry() -> None:
    p = sim.AnnotatorProfile("a", temperature=0.5, left_bias=0.0, lapse=0.0, tie_prob=0.0)
    share_left = np.mean([j.side == "left" for j in _draws(p, 0.5, 0.0)])
    assert share_left == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.03)  # sigmoid(0.5 / 0.5)
    # a larger gap gives stronger preferences
    small = np.mean([j.strength for j in _draws(p, 0.2, 0.0) if j.side == "left"])
    large = np.mean([j.strength for j in _draws(p, 2.0, 0.0) if j.side == "left"])
    assert large > small + 0.8


def test_position_bias_ties_both_bad_and_speed() -> None:
    biased = sim.AnnotatorProfile("b", temperature=0.5, left_bias=0.3, lapse=0.0, tie_prob=0.0)
    assert np.mean([j.side == "left" for j in _draws(biased, 0.0, 0.3)]) > 0.5  # despite right being better
    tier = sim.AnnotatorProfile("t", tie_margin=0.1, tie_prob=1.0, left_bias=0.0, lapse=0.0)
    assert {j.side for j in _draws(tier, 0.02, 0.0, 200)} == {"tie"}
    assert "tie" not in {j.side for j in _draws(tier, 1.0, 0.0, 200)}
    picky = sim.AnnotatorProfile("p", both_bad_prob=1.0, left_bias=0.0, lapse=0.0)
    assert {j.side for j in _draws(picky, 0.0, 0.0, 200, floor=0.0)} == {"both_bad"}
    assert all(j.strength is None for j in _draws(picky, 0.0, 0.0, 50, floor=0.0))
    seconds = [j.seconds for j in _draws(sim.AnnotatorProfile("s", speed_median_s=12.0, left_bias=0.0, lapse=0.0),
                                         1.0, 0.0)]
    assert np.median(seconds) == pytest.approx(12.0, rel=0.08)


def test_spammers() -> None:
    lefty = sim.AnnotatorProfile("l", behaviour="always_left")
    assert {j.side for j in _draws(lefty, 0.0, 5.0, 100)} == {"left"}
    coin = sim.AnnotatorProfile("c", behaviour="random", speed_median_s=3.0)
    draws = _draws(coin, 5.0, 0.0)
    assert np.mean([j.side == "left" for j in draws]) == pytest.approx(0.5, abs=0.04)
    crowd = sim.make_crowd(20, "default", seed=3)
    spammers = [p for p in crowd if p.behaviour != "bt"]
    assert 1 <= len(spammers) <= 3 and all(p.speed_median_s < 4 for p in spammers)


def test_default_crowd_agreement_is_calibrated_like_real_labellers() -> None:
    utilities = sim.synthetic_utility_pairs(2500, seed=123)  # not the calibration draw
    crowds = {n: sim.make_crowd(n, "default", seed=seed) for n, seed in ((20, 0), (6, 1))}
    for n, crowd in crowds.items():
        agreement = sim.raw_agreement(crowd, utilities, seed=n + 50)
        assert 0.70 <= agreement <= 0.80, (n, agreement)
    clean = sim.raw_agreement(sim.make_crowd(20, "clean", seed=0), utilities, seed=5)
    noisy = sim.raw_agreement(sim.make_crowd(20, "noisy", seed=0), utilities, seed=5)
    assert clean > 0.85 and noisy < 0.65
    # the calibration is scale-free: multiplying every utility by 40 changes nothing systematic
    crowd = crowds[20]
    scaled = sim.raw_agreement(crowd, utilities * 40.0, seed=50)
    assert scaled == pytest.approx(sim.raw_agreement(crowd, utilities, seed=50), abs=0.02)
    assert sim.accuracy_against_truth(crowd, utilities) > 0.75


def test_a_crowd_is_judged_on_the_pairs_that_differ_at_the_whole_tasks_scale() -> None:
    """On real data most pairs may have no true difference (UCI: neither list holds a later purchase).
    The crowd's noise is set by the spread of all the task's gaps, so figures on the pairs that differ
    must use that spread, not the subset's own (wider) one."""
    differ = sim.synthetic_utility_pairs(2000, seed=7)
    task = np.vstack([differ, np.zeros((3000, 2))])  # 60% of the pairs are worthless, equal lists
    scale = sim.utility_scale(task[:, 0] - task[:, 1])
    assert scale < sim.utility_scale(differ[:, 0] - differ[:, 1])
    crowd = sim.make_crowd(20, "default", seed=0)
    at_task_scale = sim.raw_agreement(crowd, differ, seed=3, scale=scale)
    at_own_scale = sim.raw_agreement(crowd, differ, seed=3)
    assert at_task_scale > at_own_scale + 0.01
    assert sim.accuracy_against_truth(crowd, differ, seed=4, scale=scale) == sim.accuracy_against_truth(
        crowd, task, seed=4)
    assert sim.accuracy_against_truth(crowd, differ, seed=4, scale=scale) > sim.accuracy_against_truth(
        crowd, differ, seed=4)


def test_purchase_utility_is_dcg_of_later_purchases() -> None:
    assert sim.purchase_utility({"b", "z"}, ["a", "b", "c"]) == pytest.approx(1 / math.log2(3))
    assert sim.purchase_utility({"a"}, ["a", "a"]) == pytest.approx(1.0)
    assert sim.purchase_utility(set(), ["a"]) == 0.0
    cats = {"a": "mugs", "b": "bags", "c": "mugs"}
    soft = sim.purchase_utility({"b"}, ["a", "b", "x"], category_of=cats, categories_bought={"bags", "mugs"},
                                category_credit=0.25)
    assert soft == pytest.approx(0.25 + 1 / math.log2(3))
    util = sim.PurchaseUtility({"c1": {"c"}}, category_of=cats, category_credit=0.5)

    class Ctx:
        context_id = "c1"

    assert util(Ctx(), ["a", "c"]) == pytest.approx(0.5 + 1 / math.log2(3))  # a: same category as c
    assert sim.PurchaseUtility({"c1": {"c"}})(Ctx(), ["a", "c"]) == pytest.approx(1 / math.log2(3))


def _item_number_utility(context, items) -> float:
    """A deterministic ground truth for seeded shops: higher item numbers are better."""
    return float(sum(int(i[-4:]) for i in items)) / 100.0


def test_simulated_labels_land_in_the_store_through_the_service(store, settings) -> None:
    pytest.importorskip("rlhf.annotation")
    from storage import queue as queue_repo
    from storage import users as users_repo
    from tests.seed import seed_store

    seeded = seed_store(store, n_pairs=8, overlap_target=3, problems=True, seed=4)
    settings = load_settings(store={"data_dir": settings.store.data_dir},
                             queue={"gold_rate": 0.0, "reshow_rate": 0.0, "seed": 1})
    crowd = sim.make_crowd(4, "clean", seed=0)
    names = sim.ensure_accounts(store, crowd)
    assert sim.ensure_accounts(store, crowd) == names  # idempotent
    report = sim.run_simulation(store, crowd, _item_number_utility, 100, settings=settings, seed=2)
    assert report.labels == 8 * 3 and report.stopped == "queue empty"

    with store.transaction() as con:
        labels = queue_repo.current_labels(con)
        accounts = {a.annotator_id: a for a in users_repo.list_annotators(con, kind="simulated")}
        from storage.generations import get_generations, get_pair

        truth = {}
        for pid in seeded.pair_ids:
            pair = get_pair(con, pid)
            gens = get_generations(con, [pair.gen_a, pair.gen_b])
            u_a = _item_number_utility(None, [i.item_id for i in gens[pair.gen_a].items])
            u_b = _item_number_utility(None, [i.item_id for i in gens[pair.gen_b].items])
            truth[pid] = "A" if u_a > u_b else "B" if u_b > u_a else "equal"
    assert set(accounts) == set(names)
    assert len(labels) == 24 and {lab.annotator_id for lab in labels} <= set(names)
    assert all(lab.time_ms and lab.time_ms > 0 for lab in labels)
    assert {lab.source for lab in labels} == {"simulated"}  # told apart from people's ('app') on the Agreement page
    per_pair = {pid: sum(lab.pair_id == pid for lab in labels) for pid in seeded.pair_ids}
    assert set(per_pair.values()) == {3}
    # a clean crowd's canonical choices follow the truth: left/right went through the service correctly
    right = np.mean([lab.choice == truth[lab.pair_id] for lab in labels])
    assert right > 0.8
    # the report's truth figures are those of the stored labels, in canonical terms
    decided = [lab for lab in labels if truth[lab.pair_id] != "equal" and lab.choice in ("A", "B")]
    assert report.truth_ties == sum(truth[lab.pair_id] == "equal" for lab in labels)
    assert report.decided == len(decided) > 0
    assert report.decided_right == sum(lab.choice == truth[lab.pair_id] for lab in decided)
    assert report.summary()["right_where_lists_differ"] == round(report.decided_right / report.decided, 3)
    assert any(lab.item_flags for lab in labels)  # the seeded problem items got flagged
    assert sim.observed_agreement(labels) > 0.7
    from storage.evaluation_queries import labelled_pairs_per_context

    with store.transaction() as con:
        per_context = labelled_pairs_per_context(con)
    assert len(per_context) == 8 and set(per_context.values()) == {1}


def test_a_crowd_that_reads_reasons_prefers_and_flags_grounded_ones(store, settings) -> None:
    """Two lists equal by the items' truth, one with reasons about its items: with ``reason_penalty`` the
    careful crowd picks that one and flags the other's reasons; without it the reasons change nothing."""
    pytest.importorskip("rlhf.annotation")
    from storage import queue as queue_repo
    from tests.seed import seed_store

    seed_store(store, n_pairs=10, overlap_target=3, problems=False, seed=5, grounded_sides="a")
    settings = load_settings(store={"data_dir": settings.store.data_dir},
                             queue={"gold_rate": 0.0, "reshow_rate": 0.0, "seed": 1})
    crowd = sim.make_crowd(4, "clean", seed=0)
    sim.ensure_accounts(store, crowd)

    def reading(penalty: float) -> tuple[float, int, int]:
        with store.transaction() as con:
            before = {lab.label_id for lab in queue_repo.current_labels(con)}
        report = sim.run_simulation(store, crowd, lambda context, items: 1.0, 15, settings=settings, seed=3,
                                    reason_penalty=penalty)
        with store.transaction() as con:
            new = [lab for lab in queue_repo.current_labels(con) if lab.label_id not in before]
        picked = [lab.choice for lab in new if lab.choice in ("A", "B")]
        flagged = {"A": 0, "B": 0}  # item_flags are keyed "A:<item>" / "B:<item>", canonical sides
        for lab in new:
            for key, item_flags in (lab.item_flags or {}).items():
                flagged[key.split(":")[0]] += "bad_reason" in item_flags
        return sum(c == "A" for c in picked) / max(1, len(picked)), flagged["A"], flagged["B"], report

    blind_a, blind_flags_a, blind_flags_b, blind = reading(0.0)
    read_a, read_flags_a, read_flags_b, read = reading(2.0)
    assert read_a >= 0.9 and blind_a <= 0.8
    # Items alone, every pair is a tie in truth; a crowd that reads reasons has a truth to be right about.
    assert blind.truth_ties == blind.labels == 15 and blind.summary()["right_where_lists_differ"] is None
    assert read.truth_ties == 0 and read.summary()["right_where_lists_differ"] >= 0.9
    assert read_flags_b > 10 and read_flags_a == 0
    assert blind_flags_a == blind_flags_b == 0


def test_a_crowd_that_reads_reasons_counts_a_copied_product_line_as_no_reason(store, settings) -> None:
    """One side's reasons copy other candidates' lines from the prompt, which often share the item's colour,
    noun or category: the reading crowd judges them as it judges off-topic ones, flags most and picks the other."""
    pytest.importorskip("rlhf.annotation")
    from storage import queue as queue_repo
    from tests.seed import seed_store

    seed_store(store, n_pairs=10, overlap_target=3, problems=False, seed=5, grounded_sides="a", copied_sides="b")
    settings = load_settings(store={"data_dir": settings.store.data_dir},
                             queue={"gold_rate": 0.0, "reshow_rate": 0.0, "seed": 1})
    crowd = sim.make_crowd(4, "clean", seed=0)
    sim.ensure_accounts(store, crowd)
    sim.run_simulation(store, crowd, lambda context, items: 1.0, 15, settings=settings, seed=3, reason_penalty=2.0)
    with store.transaction() as con:
        labels = queue_repo.current_labels(con)
    picked = [lab.choice for lab in labels if lab.choice in ("A", "B")]
    flagged_b = sum("bad_reason" in flags for lab in labels for key, flags in (lab.item_flags or {}).items()
                    if key.startswith("B:"))
    assert sum(c == "A" for c in picked) / len(picked) >= 0.9
    assert flagged_b >= 0.5 * 5 * len(labels)  # each of B's five reasons flagged with probability 0.7


def test_simulate_command_labels_the_queue(store, monkeypatch) -> None:
    pytest.importorskip("rlhf.annotation")
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings
    from storage import queue as queue_repo
    from tests.seed import seed_store

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(store.path.parent))
    get_settings.cache_clear()
    try:
        empty = CliRunner().invoke(app, ["simulate", "--labels", "5"])
        seed_store(store, n_pairs=4, overlap_target=2, seed=2)
        result = CliRunner().invoke(app, ["simulate", "--annotators", "3", "--labels", "5", "--crowd", "noisy",
                                          "--reason-penalty", "0.5"])
        bad = CliRunner().invoke(app, ["simulate", "--crowd", "perfect"])
    finally:
        get_settings.cache_clear()
    assert empty.exit_code == 0 and "Nothing to label: the queue has no open pair" in empty.output, empty.output
    assert result.exit_code == 0, result.output
    assert "5 labels by" in result.output and "Nothing to label" not in result.output
    assert "of these labels were on pairs whose lists are worth the same" in result.output
    with store.transaction() as con:
        assert len(queue_repo.current_labels(con)) == 5
    assert bad.exit_code == 1 and "Unknown crowd" in bad.output


def test_simulate_labels_without_a_store() -> None:
    crowd = sim.make_crowd(6, "clean", seed=0)
    utilities = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    labels = sim.simulate_labels(crowd, utilities, labels_per_pair=4, seed=0)
    assert len(labels) == 12
    for row in range(3):
        who = [lab["annotator"] for lab in labels if lab["pair"] == row]
        assert len(set(who)) == 4
    # a clean crowd follows clear gaps whichever side each annotator saw them on
    assert {lab["choice"] for lab in labels if lab["pair"] == 0} == {"A"}
    assert {lab["choice"] for lab in labels if lab["pair"] == 1} == {"B"}
    assert {lab["left_is_a"] for lab in labels} == {True, False}
