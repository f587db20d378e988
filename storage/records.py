"""Typed records that cross layers (storage <-> services <-> UI).

Plain frozen dataclasses: cheap to build from rows, easy to compare in tests, and free of any
database or UI dependency. JSON columns are decoded into Python lists/dicts here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["annotator", "engineer", "manager", "admin"]
ROLES: tuple[str, ...] = ("annotator", "engineer", "manager", "admin")

Choice = Literal["A", "B", "tie", "both_bad"]
CHOICES: tuple[str, ...] = ("A", "B", "tie", "both_bad")

#: Strength of a preference: 1 slightly, 2 clearly, 3 much better. None for tie / both bad.
STRENGTH_NAMES: dict[int, str] = {1: "slightly better", 2: "clearly better", 3: "much better"}

ITEM_FLAGS: tuple[str, ...] = ("irrelevant", "not_in_catalogue", "duplicate", "bad_reason")


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    description: str | None = None
    category: str | None = None
    price: float | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True)
class Interaction:
    shopper_id: str
    item_id: str
    event: str
    ts: datetime
    quantity: int = 1


@dataclass(frozen=True)
class Shopper:
    shopper_id: str
    segment: str | None = None
    attributes: dict[str, Any] | None = None
    hidden_preferences: dict[str, Any] | None = None


@dataclass(frozen=True)
class Context:
    """A shopper at a point in time: what they bought before, and what the policy may recommend."""

    context_id: str
    shopper_id: str
    as_of: datetime
    history: list[str]
    candidates: list[str]
    retrieval: str | None = None
    split: str = "train"


@dataclass(frozen=True)
class Policy:
    policy_id: str
    kind: str = "llm"  # 'llm' or 'baseline'
    base_model: str | None = None
    adapter_path: str | None = None
    parent_id: str | None = None
    round_id: str | None = None
    metrics: dict[str, Any] | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class ListItem:
    """One recommended item with the policy's reason for it."""

    item_id: str
    reason: str


@dataclass(frozen=True)
class Generation:
    generation_id: str
    context_id: str
    policy_id: str
    raw_text: str
    items: list[ListItem]
    problems: list[dict[str, Any]]
    is_valid: bool
    sampling: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    round_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Pair:
    pair_id: str
    context_id: str | None
    gen_a: str | None
    gen_b: str | None
    strategy: str
    priority: float
    overlap_target: int
    status: str = "open"
    is_gold: bool = False
    selection_reason: str | None = None
    round_id: str | None = None
    source: str = "app"
    created_at: datetime | None = None


@dataclass(frozen=True)
class Annotator:
    annotator_id: str
    role: str
    display_name: str | None = None
    active: bool = True
    kind: str = "human"
    created_at: datetime | None = None


@dataclass(frozen=True)
class Assignment:
    """A pair leased to one annotator until ``expires_at``; ``left_gen`` is shown on the left."""

    assignment_id: str
    pair_id: str
    annotator_id: str
    left_gen: str | None
    is_reshow: bool
    reason: str
    status: str
    assigned_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ExcludedAnnotator:
    """An annotator whose labels a manager excluded: how many, by whom and when (the latest exclusion)."""

    annotator_id: str
    labels: int
    excluded_by: str
    excluded_at: datetime


@dataclass(frozen=True)
class Label:
    """One annotator's judgment of one pair. ``choice`` is in the pair's canonical A/B terms."""

    label_id: str
    pair_id: str
    annotator_id: str
    choice: str
    strength: int | None = None
    left_side: str | None = None
    item_flags: dict[str, list[str]] = field(default_factory=dict)
    rationale: str | None = None
    time_ms: int | None = None
    is_reshow: bool = False
    source: str = "app"
    assignment_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class RoundRecord:
    round_id: str
    status: str
    stage: str | None = None
    config: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    policy_id: str | None = None
    parent_policy_id: str | None = None
    reward_model_id: str | None = None
    folder: str | None = None
    pid: int | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class RewardModelRecord:
    rm_id: str
    backbone: str
    path: str
    round_id: str | None = None
    metrics: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    created_at: datetime | None = None


def preference_scale(choice: str, strength: int | None) -> int | None:
    """The 7-point ordinal scale: -3 (A much better) .. 0 (tie) .. +3 (B much better).

    'both_bad' has no place on the scale and returns None.
    """
    if choice == "tie":
        return 0
    if choice == "both_bad":
        return None
    s = int(strength or 1)
    return -s if choice == "A" else s
