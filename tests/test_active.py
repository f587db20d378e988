"""Active selection: shares, what each strategy prefers, determinism, and the random slice."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rlhf.active import (
    CandidatePair,
    SelectionShares,
    bootstrap_scores,
    candidate_pairs,
    pair_statistics,
    round_candidate_pairs,
    select_pairs,
    strategy_quotas,
)
from rlhf.settings import load_settings


def _pool(n_contexts: int = 40, gens_per_context: int = 4, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    by_context = {f"c{c:03d}": [f"g{c:03d}_{j}" for j in range(gens_per_context)] for c in range(n_contexts)}
    gen_ids = [g for ids in by_context.values() for g in ids]
    base = rng.normal(0, 2, len(gen_ids))
    scores = base + rng.normal(0, 0.7, (k, len(gen_ids)))
    return candidate_pairs(by_context), scores, gen_ids


def test_quotas_follow_the_settings_shares_and_sum_to_n() -> None:
    shares = SelectionShares.from_settings(load_settings().rounds)
    quotas = strategy_quotas(200, shares)
    assert sum(quotas.values()) == 200
    assert quotas == {"uncertainty": 100, "disagreement": 40, "coverage": 30, "random": 30}
    assert sum(strategy_quotas(7, shares).values()) == 7


def test_selection_mix_matches_shares_and_pairs_are_distinct() -> None:
    candidates, scores, gen_ids = _pool()
    chosen = select_pairs(candidates, scores, gen_ids, 100, seed=3)
    assert len(chosen) == 100
    reasons = Counter(p.selection_reason for p in chosen)
    assert reasons == {"uncertainty": 50, "disagreement": 20, "coverage": 15, "random": 15}
    keys = {(p.gen_a, p.gen_b) for p in chosen}
    assert len(keys) == 100
    priorities = [p.priority for p in chosen]
    assert priorities == sorted(priorities, reverse=True) and 0 < min(priorities) and max(priorities) == 1.0
    # strategies are interleaved: the first 20 served already hold every kind
    assert {p.selection_reason for p in chosen[:20]} == {"uncertainty", "disagreement", "coverage", "random"}


def test_selection_is_deterministic_given_the_seed_and_random_slice_changes_with_it() -> None:
    candidates, scores, gen_ids = _pool()
    a = select_pairs(candidates, scores, gen_ids, 60, seed=11)
    b = select_pairs(candidates, scores, gen_ids, 60, seed=11)
    c = select_pairs(candidates, scores, gen_ids, 60, seed=12)
    assert a == b
    rand = lambda sel: {(p.gen_a, p.gen_b) for p in sel if p.selection_reason == "random"}
    assert rand(a) != rand(c)


def test_uncertainty_picks_the_smallest_gaps() -> None:
    candidates, scores, gen_ids = _pool(k=1)
    stats = pair_statistics(candidates, scores, gen_ids)
    shares = SelectionShares(uncertainty=1, disagreement=0, coverage=0, random=0)
    chosen = select_pairs(candidates, scores, gen_ids, 20, shares=shares, seed=0)
    picked_gaps = sorted(abs(p.stats["mean_gap"]) for p in chosen)
    smallest = sorted(np.abs(stats["mean_gap"]))[:20]
    assert np.allclose(picked_gaps, smallest)
    assert all(p.selection_reason == "uncertainty" for p in chosen)


def test_disagreement_prefers_pairs_whose_members_disagree_on_the_sign() -> None:
    gen_ids = ["a", "b", "c", "d", "e", "f"]
    # pair (a,b): members agree A>B clearly; (c,d): members split on the sign; (e,f): agree, tiny gap.
    scores = np.array([[2.0, 0.0, 1.0, 0.0, 0.1, 0.0],
                       [2.1, 0.0, -1.0, 0.0, 0.1, 0.0],
                       [1.9, 0.0, 0.9, 0.0, 0.1, 0.0]])
    cands = [CandidatePair("x", "a", "b"), CandidatePair("y", "c", "d"), CandidatePair("z", "e", "f")]
    shares = SelectionShares(uncertainty=0, disagreement=1, coverage=0, random=0)
    chosen = select_pairs(cands, scores, gen_ids, 1, shares=shares)
    assert (chosen[0].gen_a, chosen[0].gen_b, chosen[0].selection_reason) == ("c", "d", "disagreement")
    # With one reward model there is no disagreement signal: the quota goes to uncertainty.
    single = select_pairs(cands, scores[:1], gen_ids, 1, shares=shares)
    assert single[0].selection_reason == "uncertainty" and single[0].gen_a == "e"


def test_disagreement_ranks_confident_disagreement_above_a_shared_coin_flip() -> None:
    gen_ids = ["a", "b", "c", "d"]
    # (a,b): two members each say "slightly A", two "slightly B": all call it nearly a coin flip.
    # (c,d): three members are sure A wins, one is sure B wins: a label settles which of them is right.
    scores = np.array([[0.3, 0.0, 4.0, 0.0], [-0.3, 0.0, 4.0, 0.0], [0.3, 0.0, 4.0, 0.0], [-0.3, 0.0, -4.0, 0.0]])
    cands = [CandidatePair("x", "a", "b"), CandidatePair("y", "c", "d")]
    stats = pair_statistics(cands, scores, gen_ids)
    assert stats["minority"][0] > stats["minority"][1]  # a sign count alone would pick the coin flip
    assert stats["bald"][1] > 10 * stats["bald"][0] > 0
    assert stats["bald"] == pytest.approx([0.0111, 0.4819], abs=1e-3)  # H(mean p) - mean H(p_k), by hand
    shares = SelectionShares(uncertainty=0, disagreement=1, coverage=0, random=0)
    assert select_pairs(cands, scores, gen_ids, 1, shares=shares)[0].gen_a == "c"


def test_coverage_serves_the_least_labelled_contexts_first() -> None:
    candidates, scores, gen_ids = _pool(n_contexts=10)
    labelled = {f"c{c:03d}": 10 for c in range(10)}
    labelled["c004"] = 0
    labelled["c007"] = 1
    shares = SelectionShares(uncertainty=0, disagreement=0, coverage=1, random=0)
    chosen = select_pairs(candidates, scores, gen_ids, 3, shares=shares, labelled_per_context=labelled)
    assert [p.context_id for p in chosen].count("c004") == 2
    assert [p.context_id for p in chosen].count("c007") == 1


def test_random_slice_is_uniform_over_the_pool() -> None:
    candidates, scores, gen_ids = _pool(n_contexts=20, gens_per_context=3)
    stats = pair_statistics(candidates, scores, gen_ids)
    # Over many seeds the random slice's mean |gap| matches the pool's (it is not tilted to small gaps).
    gaps = []
    for seed in range(40):
        sel = select_pairs(candidates, scores, gen_ids, 20, seed=seed)
        gaps += [abs(p.stats["mean_gap"]) for p in sel if p.selection_reason == "random"]
    assert abs(np.mean(gaps) - np.abs(stats["mean_gap"]).mean()) < 0.35
    unc = [abs(p.stats["mean_gap"]) for p in sel if p.selection_reason == "uncertainty"]
    assert np.mean(unc) < np.abs(stats["mean_gap"]).mean()


def test_asking_for_more_than_the_pool_returns_each_candidate_once() -> None:
    candidates, scores, gen_ids = _pool(n_contexts=3, gens_per_context=3)
    duplicated = candidates + [CandidatePair(c.context_id, c.gen_b, c.gen_a) for c in candidates]
    chosen = select_pairs(duplicated, scores, gen_ids, 100)
    assert len(chosen) == len(candidates) == 9
    queued = {(candidates[0].gen_b, candidates[0].gen_a)}
    again = select_pairs(duplicated, scores, gen_ids, 100, exclude=queued)
    assert len(again) == 8 and (candidates[0].gen_a, candidates[0].gen_b) not in {(p.gen_a, p.gen_b) for p in again}


def test_bad_inputs_raise_clear_errors() -> None:
    cands = [CandidatePair("x", "a", "b")]
    with pytest.raises(ValueError, match="No scores"):
        select_pairs(cands, np.zeros((2, 1)), ["a"], 1)
    with pytest.raises(ValueError, match="NaN"):
        select_pairs(cands, np.array([[np.nan, 0.0]]), ["a", "b"], 1)
    with pytest.raises(ValueError, match="share"):
        select_pairs(cands, np.zeros((1, 2)), ["a", "b"], 1, shares=SelectionShares(0, 0, 0, 0))


def test_bootstrap_scores_stacks_scorers_and_checks_their_output() -> None:
    prompts, responses = ["p1", "p2", "p3"], ["r1", "r22", "r333"]
    scorers = [lambda p, r: np.array([len(x) for x in r], dtype=float),
               lambda p, r: np.array([2.0 * len(x) for x in r])]
    out = bootstrap_scores(scorers, prompts, responses)
    assert out.shape == (2, 3) and out[1, 2] == 8.0
    with pytest.raises(ValueError, match="returned 1 scores"):
        bootstrap_scores([lambda p, r: np.zeros(1)], prompts, responses)


def test_pair_records_keep_reason_and_lift_priority() -> None:
    candidates, scores, gen_ids = _pool(n_contexts=5)
    chosen = select_pairs(candidates, scores, gen_ids, 6, seed=0)
    from rlhf.active import to_pair_records

    rows = to_pair_records(chosen, overlap_target=3, round_id="r1", priority_offset=10.0)
    assert [r.selection_reason for r in rows] == [p.selection_reason for p in chosen]
    assert all(r.priority > 10 and r.round_id == "r1" and r.overlap_target == 3 for r in rows)
    assert len({r.pair_id for r in rows}) == 6


def test_stack_score_frames_aligns_models_on_common_generations() -> None:
    import pandas as pd

    from rlhf.active import stack_score_frames

    f1 = pd.DataFrame({"generation_id": ["b", "a", "c"], "reward": [2.0, 1.0, 3.0]})
    f2 = pd.DataFrame({"generation_id": ["a", "b"], "reward": [10.0, 20.0]})
    scores, ids = stack_score_frames([f1, f2])
    assert ids == ["a", "b"] and scores.tolist() == [[1.0, 2.0], [10.0, 20.0]]


def test_a_rounds_candidates_pair_each_new_list_with_every_other_different_list_of_its_context() -> None:
    from storage.records import Generation, ListItem

    def gen(gid: str, context: str, policy: str, items: list[str]) -> Generation:
        return Generation(gid, context, policy, f"{policy}: " + ", ".join(items),
                          [ListItem(i, "because") for i in items], [], True)

    parent = [gen(f"g0_{c:02d}", f"c{c:02d}", "parent", ["I1", "I2"]) for c in range(30)]
    new = [gen(f"g1_{c:02d}_{k}", f"c{c:02d}", "new", [f"I{3 + k}", "I1"]) for c in range(30) for k in range(2)]
    same = gen("g1_00_9", "c00", "new", ["I3", "I1"])  # the same list as g1_00_0: nothing to compare
    other = gen("g0_00_x", "c00", "parent", ["I9", "I1"])  # two parent lists: not the new policy's pair
    everything = parent + new + [same, other]
    pool = round_candidate_pairs(everything, "new")

    by_id = {g.generation_id: g for g in everything}
    keys = [frozenset((p.gen_a, p.gen_b)) for p in pool]
    # Per context 2 new-vs-parent pairs and 1 new-vs-new; c00 has 3 new lists (two alike) and 2 parent lists:
    # 6 new-vs-parent and 2 new-vs-new.
    assert len(keys) == len(set(keys)) == 29 * 3 + 8
    assert frozenset(("g1_00_0", "g1_00_9")) not in keys and frozenset(("g0_00", "g0_00_x")) not in keys
    assert all(by_id[p.gen_a].context_id == by_id[p.gen_b].context_id == p.context_id for p in pool)
    assert all("new" in (by_id[p.gen_a].policy_id, by_id[p.gen_b].policy_id) for p in pool)
    # The same pool whatever order the lists come in, so a round re-run from its snapshot selects alike.
    assert round_candidate_pairs(list(reversed(everything)), "new") == pool
