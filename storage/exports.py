"""Labels out of the store, for people and tools outside RecFeedback.

Two read-only queries: every current label with what it refers to (for Parquet), and the
preference rows a TRL reward model needs (chosen / rejected generation text). Retracted labels are
never exported. Building prompts and files is done by :mod:`rlhf.export`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

_CURRENT = "NOT EXISTS (SELECT 1 FROM label_retractions r WHERE r.label_id = l.label_id)"


def labels_frame(con: Any, *, include_reshow: bool = True) -> pd.DataFrame:
    """One row per current label: the label, its pair, gold answer, the two generations' policies and its
    context's split (``heldout``: a shopper offline evaluation scores on)."""
    sql = f"""
        SELECT l.label_id, l.pair_id, l.annotator_id, a.role AS annotator_role, a.kind AS annotator_kind,
               l.choice, l.strength, l.left_side, CAST(l.item_flags AS VARCHAR) AS item_flags, l.rationale,
               l.time_ms, l.is_reshow, l.source, l.created_at,
               p.context_id, p.gen_a, p.gen_b, ga.policy_id AS policy_a, gb.policy_id AS policy_b,
               p.strategy, p.round_id, p.is_gold, g.expected_choice AS gold_choice, c.split AS context_split
        FROM labels l
        JOIN pairs p ON p.pair_id = l.pair_id
        LEFT JOIN contexts c ON c.context_id = p.context_id
        LEFT JOIN generations ga ON ga.generation_id = p.gen_a
        LEFT JOIN generations gb ON gb.generation_id = p.gen_b
        LEFT JOIN gold g ON g.pair_id = l.pair_id
        LEFT JOIN annotators a ON a.annotator_id = l.annotator_id
        WHERE {_CURRENT} {'' if include_reshow else 'AND NOT l.is_reshow'}
        ORDER BY l.created_at, l.label_id"""
    return con.execute(sql).df()


def preference_rows(con: Any) -> pd.DataFrame:
    """Current, first-time (not re-show) A/B labels with both generations' text, for pairwise training, with
    ``is_gold`` and ``context_split`` so that the caller can leave out (and count) gold and held-out labels.

    Ties and 'both bad' carry no preference and are left out.
    """
    sql = f"""
        SELECT l.label_id, l.pair_id, l.annotator_id, l.choice, l.strength, p.context_id,
               ga.raw_text AS text_a, gb.raw_text AS text_b, p.is_gold, c.split AS context_split
        FROM labels l
        JOIN pairs p ON p.pair_id = l.pair_id
        LEFT JOIN contexts c ON c.context_id = p.context_id
        JOIN generations ga ON ga.generation_id = p.gen_a
        JOIN generations gb ON gb.generation_id = p.gen_b
        WHERE {_CURRENT} AND NOT l.is_reshow AND l.choice IN ('A', 'B')
        ORDER BY l.created_at, l.label_id"""
    return con.execute(sql).df()
