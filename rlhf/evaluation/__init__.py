"""Offline evaluation of recommendation lists on held-out contexts, with baselines.

What a list is worth is measured against **everything the shopper bought at or after the context's
as_of**, over the whole catalogue (no sampled negatives: sampled metrics can reverse rankings, Krichene
& Rendle 2020). Per policy:

- ``hr`` / ``ndcg`` — HR@N and NDCG@N (binary relevance, N = the list length), averaged over contexts
  that have at least one later purchase, with percentile-bootstrap 95% intervals over contexts;
- ``validity`` — share of lists the parser found valid; ``item_validity`` — share of listed items that
  are in the catalogue, among the context's candidates and not repeated;
- ``diversity`` — intra-list diversity: 1 − share of item pairs in a list with the same category (or,
  when the catalogue has no categories, 1 − mean Jaccard similarity of the titles' words);
- ``novelty`` — mean popularity rank of recommended items (1 = most popular; higher is more novel);
- ``coverage`` — distinct recommended items / catalogue size;
- reward-model ``win_rate`` of one policy over another, given scores;
- ``paired_difference`` of NDCG@N between two policies on the same contexts (:func:`compare_policies`,
  and in every round report, against the other policies and the baselines): whether a round beat its
  parent, the zero-shot model or popularity is a question about this interval, not about whether the two
  rows' own intervals overlap.

Baselines in the same table, computed only from interactions strictly before the cut: ``popularity``
(most-bought items) and ``co-purchase`` (items bought by the same shoppers as the context's history,
cosine-normalised, back-filled by popularity). The cut for a set of contexts is the *earliest* as_of
among them, so no context's baseline can see anything at or after its own cut. Like the candidates, they
never list an item the shopper bought before the context (``GroundTruth.owned``), not only the history
the prompt shows. A third baseline,
``random-candidates``, draws N of the context's own candidates at random (:data:`RANDOM_DRAWS` lists per
context, averaged): the floor for a policy that chooses among the candidates, which tells whether the
LLM's choice adds anything (on UCI zero-shot SmolLM2 does not: ``benchmarks/results/loop.md`` §2f).

Pure functions work on lists, sets and frames; :func:`load_ground_truth`, :func:`evaluate_policies` and
:func:`compare_policies` read the store through storage functions only; :func:`round_report` is what a
round stores as its evaluation.

The package's modules, one concern each: :mod:`~rlhf.evaluation.metrics` (one list's metrics),
:mod:`~rlhf.evaluation.intervals` (bootstrap intervals, paired differences, win rates, verdicts),
:mod:`~rlhf.evaluation.truth` (the held-out shoppers' later purchases, read once),
:mod:`~rlhf.evaluation.lists` (a policy's lists by context), :mod:`~rlhf.evaluation.baselines`,
:mod:`~rlhf.evaluation.report` (table rows, paired differences, a round's report) and
:mod:`~rlhf.evaluation.stored` (policies in the store). Everything public is importable from here.
"""

from __future__ import annotations

from rlhf.evaluation.baselines import (
    COPURCHASE,
    POPULARITY,
    RANDOM_CANDIDATES,
    RANDOM_DRAWS,
    baseline_lists,
    copurchase_lists,
    popularity_lists,
    popularity_ranking,
    random_candidate_lists,
)
from rlhf.evaluation.intervals import (
    Estimate,
    bootstrap_ci,
    context_mean_scores,
    paired_difference,
    paired_verdict,
    verdict_in_words,
    win_rate,
    zero_shot_verdict,
)
from rlhf.evaluation.lists import (
    PolicyLists,
    policy_lists,
    policy_lists_from_store,
)
from rlhf.evaluation.metrics import (
    catalogue_coverage,
    hit_rate_at_n,
    intra_list_diversity,
    item_validity,
    ndcg_at_n,
    novelty,
)
from rlhf.evaluation.report import (
    baseline_ids,
    context_ndcg,
    context_reasons_grounded,
    evaluate_lists,
    evaluate_with_baselines,
    evaluation_table,
    long_metrics,
    paired_ndcg_differences,
    paired_reason_differences,
    round_report,
)
from rlhf.evaluation.stored import (
    compare_policies,
    evaluate_policies,
)
from rlhf.evaluation.truth import (
    GroundTruth,
    evaluable_contexts_without_lists,
    evaluation_context_ids,
    future_purchases_from_store,
    load_ground_truth,
)

__all__ = [
    "COPURCHASE",
    "POPULARITY",
    "RANDOM_CANDIDATES",
    "RANDOM_DRAWS",
    "Estimate",
    "GroundTruth",
    "PolicyLists",
    "baseline_ids",
    "baseline_lists",
    "bootstrap_ci",
    "catalogue_coverage",
    "compare_policies",
    "context_mean_scores",
    "context_ndcg",
    "context_reasons_grounded",
    "copurchase_lists",
    "evaluable_contexts_without_lists",
    "evaluate_lists",
    "evaluate_policies",
    "evaluate_with_baselines",
    "evaluation_context_ids",
    "evaluation_table",
    "future_purchases_from_store",
    "hit_rate_at_n",
    "intra_list_diversity",
    "item_validity",
    "load_ground_truth",
    "long_metrics",
    "ndcg_at_n",
    "novelty",
    "paired_difference",
    "paired_ndcg_differences",
    "paired_reason_differences",
    "paired_verdict",
    "policy_lists",
    "policy_lists_from_store",
    "popularity_lists",
    "popularity_ranking",
    "random_candidate_lists",
    "round_report",
    "verdict_in_words",
    "win_rate",
    "zero_shot_verdict",
]
