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

One more column, off by default (``reward_model.probe_reason_features``), reads the reasons:

- ``reason_fit_after_copy``: the cosine between what the line's reason says after any copied candidate
  line (:func:`rlhf.reasons.after_copied_line`; nothing left: 0) and its item's description, or the closest
  earlier purchase if that is closer, by the same encoder. An annotator who reads the reasons notices one
  about something else at once, and a copied product name is no reason; a mean-pooled embedding of the
  whole answer takes long to learn either. On UCI policy lists, with a crowd that judges reasons and does
  not count a copy, the probe with this column reaches 0.69 reason accuracy at 100 labels against 0.51
  without it (``benchmarks/results/loop.md`` §2s). Off by default because the issue's crowd judges items only.
- ``reason_fit``: the same on the whole reason, copies included; what the column was before §2s, kept so
  that cards trained with it still load. A policy raises it by copying product lines into its reasons: one
  CPU round with it did (lists valid 70% -> 57%, §2r), and against a crowd that does not count copies it
  learns nothing (0.54 at 100 labels, §2s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rlhf.prompts import described_title, prompt_sections
from rlhf.reasons import after_copied_line

#: Names of the columns :func:`match_features` returns by default, in order (recorded in a probe's card).
MATCH_FEATURES: tuple[str, ...] = ("rank", "max_similarity", "mean_similarity")
#: The column that reads the reasons (``reward_model.probe_reason_features``).
REASON_FEATURES: tuple[str, ...] = ("reason_fit_after_copy",)
#: Every column :func:`match_features` knows (``reason_fit``: cards from before §2s).
ALL_FEATURES: tuple[str, ...] = MATCH_FEATURES + ("reason_fit", "reason_fit_after_copy")
#: What each reason column reads of a reason: all of it, or what follows a copied candidate line.
_REASON_READS: dict[str, bool] = {"reason_fit": False, "reason_fit_after_copy": True}

#: The short id a line names and its reason: ``3. C07 | reason`` (the parser's grammar, loosely).
_LINE_ID = re.compile(r"^\s*\d+\s*[.)]\s*(C\d+)\b\s*(?:\|\s*)?(.*)$")

#: ``embed(texts) -> [len(texts), d]`` unit-length embeddings, one row per text.
Embed = Callable[[Sequence[str]], np.ndarray]


def listed_ids(response: str) -> list[str]:
    """The short ids the answer's numbered lines name, in order (lines that name none are skipped)."""
    return [short for short, _ in _listed_lines(response)]


def _listed_lines(response: str) -> list[tuple[str, str]]:
    """(short id, reason) of the answer's numbered lines, in order."""
    return [(m.group(1), m.group(2).strip()) for m in (_LINE_ID.match(line) for line in response.splitlines()) if m]


def match_features(
    prompts: Sequence[str],
    responses: Sequence[str],
    embed: Embed,
    *,
    columns: Sequence[str] = MATCH_FEATURES,
    embed_reasons: Embed | None = None,
) -> np.ndarray:
    """``[n, len(columns)]``: each (prompt, answer)'s match features (see the module docstring).

    ``embed`` is called once, on the distinct candidate and history lines of all the prompts;
    ``embed_reasons`` (default ``embed``) once on the answers' reasons when a reason column is asked for:
    reasons are new in every PPO batch, so a caller that caches ``embed`` can keep them out of its cache.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    unknown = [c for c in columns if c not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"Unknown match features {unknown}; known: {', '.join(ALL_FEATURES)}.")
    out = np.zeros((len(prompts), len(ALL_FEATURES)), dtype=np.float32)
    sections = {p: prompt_sections(p) if p else None for p in set(prompts)}
    lines = sorted({t for s in sections.values() if s for t in (*s.history, *s.candidates.values())})
    vectors = dict(zip(lines, np.asarray(embed(lines), dtype=np.float32))) if lines else {}
    listed = [_listed_lines(r) for r in responses]
    fit_columns = [c for c in _REASON_READS if c in columns]
    read: dict[tuple[str, str, str], str] = {}  # (column, prompt, reason) -> the text that column embeds
    for rows, p in zip(listed, prompts):
        titles = [described_title(line) for line in sections[p].candidates.values()] if sections[p] else []
        for c in fit_columns if titles else ():
            for _, reason in rows:
                read[c, p, reason] = after_copied_line(reason, titles) if _REASON_READS[c] else reason
    said = sorted({text for text in read.values() if text})
    reasons = dict(zip(said, np.asarray((embed_reasons or embed)(said), dtype=np.float32))) if said else {}
    for row, (prompt, lines_said) in enumerate(zip(prompts, listed)):
        s = sections[prompt]
        if s is None:
            continue
        rank = {short: r for r, short in enumerate(s.candidates)}
        k = len(rank)
        history = np.array([vectors[h] for h in s.history]) if s.history else None
        total = np.zeros(len(ALL_FEATURES))
        weights = 0.0
        seen: set[str] = set()
        for i, (short, reason) in enumerate(lines_said):
            w = 1.0 / math.log2(i + 2)
            weights += w
            if short not in rank or short in seen:
                continue
            seen.add(short)
            item = vectors[s.candidates[short]]
            total[0] += w * (1.0 - rank[short] / max(1, k - 1))
            if history is not None:
                sims = history @ item
                total[1] += w * float(sims.max())
                total[2] += w * float(sims.mean())
            for c in fit_columns:
                text = read.get((c, prompt, reason))
                if text in reasons:
                    fit = float(reasons[text] @ item)
                    if history is not None:
                        fit = max(fit, float((history @ reasons[text]).max()))
                    total[ALL_FEATURES.index(c)] += w * fit
        if weights:
            out[row] = total / weights
    return out[:, [ALL_FEATURES.index(c) for c in columns]]
