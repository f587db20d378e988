"""The PPO reward, composed from small callables so that tests can swap in a programmatic reward.

The product's reward for one response (a recommendation list written for a context) is

    score = RM(prompt, response)                         (reward-model score at the end, on a unit
                                                          scale: rlhf.ppo.product.rm_normalization)
          + structure_weight · (valid_count + candidate_only + no_duplicates + own_reasons) / 4
          + no_eos_penalty · [the response was cut off by the length cap]

Under constrained decoding (the product's default) the first three terms are ~1 for every list: the
decoder already forces candidate ids, no repeats, N lines, a word in every reason and (with
``generation.forbid_example``) no copy of the prompt's example reason. They are what PPO learns the
format from when decoding is unconstrained. ``own_reasons`` (no reason missing, copied from the
example, or beginning with another candidate's title) also teaches what the decoder does not forbid:
SmolLM2 describes another candidate in 12% of its reasons on the demo shop (generation.md). With
``ppo.own_reasons_count_copies`` it also counts a reason that is a candidate's copied line and nothing
grounded besides (:func:`rlhf.reasons.line_verdicts`' ``copy``), a quarter of SmolLM2's reasons on UCI.

The per-token KL penalty to the reference is NOT part of this: the trainer adds it per token
(rlhf.ppo.core.kl_penalized_rewards). Every term is reported on its own in the metrics.

Collaborators are reached through tiny protocols (``Scorer``, ``ParseFn``) so this module does not
import the reward-model or parsing code; :func:`product_reward` adapts the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RewardBatch:
    """What a reward function sees for a batch of sampled responses."""

    prompts: list[str]
    responses: list[str]  # decoded response text, special tokens removed
    examples: list[Mapping[str, Any]]  # per-prompt metadata, e.g. {"candidates": [...], "context_id": ...}
    ended: list[bool]  # True when the response ended with EOS, False when it hit the length cap
    response_ids: list[list[int]] = field(default_factory=list)  # tokens up to and including EOS


@dataclass(frozen=True)
class RewardOutput:
    """Total score per response, its named parts (unweighted) and, when known, validity per response."""

    scores: list[float]
    parts: dict[str, list[float]]
    valid: list[bool] | None = None


RewardFn = Callable[[RewardBatch], RewardOutput]
TermFn = Callable[[RewardBatch], Sequence[float]]


@dataclass(frozen=True)
class RewardTerm:
    """One named, weighted part of the score."""

    name: str
    fn: TermFn
    weight: float = 1.0


class ComposedReward:
    """score = Σ weight·term(batch) + no_eos_penalty·[no EOS]; validity from an optional callable."""

    def __init__(
        self,
        terms: Sequence[RewardTerm],
        *,
        no_eos_penalty: float = 0.0,
        validity: Callable[[RewardBatch], Sequence[bool]] | None = None,
    ) -> None:
        if not terms:
            raise ValueError("A reward needs at least one term.")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"Reward term names must be unique, got {names}.")
        self.terms = list(terms)
        self.no_eos_penalty = float(no_eos_penalty)
        self.validity = validity

    def __call__(self, batch: RewardBatch) -> RewardOutput:
        n = len(batch.responses)
        totals = [0.0] * n
        parts: dict[str, list[float]] = {}
        for term in self.terms:
            values = [float(v) for v in term.fn(batch)]
            if len(values) != n:
                raise ValueError(f"Reward term {term.name!r} returned {len(values)} values for {n} responses.")
            parts[term.name] = values
            totals = [t + term.weight * v for t, v in zip(totals, values)]
        no_eos = [0.0 if e else 1.0 for e in batch.ended]
        parts["no_eos"] = no_eos
        totals = [t + self.no_eos_penalty * x for t, x in zip(totals, no_eos)]
        valid = [bool(v) for v in self.validity(batch)] if self.validity else None
        return RewardOutput(scores=totals, parts=parts, valid=valid)


# ---------------------------------------------------------------- the product's pieces
class Scorer(Protocol):
    """A batched reward model: one score per (prompt, response)."""

    def __call__(self, prompts: list[str], responses: list[str]) -> Sequence[float]: ...


@dataclass(frozen=True)
class ListStructure:
    """What the structural terms need to know about a parsed recommendation list."""

    n_listed: int  # item lines that named an id (candidate or not, repeated or not)
    n_candidate: int  # of those, ids that are among the context's candidates
    n_duplicate: int  # lines repeating an id listed above
    is_valid: bool  # the parser's verdict: exactly N candidate items with reasons and nothing else
    n_kept: int  # items the parser kept (candidates, first mention, at most N)
    n_bad_reason: int  # of those, items whose reason is missing, the prompt's example, or another item's title
    n_copied_reason: int = 0  # of the others, items whose reason is only a copied candidate line (when counted)


ParseFn = Callable[[str, Mapping[str, Any]], ListStructure]


def structure_scores(s: ListStructure, list_length: int) -> dict[str, float]:
    """The four structural terms of one list, each in [0, 1].

    valid_count: 1 when the list names exactly ``list_length`` items, falling linearly with the gap.
    candidate_only: share of named ids that are candidates (0 for a list that names none).
    no_duplicates: share of named ids that are not repeats (1 for an empty list: nothing repeated).
    own_reasons: share of kept items whose reason was written for them: not missing, not copied from the
    prompt's example, not beginning with another candidate's title and, with
    ``ppo.own_reasons_count_copies``, not a copied candidate line alone (0 for a list that keeps none).
    """
    n = max(1, list_length)
    valid_count = max(0.0, 1.0 - abs(s.n_listed - list_length) / n)
    candidate_only = s.n_candidate / s.n_listed if s.n_listed else 0.0
    no_duplicates = 1.0 - s.n_duplicate / s.n_listed if s.n_listed else 1.0
    own_reasons = 1.0 - (s.n_bad_reason + s.n_copied_reason) / s.n_kept if s.n_kept else 0.0
    return {"valid_count": valid_count, "candidate_only": candidate_only, "no_duplicates": no_duplicates,
            "own_reasons": own_reasons}


class _ParseMemo:
    """Parses a batch once and shares the result between the structural terms.

    It holds the batch it parsed and compares by identity. An ``id()`` alone is not a key: CPython gives a
    new object the id of one just freed, and a new batch then got the old batch's parses.
    """

    def __init__(self, parse_fn: ParseFn) -> None:
        self.parse_fn = parse_fn
        self._batch: RewardBatch | None = None
        self._value: list[ListStructure] = []

    def __call__(self, batch: RewardBatch) -> list[ListStructure]:
        if self._batch is not batch:
            self._value = [self.parse_fn(r, ex) for r, ex in zip(batch.responses, batch.examples)]
            self._batch = batch
        return self._value


def structure_terms(parse_fn: ParseFn, list_length: int, weight: float) -> tuple[list[RewardTerm], Callable]:
    """The structural reward terms (weight/4 each) and a validity callable, from one parser."""
    memo = _ParseMemo(parse_fn)

    def term(name: str) -> TermFn:
        def fn(batch: RewardBatch) -> list[float]:
            return [structure_scores(p, list_length)[name] for p in memo(batch)]

        return fn

    names = ("valid_count", "candidate_only", "no_duplicates", "own_reasons")
    terms = [RewardTerm(n, term(n), weight / len(names)) for n in names]

    def validity(batch: RewardBatch) -> list[bool]:
        return [p.is_valid for p in memo(batch)]

    return terms, validity


def product_reward(
    scorer: Scorer | None,
    parse_fn: ParseFn,
    *,
    list_length: int,
    structure_weight: float,
    no_eos_penalty: float,
) -> ComposedReward:
    """The product's reward: RM score + structural terms + no-EOS penalty (see the module docstring).

    ``scorer`` may be None (no reward model yet): then only the structure and EOS terms count.
    """
    terms, validity = structure_terms(parse_fn, list_length, structure_weight)
    if scorer is not None:
        terms = [RewardTerm("rm", lambda b: scorer(b.prompts, b.responses), 1.0), *terms]
    return ComposedReward(terms, no_eos_penalty=no_eos_penalty, validity=validity)


def token_reward(target_token_id: int, *, position: int = 0, no_eos_penalty: float = 0.0) -> ComposedReward:
    """A programmatic reward: 1 when the response's token at ``position`` is ``target_token_id``.

    Used by the learning test and the benchmark ("reward when a given candidate is listed first");
    validity = the response is non-empty.
    """

    def hit(batch: RewardBatch) -> list[float]:
        return [1.0 if len(ids) > position and ids[position] == target_token_id else 0.0 for ids in batch.response_ids]

    return ComposedReward(
        [RewardTerm("target_first", hit)],
        no_eos_penalty=no_eos_penalty,
        validity=lambda b: [len(ids) > 0 for ids in b.response_ids],
    )
