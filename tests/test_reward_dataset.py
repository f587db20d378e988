"""Reward-model dataset rules, on a small store built through the storage repositories.

Checked: retracted labels never appear; ties / both-bad follow ``tie_rule``; gold pairs stay out of
training and held-out; the held-out split is by context, deterministic and disjoint; strength maps to
the documented margin; aggregation by majority; the prompt is the policy's rendered chat prompt.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from rlhf.reward.dataset import (
    aggregate_labels,
    build_reward_dataset,
    context_split,
    strength_margin,
)
from storage import queue as queue_repo
from storage.catalog import insert_items
from storage.contexts import insert_contexts
from storage.generations import insert_generations, insert_pairs, upsert_policy
from storage.records import CatalogItem, Context, Generation, Label, ListItem, Pair, Policy
from storage.snapshot import read_snapshot, write_snapshot

KEYWORD = "perfect"
T0 = datetime(2026, 1, 1, 12, 0, 0)


def build_preference_store(
    store,
    *,
    n_contexts: int = 12,
    votes: dict[int, list[tuple[str, str, int | None]]] | None = None,
    gold: dict[int, str] | None = None,
    keyword_side: str | None = "A",
) -> list[str]:
    """One context and one pair per index; gen A or B (``keyword_side``) has the keyword in its reasons.

    ``votes[i]`` lists (annotator, choice, strength) labels for pair i (default: one vote for the keyword
    side, strength 2); with ``keyword_side=None`` the keyword goes to the side of pair i's first vote.
    ``gold[i]`` marks pair i as gold with that expected answer. Returns pair ids.
    """
    items = [CatalogItem(f"I{i:03d}", f"Item number {i}", category="Kitchen", price=float(i)) for i in range(30)]
    policy = Policy("pol_test", base_model="tiny")
    contexts, gens, pairs, labels = [], [], [], []
    for i in range(n_contexts):
        cid = f"ctx{i:03d}"
        cands = [f"I{(i + k) % 30:03d}" for k in range(8)]
        contexts.append(Context(cid, f"s{i}", T0, history=[f"I{(i + 20) % 30:03d}"], candidates=cands))
        pair_votes = (votes or {}).get(i, [("ann1", keyword_side or "A", 2)])
        kw_side = keyword_side or pair_votes[0][1]
        good = f"It is {KEYWORD} for this shopper"
        plain = "It is an item in the shop"
        texts = {}
        for side in ("A", "B"):
            reason = good if side == kw_side else plain
            texts[side] = "\n".join(f"{r + 1}. C0{r + 1} | {reason} {r}." for r in range(3))
            gens.append(Generation(
                f"g{i:03d}{side}", cid, policy.policy_id, texts[side],
                [ListItem(cands[r], f"{reason} {r}.") for r in range(3)], [], True,
            ))
        pairs.append(Pair(f"pair{i:03d}", cid, f"g{i:03d}A", f"g{i:03d}B", "test", 0.0, 3))
        for k, (annotator, choice, strength) in enumerate(pair_votes):
            labels.append(Label(f"lab{i:03d}_{k}", f"pair{i:03d}", annotator, choice, strength=strength,
                                left_side="A", created_at=T0 + timedelta(seconds=i * 10 + k)))
    with store.transaction() as con:
        insert_items(con, items)
        upsert_policy(con, policy)
        insert_contexts(con, contexts)
        insert_generations(con, gens)
        insert_pairs(con, pairs)
        queue_repo.import_labels(con, labels)
        for i, expected in (gold or {}).items():
            queue_repo.set_gold(con, f"pair{i:03d}", expected)
    return [p.pair_id for p in pairs]


def _dataset(store, settings, tmp_path, **rm):
    if rm:
        settings = settings.model_copy(
            update={"reward_model": settings.reward_model.model_copy(update=rm)}
        )
    write_snapshot(store, tmp_path / "snap")
    return build_reward_dataset(read_snapshot(tmp_path / "snap"), settings)


def test_split_is_by_context_deterministic_and_disjoint(store, settings, tmp_path):
    build_preference_store(store, n_contexts=24)
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.3)
    train_ctx, held_ctx = set(ds.train["context_id"]), set(ds.heldout["context_id"])
    assert train_ctx and held_ctx
    assert not train_ctx & held_ctx
    assert len(ds.train) + len(ds.heldout) == 24
    # Deterministic: the split is a pure function of the context id.
    assert all(context_split(c, 0.3) == "heldout" for c in held_ctx)
    assert all(context_split(c, 0.3) == "train" for c in train_ctx)
    # And the fraction is roughly honoured over many ids.
    share = sum(context_split(f"c{i}", 0.2) == "heldout" for i in range(5000)) / 5000
    assert 0.17 < share < 0.23


def test_prompt_is_the_policy_prompt_and_texts_are_raw_generations(store, settings, tmp_path):
    build_preference_store(store, n_contexts=3)
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.0)
    row = ds.train.iloc[0]
    assert "<|im_start|>assistant" in row["prompt"]  # the chat template with the generation prompt
    assert "Candidate products:" in row["prompt"]
    assert KEYWORD in row["chosen"] and KEYWORD not in row["rejected"]
    assert row["chosen"].startswith("1. C01 |")


def test_margin_mapping_from_strength(store, settings, tmp_path):
    assert strength_margin(1, (0.0, 0.5, 1.0)) == 0.0
    assert strength_margin(2, (0.0, 0.5, 1.0)) == 0.5
    assert strength_margin(3, (0.0, 0.5, 1.0)) == 1.0
    assert strength_margin(None, (0.0, 0.5, 1.0)) == 0.0
    votes = {0: [("a", "A", 1)], 1: [("a", "A", 2)], 2: [("a", "B", 3)]}
    build_preference_store(store, n_contexts=3, votes=votes)
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.0, margin_by_strength=(0.1, 0.4, 0.9))
    margins = dict(zip(ds.train["pair_id"], ds.train["margin"]))
    assert margins == {"pair000": 0.1, "pair001": 0.4, "pair002": 0.9}
    assert ds.train.set_index("pair_id").loc["pair002", "chosen_side"] == "B"
    no_margin = _dataset(store, settings, tmp_path / "again", heldout_fraction=0.0, use_margin=False)
    assert "margin" not in no_margin.train


def test_ties_and_both_bad_follow_the_rule(store, settings, tmp_path):
    votes = {
        0: [("a", "tie", None)],
        1: [("a", "both_bad", None)],
        2: [("a", "A", 2), ("b", "B", 2)],  # a draw between A and B is a tie
        3: [("a", "A", 2), ("b", "A", 3), ("c", "B", 1)],
    }
    build_preference_store(store, n_contexts=4, votes=votes)
    dropped = _dataset(store, settings, tmp_path, heldout_fraction=0.0, tie_rule="drop")
    assert list(dropped.train["pair_id"]) == ["pair003"]
    assert dropped.counts["dropped_ties"] == 2 and dropped.counts["dropped_both_bad"] == 1
    majority = dropped.train.iloc[0]
    assert majority["chosen_side"] == "A" and majority["n_labels"] == 3
    assert majority["agreement"] == pytest.approx(2 / 3)
    assert majority["strength"] == 2  # median of the winning votes (2, 3) rounded down

    soft = _dataset(store, settings, tmp_path / "soft", heldout_fraction=0.0, tie_rule="soft")
    ties = soft.train[soft.train["is_tie"]]
    assert sorted(ties["pair_id"]) == ["pair000", "pair000", "pair002", "pair002"]
    assert (ties["margin"] == 0.0).all()
    mirrored = ties[ties["pair_id"] == "pair000"]
    assert set(mirrored["chosen_side"]) == {"A", "B"}
    assert "pair001" not in set(soft.train["pair_id"])  # both bad never trains


def test_aggregation_none_keeps_one_example_per_label(store, settings, tmp_path):
    votes = {0: [("a", "A", 2), ("b", "A", 1), ("c", "B", 3)]}
    build_preference_store(store, n_contexts=1, votes=votes)
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.0, aggregation="none")
    assert sorted(ds.train["chosen_side"]) == ["A", "A", "B"]


def test_pairs_on_heldout_shoppers_never_train_the_reward_model(store, settings, tmp_path):
    """Contexts of the held-out split are the shoppers offline evaluation scores on: their pairs (which
    `pairs make` can queue from a round's evaluation lists) evaluate the reward model, never train it."""
    build_preference_store(store, n_contexts=12)
    trained = set(_dataset(store, settings, tmp_path / "before", heldout_fraction=0.3).train["context_id"])
    shoppers = sorted(trained)[:3]
    with store.transaction() as con:
        con.execute(f"UPDATE contexts SET split = 'heldout' WHERE context_id IN ({', '.join('?' * len(shoppers))})",
                    shoppers)
    ds = _dataset(store, settings, tmp_path / "after", heldout_fraction=0.3)
    assert set(ds.train["context_id"]) == trained - set(shoppers)
    assert set(shoppers) <= set(ds.heldout["context_id"])
    assert ds.counts["pairs_on_heldout_shoppers"] == 3


def test_gold_pairs_are_kept_out_of_training(store, settings, tmp_path):
    build_preference_store(store, n_contexts=10, gold={0: "A", 1: "B"})
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.3)
    used = set(ds.train["pair_id"]) | set(ds.heldout["pair_id"])
    assert "pair000" not in used and "pair001" not in used
    assert sorted(ds.gold["pair_id"]) == ["pair000", "pair001"]
    assert ds.gold.set_index("pair_id").loc["pair001", "chosen_side"] == "B"  # the expected answer, not votes
    assert ds.counts["labels_on_gold_pairs"] == 2


def test_retracted_and_repeated_labels(store, settings, tmp_path):
    build_preference_store(store, n_contexts=2)
    with store.transaction() as con:
        # A re-show of pair000 by the same annotator, then a fresh label on pair001 that is undone.
        queue_repo.import_labels(con, [
            Label("reshow0", "pair000", "ann1", "B", strength=1, left_side="B", is_reshow=True,
                  created_at=T0 + timedelta(minutes=5)),
            Label("oops", "pair001", "ann1", "B", strength=3, left_side="A", created_at=queue_repo.utcnow()),
        ])
        queue_repo.undo_last(con, "ann1", queue_repo.QueuePolicy())
    ds = _dataset(store, settings, tmp_path, heldout_fraction=0.0)
    assert "oops" not in set(ds.labels["label_id"])
    assert "reshow0" not in set(ds.labels["label_id"])  # the first judgement of ann1 on pair000 counts
    assert ds.counts["labels_repeat_judgements_ignored"] == 1
    assert set(ds.train["chosen_side"]) == {"A"}


def test_the_reward_models_targets_are_the_aggregation_the_agreement_page_reports():
    from rlhf.aggregation import aggregate_pairs

    labels = pd.DataFrame({
        "pair_id": ["p", "p", "p", "q", "q", "r", "r", "r"], "annotator_id": ["a", "b", "c", "a", "b", "a", "b", "c"],
        "choice": ["B", "B", "tie", "A", "both_bad", "A", "A", "B"], "strength": [3, 1, None, 2, None, 1, 2, 3],
    })
    out = aggregate_labels(labels, "majority").set_index("pair_id")
    assert out.loc["p", "choice"] == "B" and out.loc["p", "strength"] == 2 and out.loc["p", "agreement"] == 2 / 3
    assert out.loc["q", "choice"] == "A"  # A and both_bad draw, but A beats B in the votes
    assert out.loc["r", "choice"] == "A" and out.loc["r", "strength"] == 1  # the median 1.5, rounded down
    for method in ("majority", "dawid_skene", "mace"):
        expected = aggregate_pairs(labels, method)[["pair_id", "choice", "strength", "n_labels", "agreement"]]
        pd.testing.assert_frame_equal(aggregate_labels(labels, method), expected)
    none = aggregate_labels(labels, "none")
    assert len(none) == len(labels) and (none["agreement"] == 1.0).all()


class _KeywordScorer:
    """Scores a list 1 when its text has the keyword, else 0: right exactly where the votes follow it."""

    def score_pairs(self, prompts, texts_a, texts_b, batch_size=32, progress=False):
        return ([float(KEYWORD in t) for t in texts_a], [float(KEYWORD in t) for t in texts_b])


def test_heldout_accuracy_is_also_reported_on_the_pairs_no_model_chose(store, settings, tmp_path):
    """A round's actively chosen pairs are the hard ones for the next reward model (loop_parts_bench 2c), so
    evaluation reports the accuracy without them too: here the model is wrong on exactly those pairs."""
    from rlhf.active import ACTIVE_STRATEGY, RANDOM_REASON
    from rlhf.reward.evaluate import evaluate_dataset

    build_preference_store(store, n_contexts=12, votes={i: [("ann1", "B", 2)] for i in range(6, 12)})
    chosen = [f"pair{i:03d}" for i in range(6, 12)]
    with store.transaction() as con:
        con.execute(f"UPDATE pairs SET strategy = ?, selection_reason = 'uncertainty' WHERE pair_id IN "
                    f"({', '.join('?' * len(chosen))})", [ACTIVE_STRATEGY, *chosen])
        con.execute("UPDATE pairs SET strategy = ?, selection_reason = ? WHERE pair_id = 'pair005'",
                    [ACTIVE_STRATEGY, RANDOM_REASON])
    ds = _dataset(store, settings, tmp_path, heldout_fraction=1.0)
    assert sorted(ds.pairs.loc[ds.pairs["chosen_by_model"], "pair_id"]) == chosen

    metrics = evaluate_dataset(_KeywordScorer(), ds)
    assert metrics["heldout"]["n"] == 12 and metrics["heldout_accuracy"] == pytest.approx(0.5)
    assert metrics["heldout_unselected"]["n"] == 6 and metrics["heldout_accuracy_unselected"] == pytest.approx(1.0)
