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

- ``rank``: ``1 - (r - 1) / (K - 1)`` for the item shown ``r``-th of ``K`` candidates: the retriever's rank
  under ``contexts.candidate_order = "relevance"`` (default); under ``"interleaved"`` only the slot number,
  which says little there (consecutive slots alternate between sources);
- ``max_similarity`` / ``mean_similarity``: the cosine between the item's description and the closest /
  average earlier purchase, both embedded by the probe's own frozen encoder.

A line whose id is not a candidate, or repeats an earlier line's item, counts as zero in every mean, so
invented or repeated ids pull a list down. Text that is not one of our prompts (imported labels,
benchmark data) gets zeros: the features say nothing where the prompt does not say who the shopper is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rlhf.prompts import prompt_sections

#: Names of the columns :func:`match_features` returns, in order (recorded in a probe's card).
MATCH_FEATURES: tuple[str, ...] = ("rank", "max_similarity", "mean_similarity")

#: The short id a line names: ``3. C07 | reason`` (the parser's grammar, loosely).
_LINE_ID = re.compile(r"^\s*\d+\s*[.)]\s*(C\d+)\b")

#: ``embed(texts) -> [len(texts), d]`` unit-length embeddings, one row per text.
Embed = Callable[[Sequence[str]], np.ndarray]


def listed_ids(response: str) -> list[str]:
    """The short ids the answer's numbered lines name, in order (lines that name none are skipped)."""
    return [m.group(1) for m in (_LINE_ID.match(line) for line in response.splitlines()) if m]


def match_features(prompts: Sequence[str], responses: Sequence[str], embed: Embed) -> np.ndarray:
    """``[n, len(MATCH_FEATURES)]``: each (prompt, answer)'s match features (see the module docstring).

    ``embed`` is called once, on the distinct candidate and history lines of all the prompts.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
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
        if weights:
            out[row] = total / weights
    return out
