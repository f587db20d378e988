"""Offline evaluation: metric values by hand, intervals, baselines, and the leakage guard."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rlhf import evaluation as ev
from storage import catalog, contexts, generations
from storage.records import CatalogItem, Context, Generation, ListItem, Policy

CUT = datetime(2011, 6, 1)


def test_hit_rate_and_ndcg_by_hand() -> None:
    assert ev.hit_rate_at_n(["a", "b", "c"], {"c"}, 3) == 1.0
    assert ev.hit_rate_at_n(["a", "b", "c"], {"c"}, 2) == 0.0
    assert ev.hit_rate_at_n(["a"], set(), 1) == 0.0
    # one hit at rank 2 of 3, two relevant items: DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ev.ndcg_at_n(["a", "b", "c"], {"b", "z"}, 3) == pytest.approx(expected)
    assert ev.ndcg_at_n(["b", "z", "c"], {"b", "z"}, 3) == pytest.approx(1.0)
    # more relevant items than N: the ideal is capped at N
    assert ev.ndcg_at_n(["x", "y"], {"x", "y", "q", "r"}, 2) == pytest.approx(1.0)
    # a repeated hit earns nothing the second time
    assert ev.ndcg_at_n(["b", "b"], {"b", "z"}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ev.ndcg_at_n(["a"], set(), 5) == 0.0


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    small = ev.bootstrap_ci(rng.binomial(1, 0.3, 50), samples=800, seed=1)
    large = ev.bootstrap_ci(rng.binomial(1, 0.3, 2000), samples=800, seed=1)
    for est in (small, large):
        assert est.lo <= est.mean <= est.hi
    assert (large.hi - large.lo) < 0.5 * (small.hi - small.lo)
    assert small.n == 50 and math.isnan(ev.bootstrap_ci([]).mean)
    assert not small.overlaps(ev.Estimate(0.9, 0.85, 0.95, 10))


def test_a_paired_interval_is_read_as_better_worse_or_no_detectable_difference() -> None:
    from rlhf.evaluation import paired_verdict

    assert paired_verdict(0.001, 0.05) == "better"
    assert paired_verdict(-0.05, -0.001) == "worse"
    assert paired_verdict(-0.011, 0.053) == "no detectable difference"  # a 1.22x point ratio can read like this
    assert paired_verdict(0.0, 0.0) == "no detectable difference"  # identical lists on every shopper
    assert paired_verdict(None, 0.1) is None and paired_verdict(float("nan"), float("nan")) is None


def test_win_rate_counts_ties_as_half() -> None:
    est = ev.win_rate({"c1": 1.0, "c2": 0.0, "c3": 2.0, "c4": 5.0}, {"c1": 0.5, "c2": 1.0, "c3": 2.0})
    assert est.mean == pytest.approx((1 + 0 + 0.5) / 3) and est.n == 3


def test_paired_difference_by_hand_and_where_overlapping_intervals_cannot_tell() -> None:
    est = ev.paired_difference({"a": 1.0, "b": 0.5, "c": 0.0}, {"a": 0.5, "b": 0.5, "c": 0.0, "d": 1.0})
    assert est.mean == pytest.approx(0.5 / 3) and est.n == 3  # only the contexts both have
    # A policy 0.1 better on every shopper: its own interval overlaps the other's, the paired one is 0.1.
    rng = np.random.default_rng(0)
    y = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 40))}
    x = {c: v + 0.1 for c, v in y.items()}
    assert ev.bootstrap_ci(list(x.values())).overlaps(ev.bootstrap_ci(list(y.values())))
    paired = ev.paired_difference(x, y)
    assert paired.lo == pytest.approx(0.1) and paired.hi == pytest.approx(0.1) and paired.n == 40


def test_diversity_novelty_coverage_validity_by_hand() -> None:
    cats = {"a": "mugs", "b": "mugs", "c": "bags", "d": None}
    # pairs among a,b,c: (a,b) same, (a,c), (b,c) differ -> 1 - 1/3
    assert ev.intra_list_diversity(["a", "b", "c"], cats) == pytest.approx(2 / 3)
    titles = {"x": "RED MUG", "y": "RED MUG", "z": "BLUE BAG"}
    # no categories: title-word Jaccard; sims (x,y)=1, (x,z)=0, (y,z)=0 -> 1 - 1/3
    assert ev.intra_list_diversity(["x", "y", "z"], {}, titles) == pytest.approx(2 / 3)
    assert math.isnan(ev.intra_list_diversity(["a"], cats))
    assert ev.novelty(["a", "q"], {"a": 1, "b": 2}, unseen_rank=3) == pytest.approx(2.0)
    assert ev.catalogue_coverage([["a", "b"], ["b", "zz"]], {"a", "b", "c", "d"}) == pytest.approx(0.5)
    assert ev.item_validity(["a", "a", "zz", "c"], {"a", "zz"}, {"a", "b", "c"}) == [True, False, False, False]


def _interactions() -> pd.DataFrame:
    rows = []
    # before the cut: i1 bought by 3 shoppers, i2 by 2, i3 by 1; s1 and s2 co-buy i1+i4
    for s, items in {"s1": ["i1", "i4"], "s2": ["i1", "i2", "i4"], "s3": ["i1", "i2", "i3"]}.items():
        for k, item in enumerate(items):
            rows.append((s, item, "purchase", CUT - timedelta(days=10 - k), 1))
    return pd.DataFrame(rows, columns=["shopper_id", "item_id", "event", "ts", "quantity"])


def _with_leak(frame: pd.DataFrame) -> pd.DataFrame:
    # at and after the cut: i9 becomes a best-seller and is co-bought with i1 by everyone
    leak = [(f"z{k}", item, "purchase", CUT + timedelta(hours=k), 1) for k in range(20) for item in ("i1", "i9")]
    leak.append(("s4", "i9", "purchase", CUT, 1))  # exactly at the cut counts as after
    return pd.concat([frame, pd.DataFrame(leak, columns=frame.columns)], ignore_index=True)


def test_baselines_use_nothing_at_or_after_the_cut() -> None:
    before = _interactions()
    leaky = _with_leak(before)
    assert ev.popularity_ranking(leaky, CUT) == ev.popularity_ranking(before, CUT) == ["i1", "i2", "i4", "i3"]
    histories = {"c1": ["i1"]}
    clean = ev.copurchase_lists(histories, before, CUT, 3)
    assert ev.copurchase_lists(histories, leaky, CUT, 3) == clean
    assert "i9" not in clean["c1"] and "i1" not in clean["c1"]
    # cosine with i1 (3 buyers): i2 and i4 = 2/sqrt(2*3) (tie, broken by popularity then id), i3 = 1/sqrt(3)
    assert clean["c1"] == ["i2", "i4", "i3"]
    assert ev.popularity_lists(histories, ["i1", "i2", "i4"], 2) == {"c1": ["i2", "i4"]}


def _seed_store(store) -> tuple[list[str], str]:
    items = [CatalogItem(f"i{k}", f"ITEM {k} {'MUG' if k % 2 else 'BAG'}", category=None) for k in range(1, 10)]
    ctxs = [
        Context("ctx1", "s1", CUT, ["i1"], ["i2", "i3", "i4", "i5", "i6"], split="heldout"),
        Context("ctx2", "s2", CUT, ["i2"], ["i1", "i3", "i4", "i5", "i6"], split="heldout"),
        Context("ctx3", "s5", CUT, ["i3"], ["i1", "i2", "i4", "i5", "i6"], split="heldout"),
        Context("ctx_train", "s3", CUT, ["i1"], ["i2"], split="train"),
    ]
    after = pd.DataFrame(
        [("s1", "i5", "purchase", CUT, 2),                      # at the cut: a target
         ("s1", "i6", "purchase", CUT + timedelta(days=3), 1),
         ("s2", "i3", "purchase", CUT + timedelta(days=1), 1),
         ("s2", "i8", "purchase", CUT + timedelta(days=2), -1)],  # a return: not a purchase
        columns=["shopper_id", "item_id", "event", "ts", "quantity"])
    gens = [
        Generation("g1", "ctx1", "pol", "", [ListItem(i, "r") for i in ["i5", "i2", "i3"]], [], True),
        Generation("g2", "ctx2", "pol", "", [ListItem(i, "r") for i in ["i4", "i3", "i3"]], [], False),
        Generation("g3", "ctx3", "pol", "", [ListItem(i, "r") for i in ["i1", "i2", "i4"]], [], True),
    ]
    with store.transaction() as con:
        catalog.insert_items(con, items)
        catalog.insert_interactions_frame(con, pd.concat([_with_leak(_interactions()), after], ignore_index=True))
        contexts.insert_contexts(con, ctxs)
        generations.upsert_policy(con, Policy("pol"))
        generations.insert_generations(con, gens)
    return [c.context_id for c in ctxs], "pol"


def test_store_evaluation_matches_hand_computed_values(store) -> None:
    _seed_store(store)
    truth = ev.load_ground_truth(store, split="heldout", list_length=3)
    assert set(truth.contexts) == {"ctx1", "ctx2", "ctx3"}
    assert truth.future == {"ctx1": {"i5", "i6"}, "ctx2": {"i3"}, "ctx3": set()}
    assert "i9" not in truth.popularity and truth.before["ts"].max() < pd.Timestamp(CUT)
    pol = ev.policy_lists_from_store(store, "pol", list(truth.contexts))
    row = ev.evaluate_lists(pol, truth, samples=200)
    assert row["contexts"] == 3 and row["contexts_with_targets"] == 2
    # ctx1: hit at rank 1 of targets {i5,i6}: NDCG = 1 / (1 + 1/log2 3); ctx2: hit at rank 2 of {i3}
    ndcg1 = 1 / (1 + 1 / math.log2(3))
    ndcg2 = 1 / math.log2(3)
    assert row["hr@3"] == pytest.approx(1.0)
    assert row["ndcg@3"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert row["ndcg_lo"] <= row["ndcg@3"] <= row["ndcg_hi"]
    assert ev.context_ndcg(pol, truth) == pytest.approx({"ctx1": ndcg1, "ctx2": ndcg2})  # ctx3: no target
    assert row["validity"] == pytest.approx(2 / 3)
    # the one invalid item of nine is ctx2's repeated i3
    assert row["item_validity"] == pytest.approx(8 / 9)
    assert row["coverage"] == pytest.approx(len({"i5", "i2", "i3", "i4", "i1"}) / 9)

    table = ev.evaluate_policies(store, ["pol"], settings=_settings(store), split="heldout")
    assert list(table["policy"]) == ["pol", ev.POPULARITY, ev.COPURCHASE, ev.RANDOM_CANDIDATES]
    assert table.iloc[0]["ndcg@5"] == pytest.approx((ndcg1 + ndcg2) / 2 * 1)  # lists shorter than N=5
    assert table.set_index("policy").loc[ev.POPULARITY, "kind"] == "baseline"
    # Five candidates and N = 5: every random list holds all of them, so both targets are always hit.
    rand = table.set_index("policy").loc[ev.RANDOM_CANDIDATES]
    assert rand["kind"] == "baseline" and rand["hr@5"] == pytest.approx(1.0) and rand["item_validity"] == 1.0
    # A held-out shopper no policy wrote a list for: the baselines leave them out too, so that every row of
    # the table (and of a round's own report on the same lists) is over the same shoppers.
    with store.transaction() as con:
        contexts.insert_contexts(con, [Context("ctx4", "s2", CUT - timedelta(days=9, hours=12), ["i1"], ["i2", "i3", "i4"],
                                               split="heldout")])  # an earlier cut: popularity from fewer purchases
    again = ev.evaluate_policies(store, ["pol"], settings=_settings(store), split="heldout")
    assert set(again["contexts"]) == {3}
    pd.testing.assert_frame_equal(again, table)


def test_a_round_evaluates_shoppers_who_bought_again_first(store) -> None:
    """HR and NDCG count only held-out shoppers with purchases after the cut; a round's evaluation lists go
    to those first (id order), then to the others, up to rounds.eval_contexts."""
    _seed_store(store)
    with store.transaction() as con:  # sorts first, and its shopper never comes back
        contexts.insert_contexts(con, [Context("ctx0", "s9", CUT, ["i1"], ["i2", "i3", "i4"], split="heldout")])
    settings = _settings(store)

    def chosen(n: int) -> list[str]:
        return ev.evaluation_context_ids(store, settings.model_copy(
            update={"rounds": settings.rounds.model_copy(update={"eval_contexts": n})}))

    assert chosen(2) == ["ctx1", "ctx2"]  # by id alone: ctx0 and ctx1, one of them unmeasurable
    assert chosen(4) == ["ctx1", "ctx2", "ctx0", "ctx3"]  # then the rest: validity and win rates use them
    assert chosen(10) == chosen(4) and chosen(0) == []


def test_generate_buyers_only_samples_held_out_shoppers_who_bought_again(store, monkeypatch) -> None:
    """`generate --split heldout --buyers-only` adds lists where they count for HR and NDCG, and only once."""
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings

    _seed_store(store)
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(store.path.parent))
    get_settings.cache_clear()
    args = ["generate", "--policy-id", "baseline-popularity", "--split", "heldout", "--buyers-only"]
    try:
        first = CliRunner().invoke(app, [*args, "--contexts", "1"])
        # what is left to sample: the other buyer, not the one that has lists now, not the non-buyer
        assert ev.evaluable_contexts_without_lists(store, _settings(store), "baseline-popularity", 5) == ["ctx2"]
        rest = CliRunner().invoke(app, args)
        again = CliRunner().invoke(app, args)
        misuse = CliRunner().invoke(app, ["generate", "--split", "train", "--buyers-only"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == rest.exit_code == again.exit_code == 0, (first.output, rest.output, again.output)
    with store.transaction() as con:
        sampled = [g.context_id for g in generations.generations_for_policies(con, ["baseline-popularity"])]
    assert sorted(sampled) == ["ctx1", "ctx2"]  # ctx3's shopper bought nothing after the cut
    assert "Nothing to do" in again.output
    assert misuse.exit_code != 0 and "picks held-out contexts" in misuse.output


def test_baselines_never_recommend_what_the_shopper_already_bought(store) -> None:
    """Candidates never hold an item bought before the context, so neither may the baselines: not only
    the history shown (s1's history shows i1, but s1 also bought i4 before the cut)."""
    _seed_store(store)
    truth = ev.load_ground_truth(store, split="heldout", list_length=3)
    assert truth.owned == {"ctx1": {"i1", "i4"}, "ctx2": {"i1", "i2", "i4"}, "ctx3": set()}
    lists = {b.policy_id: b.lists for b in ev.baseline_lists(truth)}
    # by buyers before the cut: i1 3, i2 2, i4 2, i3 1 (no other item was bought before it)
    assert lists[ev.POPULARITY]["ctx1"] == [["i2", "i3"]]
    assert lists[ev.POPULARITY]["ctx2"] == [["i3"]]
    assert lists[ev.POPULARITY]["ctx3"] == [["i1", "i2", "i4"]]  # s5 bought nothing before: i3 is history
    for cid, owned in truth.owned.items():
        assert not owned & set(lists[ev.COPURCHASE][cid][0]), cid
    assert lists[ev.COPURCHASE]["ctx1"][0][0] == "i2"  # co-bought with i1 by s2 and s3
    loose = {b.policy_id: b.lists for b in ev.baseline_lists(truth, exclude_history=False)}
    assert loose[ev.POPULARITY]["ctx1"] == [["i1", "i2", "i4"]]


def _settings(store):
    from rlhf.settings import load_settings

    return load_settings(store={"data_dir": store.path.parent}, rounds={"eval_bootstrap_samples": 200})


def test_round_report_has_win_rates_and_paired_differences(store) -> None:
    _seed_store(store)
    with store.transaction() as con:
        generations.upsert_policy(con, Policy("prev"))
        generations.insert_generations(con, [
            Generation("h1", "ctx1", "prev", "", [ListItem("i2", "Goes with their mug")], [], True),  # ctx1 had i1, a MUG
            Generation("h2", "ctx2", "prev", "", [ListItem("i1", "r")], [], True),
        ])
    truth = ev.load_ground_truth(store, split="heldout", list_length=5)
    policies = [ev.policy_lists_from_store(store, pid, list(truth.contexts)) for pid in ("pol", "prev")]
    scores = {"g1": 2.0, "g2": 0.0, "g3": 1.0, "h1": 1.0, "h2": 0.5}
    report = ev.round_report(policies, truth, "pol", previous_policy_id="prev", zero_shot_policy_id="prev",
                             rm_scores=scores, round_id="r1", samples=200)
    assert report["headline"]["policy"] == "pol" and report["round_id"] == "r1"
    assert report["rm_win_rate"]["mean"] == pytest.approx(0.5) and report["rm_win_rate"]["n"] == 2
    assert report["rm_win_rate_vs_zero_shot"] == report["rm_win_rate"]
    # prev hits nothing on ctx1 or ctx2; pol's NDCG there is worked out in the hand-computed test above
    ndcg1, ndcg2 = 1 / (1 + 1 / math.log2(3)), 1 / math.log2(3)
    diff = report["ndcg_difference"]["prev"]
    assert diff["mean"] == pytest.approx((ndcg1 + ndcg2) / 2) and diff["n"] == 2
    assert diff["lo"] == pytest.approx(min(ndcg1, ndcg2)) and diff["hi"] == pytest.approx(max(ndcg1, ndcg2))
    # ... and minus each baseline's, on the same shoppers: the difference of the table's means
    rows = {r["policy"]: r for r in report["table"]}
    assert set(rows) == {"pol", "prev", ev.POPULARITY, ev.COPURCHASE, ev.RANDOM_CANDIDATES}
    assert set(report["ndcg_difference"]) == {"prev", ev.POPULARITY, ev.COPURCHASE, ev.RANDOM_CANDIDATES}
    for baseline in (ev.POPULARITY, ev.COPURCHASE, ev.RANDOM_CANDIDATES):
        assert report["ndcg_difference"][baseline]["n"] == 2
        assert report["ndcg_difference"][baseline]["mean"] == pytest.approx(
            rows["pol"]["ndcg@5"] - rows[baseline]["ndcg@5"])
    # Reasons, against the other policies only: pol's "r" names nothing; prev's names ctx1's history.
    assert set(report["reasons_difference"]) == {"prev"}
    assert report["reasons_difference"]["prev"]["mean"] == pytest.approx(-0.5)
    assert report["reasons_difference"]["prev"]["n"] == 2
    json.dumps(report, allow_nan=False)  # what the round stores must load back
    # no zero-shot policy named: no win rate against it; no scores: no win rate; a policy without lists:
    # no headline
    parent_only = ev.round_report(policies, truth, "pol", previous_policy_id="prev", rm_scores=scores, samples=50)
    assert "rm_win_rate" in parent_only and "rm_win_rate_vs_zero_shot" not in parent_only
    bare = ev.round_report(policies[1:], truth, "pol", previous_policy_id="prev", samples=50)
    assert bare["headline"] is None and "rm_win_rate" not in bare and "ndcg_difference" not in bare


def test_evaluate_command_prints_the_table(store, monkeypatch) -> None:
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.settings import get_settings

    _seed_store(store)
    with store.transaction() as con:
        generations.upsert_policy(con, Policy("prev"))
        generations.upsert_policy(con, Policy("fresh"))  # registered, with no lists yet
        generations.insert_generations(con, [Generation("h1", "ctx1", "prev", "", [ListItem("i5", "r")], [], True)])
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(store.path.parent))
    monkeypatch.setenv("RECFEEDBACK_ROUNDS__EVAL_BOOTSTRAP_SAMPLES", "100")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["evaluate", "--policy", "pol"])
        paired = CliRunner().invoke(app, ["evaluate", "--policy", "pol", "--policy", "prev", "--no-baselines"])
        missing = CliRunner().invoke(app, ["evaluate", "--policy", "fresh", "--no-baselines"])
        listless = CliRunner().invoke(app, ["evaluate", "--policy", "pol", "--policy", "fresh", "--no-baselines"])
        listless_first = CliRunner().invoke(app, ["evaluate", "--policy", "fresh"])
        unknown = CliRunner().invoke(app, ["evaluate", "--policy", "pol", "--policy", "po1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "NDCG@5" in result.output and "baseline:popularity" in result.output and "pol " in result.output
    # pol's reasons ("r") name nothing: none grounded; the baselines write no reasons.
    assert "reasons grounded [95% CI]" in result.output
    pol_line = next(line for line in result.output.splitlines() if line.startswith("pol "))
    assert pol_line.rstrip().endswith("0.0000 [0.0000, 0.0000]"), pol_line
    assert next(line for line in result.output.splitlines() if line.startswith("baseline:popularity")).rstrip().endswith("-")
    assert missing.exit_code == 1 and "no lists" in missing.output
    # one policy: compared with each baseline, on the shoppers both have lists for
    assert "NDCG@5 pol minus baseline:popularity, paired over" in result.output
    assert "NDCG@5 pol minus baseline:random-candidates, paired over" in result.output
    assert "minus" not in missing.output
    assert listless.exit_code == 0, listless.output  # a policy without lists is said so, not compared as NaN
    assert "fresh has no lists on the heldout contexts" in listless.output and "nan" not in listless.output
    # Listless first policy, with baselines: the baselines' table, a hint, and no NaN comparisons.
    assert listless_first.exit_code == 0, listless_first.output
    assert "baseline:popularity" in listless_first.output and "nan" not in listless_first.output
    assert "--policy-id fresh --split heldout" in listless_first.output
    # A typo is refused by name, with the ids the store knows, not evaluated as a policy without lists.
    assert unknown.exit_code == 1 and isinstance(unknown.exception, SystemExit)
    assert "No policy with id 'po1'" in unknown.output and "fresh, pol, prev" in unknown.output
    # prev lists i5 first on ctx1 (targets i5, i6): NDCG 1/(1 + 1/log2 3), the same as pol's there
    assert paired.exit_code == 0, paired.output
    assert "NDCG@5 pol minus prev, paired over 1 shopper: +0.0000 [+0.0000, +0.0000] (no detectable difference)" \
        in paired.output
    # Reasons are compared between policies only (baselines write none); both write "r", which names nothing.
    assert "Reasons grounded, pol minus prev, paired over 1 shopper: +0.0000 [+0.0000, +0.0000] " \
        "(no detectable difference)" in paired.output
    assert "Reasons grounded" not in result.output


def test_long_metrics_for_charts() -> None:
    table = pd.DataFrame([{"policy": "p", "kind": "llm", "hr@5": 0.5, "hr_lo": 0.4, "hr_hi": 0.6, "ndcg@5": 0.2,
                           "ndcg_lo": 0.1, "ndcg_hi": 0.3, "validity": 1.0, "item_validity": 1.0,
                           "diversity": 0.5, "novelty": 10.0, "coverage": 0.1, "contexts": 3}])
    long = ev.long_metrics(table)
    assert set(long["metric"]) == {"hr@5", "ndcg@5", "validity", "item_validity", "diversity", "novelty", "coverage"}
    assert long.set_index("metric").loc["ndcg@5", "hi"] == 0.3


def test_baselines_are_measured_on_the_contexts_the_policy_covers(store) -> None:
    _seed_store(store)
    truth = ev.load_ground_truth(store, split="heldout", list_length=3)
    partial = ev.PolicyLists("p", {"ctx1": [["i5", "i2", "i3"]]})
    table = ev.evaluation_table([partial], truth, samples=100).set_index("policy")
    assert table.loc[ev.POPULARITY, "contexts"] == table.loc["p", "contexts"] == 1
    assert ev.evaluation_table([], truth, samples=100).set_index("policy").loc[ev.COPURCHASE, "contexts"] == 3


def test_a_policy_gets_the_same_interval_whatever_order_its_lists_arrive_in() -> None:
    """A round's report reads the zero-shot lists in sampling order, the next round's in store order:
    the same lists must give the same row (point estimate AND bootstrap interval) in both."""
    contexts_ = {f"c{k:02d}": Context(f"c{k:02d}", f"s{k}", CUT, [], ["i1", "i2", "i3"]) for k in range(30)}
    future = {c: ({"i1"} if k % 3 == 0 else {"i2"} if k % 3 == 1 else {"i9"}) for k, c in enumerate(contexts_)}
    cats = {"i1": "mugs", "i2": "bags", "i3": "mugs", "i9": "toys"}
    truth = ev.GroundTruth(contexts_, future, set(cats), cats, {}, ["i1", "i2", "i3"], CUT, 2)
    rng = np.random.default_rng(0)
    lists = {c: [list(rng.permutation(["i1", "i2", "i3"]))[:2]] for c in contexts_}
    forward = ev.evaluate_lists(ev.PolicyLists("p", lists), truth, samples=200, seed=1)
    backward = ev.evaluate_lists(ev.PolicyLists("p", dict(reversed(list(lists.items())))), truth, samples=200, seed=1)
    assert forward["ndcg_lo"] < forward["ndcg@2"] < forward["ndcg_hi"]
    assert forward == backward


def test_the_random_candidates_baseline_scores_what_chance_among_the_candidates_scores() -> None:
    # 10 candidates, 2 of them bought later, lists of 3: by symmetry each position holds a bought item
    # with probability 2/10, so E[DCG] = 0.2 * (1 + 1/log2(3) + 1/2) and IDCG = 1 + 1/log2(3);
    # P(hit) = 1 - C(8,3)/C(10,3).
    class Ctx:
        def __init__(self, candidates):
            self.candidates = candidates

    cands = [f"c{k}" for k in range(10)]
    contexts = {"x": Ctx(cands), "y": Ctx(cands), "none": Ctx([])}
    lists = ev.random_candidate_lists(contexts, 3, draws=4000)
    assert set(lists) == {"x", "y"}
    assert all(len(v) == 3 == len(set(v)) and set(v) <= set(cands) for v in lists["x"])
    target = {"c2", "c7"}
    ndcg = np.mean([ev.ndcg_at_n(v, target, 3) for v in lists["x"]])
    hr = np.mean([ev.hit_rate_at_n(v, target, 3) for v in lists["x"]])
    assert ndcg == pytest.approx(0.2 * (1 + 1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)), abs=0.01)
    assert hr == pytest.approx(1 - math.comb(8, 3) / math.comb(10, 3), abs=0.02)
    # Each context draws on its own: the same lists whatever else is evaluated, other lists elsewhere.
    assert ev.random_candidate_lists({"x": contexts["x"]}, 3, draws=4000)["x"] == lists["x"]
    assert lists["x"] != lists["y"]


def test_policy_lists_keep_one_policys_generations_by_context() -> None:
    gens = [
        Generation("g1", "ctx1", "pol", "", [ListItem("i2", "r"), ListItem("i3", "r")], [], True),
        Generation("h1", "ctx1", "prev", "", [ListItem("i9", "r")], [], True),
        Generation("g2", "ctx1", "pol", "", [ListItem("i4", "r")], [], False),
        Generation("g3", "ctx2", "pol", "", [ListItem("i1", "r")], [], True),
    ]
    pol = ev.policy_lists("pol", gens)
    assert pol.lists == {"ctx1": [["i2", "i3"], ["i4"]], "ctx2": [["i1"]]}
    assert pol.valid == {"ctx1": [True, False], "ctx2": [True]}
    assert pol.generation_ids == {"ctx1": ["g1", "g2"], "ctx2": ["g3"]}
    assert pol.reasons == {"ctx1": [["r", "r"], ["r"]], "ctx2": [["r"]]}
    assert ev.policy_lists("other", gens).lists == {}


def test_reasons_count_as_grounded_when_they_name_the_item_or_the_shoppers_history() -> None:
    from rlhf.reasons import content_words, reason_is_grounded

    assert content_words("The best Rolling-Pins for THEIR kitchen!") == {"best", "rolling", "pin", "kitchen"}
    assert content_words("Glass bowls") == {"glass", "bowl"}  # "ss" is not a plural
    # Real SmolLM2 reasons on UCI (BENCHMARKS.md, loop §2p): fluent, and about something else.
    assert not reason_is_grounded("A man who had a dream to be a chef, but never got to make it.",
                                  ["HOME BUILDING BLOCK WORD", "other"])
    assert not reason_is_grounded("A teapot to be served with the mugs from last month.",
                                  ["HANGING HEART ZINC T-LIGHT HOLDER", "candles & lighting", "JUMBO BAG TOYS"])
    assert reason_is_grounded("A teapot to be served with the mugs from last month.",
                              ["Olive Wood Rolling Pin", "Kitchen", "Ceramic Mug"])  # their history holds a mug
    assert reason_is_grounded("Matches their enamel jug", ["ENAMEL FLOWER JUG CREAM"])
    assert not reason_is_grounded("", ["Mug"]) and not reason_is_grounded("For the one they have", ["The One"])


def test_a_copied_product_line_is_not_a_reason() -> None:
    """Real SmolLM2 reasons on UCI (loop.md §2s): many copy a candidate's line from the prompt, their own or a
    neighbour's, and the copy shares the item's words or category; the check reads what follows the copy."""
    from rlhf.reasons import after_copied_line, line_verdicts, reason_is_grounded

    candidates = ["LUNCH BAG BLACK SKULL.", "DOORMAT HEARTS", "DOORMAT SPOTTY HOME SWEET HOME", "PASTEL BLUE PHOTO ALBUM",
                  "CANDLES IN A JAR"]
    history = ["WOODEN PHOTO FRAME CORNICE", "REGENCY CAKESTAND 3 TIER"]
    lines = [
        ("LUNCH BAG BLACK SKULL. (kitchen & dining, price 1.65", "LUNCH BAG BLACK SKULL.", "kitchen & dining"),
        ("DOORMAT HEARTS (home decor, price 7.95)", "DOORMAT SPOTTY HOME SWEET HOME", "home decor"),  # a neighbour's
        ("Pastel blue photo (home decor) for their photo frames", "PASTEL BLUE PHOTO ALBUM", "home decor"),
        ("Candles in the evening", "CANDLES IN A JAR", "candles & lighting"),  # the item's noun is not a copy
        ("The cake that is made from a chocolate cake is special.", "PASTEL BLUE PHOTO ALBUM", "home decor"),
        ("", "CANDLES IN A JAR", "candles & lighting"),
    ]
    assert all(reason_is_grounded(r, [t, c]) for r, t, c in lines[:2])  # what the words alone would say
    assert line_verdicts(lines, history, candidates) == ["copy", "copy", "grounded", "grounded", "off_topic", "off_topic"]
    assert after_copied_line("Pastel blue photo (home decor) for their photo frames", candidates) == "for their photo frames"
    assert after_copied_line("Doormat hearts", candidates) == ""
    assert after_copied_line("Lunch bag for school", candidates) == "Lunch bag for school"  # 2 of 4 words: no copy


def test_a_product_line_under_an_invented_name_is_not_a_reason_either() -> None:
    """Real SmolLM2 reasons on the demo shop (2026-12-07): a line in the prompt's format whose name no
    candidate has, garbled from one or invented, often with a false price. Its name shares the item's words,
    so the words alone would call it grounded."""
    from rlhf.reasons import after_product_line, line_verdicts, reason_is_grounded

    candidates = ["Recycled Plastic Building Blocks", "Felt Card Game", "Boho Glass Loose Leaf Tea Tin",
                  "Scandinavian Glass Teapot", "Scandinavian Cardboard Jigsaw (1000 Pieces)"]
    lines = [
        ("Recycled Plastic Card Game (Toys & Games, price 18.99)", "Recycled Plastic Building Blocks", "Toys & Games"),
        ("Classic Glass Loose Leaf Tea Tin (Coffee & Tea, price 9.99)", "Scandinavian Glass Teapot", "Coffee & Tea"),
        ("Eco-Friendly Eco-Cameline (Puppies, price 12.99", "Boho Glass Loose Leaf Tea Tin", "Coffee & Tea"),
        ("Cardboard Puzzle (1000 Pieces) (toys, price: $9.) for the puzzles they buy", "Felt Card Game", "Toys & Games"),
        ("5.99 Glass Teapot (to match the price of the 5.99", "Scandinavian Glass Teapot", "Coffee & Tea"),
        ("Pairs with the loose leaf tea tins they order every month (Coffee & Tea, price 9.99)",
         "Boho Glass Loose Leaf Tea Tin", "Coffee & Tea"),
        ("Olive Wood Utensils, price 14.99", "Olive Wood Cutting Board", "Kitchen"),  # after a round: no bracket
        ("Felt Stacking Rings, price: $25.99. For the puzzles", "Felt Card Game", "Toys & Games"),
    ]
    assert all(reason_is_grounded(r, [t, c]) for r, t, c in lines[:2])  # what the words alone would say
    assert line_verdicts(lines, ["Jigsaw Puzzle Mat"], candidates) == [
        "copy", "copy", "copy", "grounded", "grounded", "grounded", "copy", "grounded"]
    assert after_product_line(lines[7][0], candidates) == "For the puzzles"
    assert after_product_line(lines[3][0], candidates) == "for the puzzles they buy"
    assert after_product_line(lines[4][0], candidates) == lines[4][0]  # a price in a sentence is no product line
    assert after_product_line(lines[5][0], candidates) == lines[5][0]  # nor details after a sentence
    # A copied candidate line is read as before.
    assert after_product_line("Felt Card Game (Toys & Games, price 7.99) for game nights", candidates) == "for game nights"


def test_a_bare_product_name_is_not_a_reason() -> None:
    """Real SmolLM2 reasons on the demo shop (2026-12-07): a product's name with no details, the item's own or
    one from the shopper's history. Its words are the item's, so the words alone would call it grounded."""
    from rlhf.reasons import is_only_a_name, line_verdicts, reason_is_grounded

    candidates = ["Stoneware Butter Dish", "Rustic Glass Butter Dish", "Linen Salad Servers"]
    history = ["Olive Wood Rolling Pin", "Jigsaw Puzzle Mat"]
    lines = [
        ("A stoneware butter dish.", "Stoneware Butter Dish", "Tableware"),          # its own name
        ("Olive wood rolling pin", "Linen Salad Servers", "Tableware"),              # a name from the history
        ("Butter dishes", "Rustic Glass Butter Dish", "Tableware"),                  # part of its name, plural
        ("For the puzzles", "Linen Salad Servers", "Tableware"),                     # "for": a reason, if a weak one
        ("Rolling pins for baking", "Linen Salad Servers", "Tableware"),
        ("Acacia wooden serving bowl.", "Linen Salad Servers", "Tableware"),         # no title holds every word
    ]
    assert reason_is_grounded(lines[0][0], [lines[0][1]])  # what the words alone would say
    assert line_verdicts(lines, history, candidates) == ["copy", "copy", "copy", "grounded", "grounded", "off_topic"]
    # One title holds every word, a leading article aside; words spread over two titles are no name.
    assert not is_only_a_name("Stoneware salad servers", candidates)
    assert not is_only_a_name("The", candidates) and not is_only_a_name("", candidates)
    long_title = "Set Of Nine Small Round Glass Tea Light Holders"
    assert not is_only_a_name(long_title, [long_title])  # more words than a product line's name has


def test_the_reasons_grounded_share_by_hand() -> None:
    titles = {"i1": "Olive Wood Rolling Pin", "i2": "Ceramic Mug", "i3": "Jute Bag"}
    cats = {"i1": "Kitchen", "i2": "Kitchen", "i3": "Bags"}
    contexts_ = {"c1": Context("c1", "s1", CUT, ["i2"], ["i1", "i3"]), "c2": Context("c2", "s2", CUT, [], ["i1", "i2", "i3"])}
    truth = ev.GroundTruth(contexts_, {"c1": {"i1"}, "c2": set()}, set(titles), cats, titles, ["i2", "i1", "i3"], CUT, 2)
    lists = {"c1": [["i1", "i3"]], "c2": [["i3", "i1"], ["i2"]]}
    reasons = {"c1": [["Goes with olive oil", "Carries the mug they bought"]],            # item; history
               "c2": [["A man who had a dream to be a chef", "Rolling pins for baking"],  # neither; item
                      ["For the kitchen"]]}                                              # category
    row = ev.evaluate_lists(ev.PolicyLists("p", lists, reasons=reasons), truth, samples=200)
    assert row["reasons_grounded"] == pytest.approx((1.0 + 2 / 3) / 2)  # per context first, then the mean
    assert row["reasons_lo"] <= row["reasons_grounded"] <= row["reasons_hi"]
    baseline = ev.evaluate_lists(ev.PolicyLists("b", lists, kind="baseline"), truth, samples=200)
    assert baseline["reasons_grounded"] is None and baseline["reasons_lo"] is None
    # Paired with a policy whose reasons name nothing, over the contexts both have; baselines are skipped.
    blank = ev.PolicyLists("q", lists, reasons={c: [["Lovely."] * len(items) for items in ls] for c, ls in lists.items()})
    by_id = {"p": ev.PolicyLists("p", lists, reasons=reasons), "q": blank,
             "b": ev.PolicyLists("b", lists, kind="baseline")}
    diffs = ev.paired_reason_differences(by_id, truth, ["p", "q", "b"], samples=200)
    assert set(diffs) == {"q"} and diffs["q"].n == 2 and diffs["q"].mean == pytest.approx((1.0 + 2 / 3) / 2)
    assert ev.paired_reason_differences(by_id, truth, ["b", "p"], samples=200) == {}
    long = ev.long_metrics(pd.DataFrame([row]))
    assert long.set_index("metric").loc["reasons_grounded", "hi"] == row["reasons_hi"]
    # c2's rolling pin with a copy of the mug's line (another candidate, the same category): a copy, not a reason.
    copied = ev.PolicyLists("c", {"c2": [["i1", "i2"]]}, reasons={"c2": [["Ceramic Mug (Kitchen, price 3)",
                                                                          "A mug for their tea"]]})
    assert ev.context_reasons_grounded(copied, truth) == {"c2": 0.5}
