"""Match features: how well a written list fits its shopper, read from the prompt and the answer.

Why they exist: the probe (:mod:`rlhf.reward.probe`) embeds the answer text alone, so it can only learn
what is good for everyone; the demo shop's truth (and a real shopper's) is personal. Two facts an
annotator reads off the page are cheap to compute and carry most of that: where each listed item sat in
the retriever's ranking, and how close it is to what the shopper bought before. On the demo shop three
such numbers alone reach a held-out accuracy with 100 labels that the answer embedding does not reach
with 3,000 (``benchmarks/results/loop.md`` §2k).

For an answer whose lines name candidates ``C07``, ``C02``, ... each line ``i`` (0-based) gets the
weight ``1 / log2(i + 2)`` (the DCG discount the utility uses), and the features are weighted MEANS over
the lines, so that writing more lines buys nothing:

- ``rank``: ``1 - (r - 1) / (K - 1)`` for the item the retriever ranked ``r``-th of ``K`` candidates;
- ``max_similarity`` / ``mean_similarity``: the cosine between the item's description and the closest /
  average earlier purchase, both embedded by the probe's own frozen encoder;
- ``attribute_overlap``: the share of the item's word-valued catalogue attributes in the prompt
  (``color Navy``, ``material Oak``: ``contexts.item_attributes``) whose value one of the earlier
  purchases has too. A sentence embedding blurs such a detail into the whole line; a shopper who bought
  navy twice is told apart from one who never did by counting. Numbers (``rating 4.5``) are not compared:
  whether more is better depends on the attribute. Items without such attributes count as zero.

A line whose id is not a candidate, or repeats an earlier line's item, counts as zero in every mean, so
invented or repeated ids pull a list down. Text that is not one of our prompts (imported labels,
benchmark data) gets zeros: the features say nothing where the prompt does not say who the shopper is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rlhf.prompts import description_attributes, prompt_sections

#: Names of the columns :func:`match_features` returns by default, in order (recorded in a probe's card;
#: a probe fitted before ``attribute_overlap`` existed keeps the first three).
MATCH_FEATURES: tuple[str, ...] = ("rank", "max_similarity", "mean_similarity", "attribute_overlap")

#: The short id a line names: ``3. C07 | reason`` (the parser's grammar, loosely).
_LINE_ID = re.compile(r"^\s*\d+\s*[.)]\s*(C\d+)\b")

#: ``embed(texts) -> [len(texts), d]`` unit-length embeddings, one row per text.
Embed = Callable[[Sequence[str]], np.ndarray]


def listed_ids(response: str) -> list[str]:
    """The short ids the answer's numbered lines name, in order (lines that name none are skipped)."""
    return [m.group(1) for m in (_LINE_ID.match(line) for line in response.splitlines()) if m]


def match_features(
    prompts: Sequence[str], responses: Sequence[str], embed: Embed, names: Sequence[str] = MATCH_FEATURES
) -> np.ndarray:
    """``[n, len(names)]``: each (prompt, answer)'s match features (see the module docstring), the
    columns in the order of ``names`` (a subset of :data:`MATCH_FEATURES`).

    ``embed`` is called once, on the distinct candidate and history lines of all the prompts.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    if unknown := [n for n in names if n not in MATCH_FEATURES]:
        raise ValueError(f"Unknown match features {unknown}; known: {MATCH_FEATURES}.")
    out = np.zeros((len(prompts), len(MATCH_FEATURES)), dtype=np.float32)
    sections = {p: prompt_sections(p) if p else None for p in set(prompts)}
    lines = sorted({t for s in sections.values() if s for t in (*s.history, *s.candidates.values())})
    vectors = dict(zip(lines, np.asarray(embed(lines), dtype=np.float32))) if lines else {}
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        s = sections[prompt]
        if s is None:
            continue
        rank = {short: r for r, short in enumerate(s.candidates)}
        k = len(rank)
        history = np.array([vectors[h] for h in s.history]) if s.history else None
        bought: dict[str, set[str]] = {}
        for h in s.history:
            for key, value in _words(description_attributes(h)).items():
                bought.setdefault(key, set()).add(value)
        total = np.zeros(len(MATCH_FEATURES))
        weights = 0.0
        seen: set[str] = set()
        for i, short in enumerate(listed_ids(response)):
            w = 1.0 / math.log2(i + 2)
            weights += w
            if short not in rank or short in seen:
                continue
            seen.add(short)
            total[0] += w * (1.0 - rank[short] / max(1, k - 1))
            if history is not None:
                sims = history @ vectors[s.candidates[short]]
                total[1] += w * float(sims.max())
                total[2] += w * float(sims.mean())
            attrs = _words(description_attributes(s.candidates[short]))
            if attrs:
                total[3] += w * sum(v in bought.get(k, ()) for k, v in attrs.items()) / len(attrs)
        if weights:
            out[row] = total / weights
    return out[:, [MATCH_FEATURES.index(n) for n in names]]


def _words(attributes: dict[str, str]) -> dict[str, str]:
    """The attributes whose value is a word, not a number (case-folded)."""
    out = {}
    for key, value in attributes.items():
        try:
            float(value)
        except ValueError:
            out[key] = value.casefold()
    return out
