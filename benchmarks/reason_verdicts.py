"""What the reasons of one list are, by :func:`rlhf.reasons.line_verdicts`, beside the rules before it (before
3b90c85 only a copy of a candidate's line was a product line; before 03fdc41 a bare product name was a
reason): the counts ``generate_bench.py`` and ``reasons_bench.py`` print."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def verdict_counts(lines: Sequence[tuple[str, str | None, str | None]], history: Sequence[str | None],
                   candidates: Sequence[str | None]) -> Counter:
    """For one list's ``lines`` (reason, item title, item category): how many are ``grounded``, ``copy`` (only a
    product line) and ``off_topic``; ``invented`` of the copies are under a name no candidate has and
    ``bare_name`` are only a product's name; ``grounded_copy_rule`` and ``grounded_before_names`` count the
    lines the earlier rules called grounded."""
    from rlhf.reasons import after_copied_line, after_product_line, line_verdicts, reason_is_grounded

    counts: Counter = Counter()
    names = [t for t in candidates if t]
    for (reason, title, category), verdict in zip(lines, line_verdicts(lines, history, candidates)):
        counts[verdict] += 1
        known = names + ([title] if title else [])
        before = after_copied_line(reason or "", known)
        said = after_product_line(reason or "", known)
        counts["invented"] += said != before
        counts["bare_name"] += verdict == "copy" and said == (reason or "")
        counts["grounded_copy_rule"] += reason_is_grounded(before, [title, category, *history])
        counts["grounded_before_names"] += reason_is_grounded(said, [title, category, *history])
    return counts
