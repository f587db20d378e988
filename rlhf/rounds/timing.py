"""How long rounds take, for the people waiting on them: the time left in a running stage at its pace so far,
and how long the last finished round with the same training settings took (the best guess at the next one's
time on this machine, before it starts)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rlhf.rounds.layout import STAGES, UTC, RoundPaths, _dig, _read_json, quick_settings
from rlhf.rounds.reports import _flat_settings, flatten_round_settings
from rlhf.settings import Settings


def stage_seconds_left(progress: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Seconds left in the running stage of ``progress`` (a round's ``progress.json``), at the pace its
    process has kept since it started counting the stage (its first step, or the step a resume began at).

    Counts down between updates, never below 0. None until at least one step has passed in this process,
    or when the progress has no total (a stage that does not count its work).
    """
    step, total, first = progress.get("step"), progress.get("total"), progress.get("pace_step")
    started, updated = _when(progress.get("pace_at")), _when(progress.get("updated_at"))
    if None in (step, total, first, started, updated) or step <= first or step >= total:
        return None
    per_step = (updated - started).total_seconds() / (step - first)
    since_update = ((now or datetime.now(UTC)) - updated).total_seconds()
    return max(0.0, per_step * (total - step) - since_update)


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class PastDuration:
    """A finished round's wall time by stage. The reward model's share grows with the labels, so
    ``usable_labels`` (what that round trained on) is said beside it."""

    round_id: str
    stage_seconds: dict[str, float]
    usable_labels: int | None
    rm_method: str | None = None  # 'probe' or 'lora': which reward model it trained (None: not recorded)

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())


def last_duration_with(settings: Settings, summaries: Sequence[Mapping[str, Any]]) -> PastDuration | None:
    """The latest ``done`` round of ``summaries`` (:func:`rlhf.rounds.list_round_summaries`, oldest first) that
    ran with exactly ``settings``' training settings; None when none did (or none recorded its settings)."""
    return _last_duration(flatten_round_settings(json.loads(json.dumps(settings.to_toml_dict(), default=str))),
                          summaries)


def last_duration_like(round_id: str, summaries: Sequence[Mapping[str, Any]]) -> PastDuration | None:
    """:func:`last_duration_with` the settings round ``round_id`` (one of ``summaries``, e.g. the running one)
    recorded in its folder; None when it recorded none."""
    folder = next((s["folder"] for s in summaries if s["round_id"] == round_id), None)
    wanted = _flat_settings(folder)
    return None if wanted is None else _last_duration(wanted, summaries)


#: Settings that choose what a round starts from, not how much work it does.
_NOT_TIMING = frozenset({"rounds.parent_policy"})


def _same_work(recorded: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether a round that recorded ``recorded`` ran with the ``wanted`` settings, as far as its time goes.
    A setting it did not record (one added after it ran) is not held against it."""
    if recorded is None:
        return False
    return all(recorded[k] == wanted[k] for k in (recorded.keys() & wanted.keys()) - _NOT_TIMING)


def _last_duration(wanted: dict[str, Any], summaries: Sequence[Mapping[str, Any]]) -> PastDuration | None:
    for summary in reversed(summaries):
        if summary["status"] != "done" or not _same_work(_flat_settings(summary["folder"]), wanted):
            continue
        timings = {k: float(v) for k, v in (summary.get("timings") or {}).items() if isinstance(v, (int, float))}
        if not timings:
            continue
        labels = (summary.get("metrics") or {}).get("usable_labels")
        marker = _read_json(RoundPaths(Path(summary["folder"])).marker("reward_model"))
        return PastDuration(summary["round_id"], timings, int(labels) if isinstance(labels, (int, float)) else None,
                            _dig(marker, "card", "training", "method"))
    return None


def reward_model_change(past: PastDuration, settings: Settings, usable_labels: int) -> str | None:
    """A sentence when a round under ``settings`` may train the other kind of reward model than ``past`` did,
    so that its time says little (a probe fits in about a minute; TRL + LoRA can take hours on a CPU); None
    when it will train the same kind. Under 'auto' a round trains LoRA from ``probe_max_examples`` training
    examples, and it has at most as many as usable labels."""
    rm = settings.reward_model
    may_lora = rm.method == "lora" or (rm.method == "auto" and usable_labels >= rm.probe_max_examples)
    will_probe = rm.method == "probe" or (rm.method == "auto" and not may_lora)
    if past.rm_method == "probe" and may_lora:
        return (f"That round's reward model was the probe; with {usable_labels:,} usable labels this one may train "
                f"TRL + LoRA on {rm.backbone} instead (reward_model.method = {rm.method}), which takes far longer.")
    if past.rm_method == "lora" and will_probe:
        return "That round's reward model was TRL + LoRA; this one fits the probe, which takes far less."
    return None


def round_seconds_left(progress: Mapping[str, Any], past: PastDuration, now: datetime | None = None) -> float | None:
    """Seconds left in a running round: its stage's time left (:func:`stage_seconds_left`) plus what the
    stages after it took in ``past``, a finished round with the same settings. None while the stage's own
    time left is unknown."""
    stage, left = progress.get("stage"), stage_seconds_left(progress, now)
    if left is None or stage not in STAGES:
        return None
    return left + sum(past.stage_seconds.get(later, 0.0) for later in STAGES[STAGES.index(stage) + 1:])


#: A quick round of the demo store with SmolLM2-135M on a 2-core CPU, with today's quick sizes (8 pairs, two of
#: them human-evaluation): 10 min 42 s quiet on 2026-12-07 (BENCHMARKS.md, "The loop"; 8-9 min before those sizes).
QUICK_MINUTES_ON_2_CORES = 11


def full_round_without_gpu(settings: Settings) -> str:
    """What a round under ``settings`` asks of a machine without a GPU, against a quick round, in one sentence
    (the Training page and `round run` say it before a Full round starts on such a machine)."""
    full, quick = settings.ppo, quick_settings(settings).ppo
    times = (full.steps * full.batch_size) / max(1, quick.steps * quick.batch_size)
    return (f"This machine has no GPU, and a Full round is sized for one: PPO samples {full.steps} steps of "
            f"{full.batch_size} lists, {times:,.0f}× a Quick round's {quick.steps} of {quick.batch_size}, "
            f"and a Quick round takes about {QUICK_MINUTES_ON_2_CORES} minutes on a 2-core CPU.")


def first_quick_round_text() -> str:
    """What to expect of a Quick round on a machine without a GPU before any round like it has finished here
    (the Training page and `round run --quick` say it; afterwards they quote that round)."""
    return (f"No round with these settings has finished here yet; a Quick round takes about "
            f"{QUICK_MINUTES_ON_2_CORES} minutes on a 2-core CPU with the default model.")


def round_estimate(settings: Settings, summaries: Sequence[Mapping[str, Any]], usable_labels: int, *, quick: bool,
                   gpu: bool) -> list[tuple[str, str]]:
    """What to say before a round under ``settings`` starts, as ``(level, sentence)`` with level ``"info"`` or
    ``"warning"``: how long the last finished round with these settings took, and a warning when this one may
    train the other kind of reward model; else, without a GPU, what a Quick round takes or, for a Full one
    (``quick`` False), how much more it samples. The Training page and `round run` say the same."""
    past = last_duration_with(settings, summaries)
    if past is not None:
        change = reward_model_change(past, settings, usable_labels)
        return [("info", past_duration_text(past))] + ([("warning", change)] if change else [])
    if gpu:
        return []
    return [("info", first_quick_round_text())] if quick else [("warning", full_round_without_gpu(settings))]


def past_duration_text(past: PastDuration) -> str:
    """``past`` in one sentence, with the stages that took a minute or more."""
    stages = ", ".join(f"{stage} {duration_text(sec).removeprefix('about ')}"
                       for stage, sec in past.stage_seconds.items() if sec >= 60)
    labels = f" on {past.usable_labels:,} labels" if past.usable_labels is not None else ""
    return (f"The last round with these settings (`{past.round_id}`{labels}) took {duration_text(past.seconds)}"
            + (f": {stages}." if stages else "."))


def stage_left_text(seconds: float) -> str:
    """The time left in a stage (:func:`stage_seconds_left`), in words; at 0 the stage's next step is due at its
    pace so far and has not come, which "under a minute" would promise again every few seconds."""
    if seconds <= 0:
        return "its next step is taking longer than the ones before"
    return f"{duration_text(seconds)} left in this stage"


def duration_text(seconds: float) -> str:
    """A wait as a person says it: "under a minute", "about 4 min", "about 2 h 10 min"."""
    minutes = round(seconds / 60)
    if seconds < 60:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h" + (f" {rest} min" if rest else "")
