"""Reading rounds for people: status, summaries, curves, the held-out report, verdicts, the model registry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.rounds.layout import RoundPaths, _dig, _read_json, _read_jsonl, completed_stages, read_progress
from rlhf.rounds.state import _get_row, effective_status
from storage import NotFoundError, Store


# ----------------------------------------------------------------------------------- reading rounds
def round_status(store: Store, round_id: str) -> dict[str, Any]:
    """A round's row plus what only its folder knows: effective status, finished stages, live progress."""
    row = _get_row(store, round_id)
    folder = Path(row.folder) if row.folder else None
    return {
        "round_id": row.round_id, "status": effective_status(row), "stored_status": row.status, "stage": row.stage,
        "pid": row.pid, "error": row.error, "policy_id": row.policy_id, "parent_policy_id": row.parent_policy_id,
        "reward_model_id": row.reward_model_id, "folder": row.folder, "created_at": row.created_at,
        "finished_at": row.finished_at, "timings": row.timings or {}, "metrics": row.metrics or {},
        "completed_stages": completed_stages(folder) if folder else [],
        "progress": read_progress(folder) if folder else {},
    }


def list_round_summaries(store: Store) -> list[dict[str, Any]]:
    """Every round (oldest first) with its effective status and headline metrics."""
    from storage.rounds import list_rounds

    with store.transaction() as con:
        rows = list_rounds(con)
    return [{"round_id": r.round_id, "status": effective_status(r), "stage": r.stage, "created_at": r.created_at,
             "finished_at": r.finished_at, "policy_id": r.policy_id, "parent_policy_id": r.parent_policy_id,
             "reward_model_id": r.reward_model_id,
             "error": r.error, "metrics": r.metrics or {}, "timings": r.timings or {}, "folder": r.folder}
            for r in rows]


#: The settings sections that decide what a round trains and samples (not the store's, app's or demo's).
ROUND_SETTING_SECTIONS = ("model", "generation", "reward_model", "ppo", "rounds")
#: A setting's value in a round whose settings.json lacks it (a setting added after that round ran).
NOT_RECORDED = "(not recorded)"


@dataclass(frozen=True)
class SettingValue:
    """One setting a round ran with (``setting`` dotted, e.g. ``ppo.steps``), beside the round before's.

    ``value`` / ``previous`` are :data:`NOT_RECORDED` where that round's settings lack the setting (a round
    run before it existed); ``changed`` is True only when both rounds recorded their settings and these differ.
    """

    setting: str
    value: Any
    previous: Any
    changed: bool

    def said(self) -> str:
        """The change as one phrase: ``ppo.steps 8 -> 64``."""
        return f"{self.setting} {setting_text(self.previous)} -> {setting_text(self.value)}"


def setting_text(value: Any) -> str:
    """A recorded setting as a reader writes it in a TOML file or an environment variable ("none": unset)."""
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class RoundSettings:
    """What a round ran with and what differed from the round started before it: the first question an
    engineer asks when two rounds' results differ."""

    round_id: str
    previous_round_id: str | None  # None: the first round
    recorded: bool  # False: the round's folder has no readable settings.json
    previous_recorded: bool
    values: list[SettingValue]

    @property
    def changes(self) -> list[SettingValue]:
        """The settings that differ from the round before, in dotted order."""
        return [v for v in self.values if v.changed]


def _flat_settings(folder: str | None) -> dict[str, Any] | None:
    """A round folder's recorded settings of :data:`ROUND_SETTING_SECTIONS` as ``{"ppo.steps": 8, ...}``."""
    data = _read_json(RoundPaths(Path(folder)).settings) if folder else None
    return flatten_round_settings(data) if isinstance(data, Mapping) else None


def flatten_round_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as a round folder's settings.json holds them, restricted to :data:`ROUND_SETTING_SECTIONS` and
    flattened to ``{"ppo.steps": 8, ...}``: what tells two rounds' training apart."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if prefix == "rounds.quick":  # the recipe `--quick` applies, not what this round ran with
            return
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            flat[prefix] = value

    for section in ROUND_SETTING_SECTIONS:
        walk(section, data.get(section, {}))
    return flat


def round_settings(store: Store, round_id: str, summaries: list[dict[str, Any]] | None = None) -> RoundSettings:
    """The training settings ``round_id`` ran with, each beside the value of the round created just before it
    (rounds started with other sizes or methods are otherwise told apart only by their folders' files);
    ``summaries`` are :func:`list_round_summaries` when the caller has read them already. Raises
    :class:`storage.NotFoundError` for an unknown round."""
    rounds = list_round_summaries(store) if summaries is None else summaries
    index = next((i for i, r in enumerate(rounds) if r["round_id"] == round_id), None)
    if index is None:
        raise NotFoundError(f"No round with id {round_id!r}.")
    previous = rounds[index - 1] if index > 0 else None
    return _compare(round_id, _flat_settings(rounds[index]["folder"]), previous and previous["round_id"],
                    _flat_settings(previous["folder"]) if previous else None)


def _compare(round_id: str, mine: dict[str, Any] | None, previous_round_id: str | None,
             before: dict[str, Any] | None) -> RoundSettings:
    compared = mine is not None and before is not None
    values = []
    for key in sorted({*(mine or {}), *(before or {})}):
        value, previous = (mine or {}).get(key, NOT_RECORDED), (before or {}).get(key, NOT_RECORDED)
        values.append(SettingValue(setting=key, value=value, previous=previous,
                                   changed=compared and value != previous))
    return RoundSettings(round_id=round_id, previous_round_id=previous_round_id, recorded=mine is not None,
                         previous_recorded=before is not None, values=values)


def settings_changed_by_round(summaries: list[dict[str, Any]]) -> dict[str, str | None]:
    """Each round's settings changes since the round before, in one phrase (``ppo.steps 8 -> 64; ...``; ""
    when none), by round id; None for the first round and where either round recorded no settings."""
    flats = [_flat_settings(r["folder"]) for r in summaries]
    said: dict[str, str | None] = {}
    for i, r in enumerate(summaries):
        recorded = _compare(r["round_id"], flats[i], summaries[i - 1]["round_id"] if i else None,
                            flats[i - 1] if i else None)
        said[r["round_id"]] = ("; ".join(c.said() for c in recorded.changes)
                               if recorded.recorded and recorded.previous_recorded else None)
    return said


# ----------------------------------------------------------------------------------- dashboard helpers
_CURVES = ("reward/score", "kl/mean", "reward/validity_rate", "loss/policy", "loss/value", "entropy")


def live_ppo_metrics(folder: str | Path) -> Any:
    """Per-step PPO metrics of a round from its folder (while it runs, before ingestion), long form."""
    import pandas as pd

    rows = {}
    for row in _read_jsonl(RoundPaths(Path(folder)).metrics):
        rows[int(row["step"])] = row
    records = [{"step": s, "metric": k, "value": v} for s, row in sorted(rows.items())
               for k, v in row.items() if k != "step" and v is not None]
    return pd.DataFrame.from_records(records, columns=["step", "metric", "value"])


def round_curves(store: Store, round_id: str) -> Any:
    """A finished round's ingested PPO metrics in long form (step, metric, value)."""
    import pandas as pd

    from storage.rounds import training_metrics_frame

    with store.transaction() as con:
        wide = training_metrics_frame(con, run_id=f"{round_id}-ppo")
    if wide.empty:
        return pd.DataFrame(columns=["step", "metric", "value"])
    long = wide.drop(columns=["run_id", "run_kind"]).melt(id_vars="step", var_name="metric", value_name="value")
    return long.dropna(subset=["value"])


def latest_report(store: Store, round_id: str) -> dict[str, Any]:
    """The round's latest stored evaluation report (:func:`rlhf.evaluation.round_report`); {} when it has none."""
    from storage.rounds import list_evaluations

    with store.transaction() as con:
        evaluations = list_evaluations(con, round_id=round_id)
    return evaluations[-1]["metrics"] if evaluations else {}


def round_evaluation(store: Store, round_id: str) -> Any:
    """A finished round's held-out evaluation table, one row per policy and baseline, with its role.

    Columns: ``role`` (new policy, parent, zero-shot, baseline), ``policy`` and the metrics of
    :func:`rlhf.evaluation.evaluate_lists` (HR/NDCG with 95% bootstrap intervals, validity, diversity,
    novelty, coverage), and for every other row ``paired_diff`` / ``paired_lo`` / ``paired_hi``: the new
    policy's NDCG@N minus theirs over the same shoppers, the interval that says whether the round won
    (older reports have none, or none for the baseline rows: those cells stay empty); ``reasons_verdict``
    for the parent and zero-shot rows: the new policy's share of grounded reasons minus theirs, paired,
    in words with its interval (:mod:`rlhf.reasons`). Empty when the round stored no evaluation (no
    held-out contexts, or not done).
    """
    import pandas as pd

    from rlhf.evaluation import paired_verdict, verdict_in_words

    report = latest_report(store, round_id)
    table = pd.DataFrame.from_records(report.get("table") or [])
    if table.empty:
        return pd.DataFrame(columns=["role", "policy"])
    roles = {report.get("policy_id"): "new policy", report.get("previous_policy_id"): "parent"}
    roles.setdefault(report.get("zero_shot_policy_id"), "zero-shot")
    if report.get("previous_policy_id") == report.get("zero_shot_policy_id"):
        roles[report.get("previous_policy_id")] = "parent (zero-shot)"
    table.insert(0, "role", [roles.get(p, "baseline" if k == "baseline" else "policy")
                             for p, k in zip(table["policy"], table.get("kind", [""] * len(table)))])
    differences = report.get("ndcg_difference") or {}  # reports stored before 2026-12-06 have none
    for column, key in (("paired_diff", "mean"), ("paired_lo", "lo"), ("paired_hi", "hi")):
        table[column] = [(differences.get(p) or {}).get(key) for p in table["policy"]]
    table["verdict"] = [paired_verdict(lo, hi) for lo, hi in zip(table["paired_lo"], table["paired_hi"])]
    reasons = report.get("reasons_difference") or {}  # reports stored before 2026-12-06 (afternoon) have none
    table["reasons_verdict"] = [verdict_in_words(reasons.get(p)) for p in table["policy"]]
    return table


def zero_shot_verdicts(store: Store, round_id: str | None = None) -> dict[str, str | None]:
    """:func:`rlhf.evaluation.zero_shot_verdict` (NDCG) of every round (or only ``round_id``) that stored an
    evaluation, by round id."""
    return {rid: verdicts["ndcg"] for rid, verdicts in round_verdicts(store, round_id).items()}


def round_verdicts(store: Store, round_id: str | None = None) -> dict[str, dict[str, str | None]]:
    """Every round's (or only ``round_id``'s) verdicts against the zero-shot model, ``{"ndcg": ...,
    "reasons": ...}`` (:func:`rlhf.evaluation.zero_shot_verdict`), by round id, from one read."""
    from rlhf.evaluation import zero_shot_verdict
    from storage.rounds import list_evaluations

    with store.transaction() as con:
        evaluations = list_evaluations(con, round_id=round_id)
    reports = {e["round_id"]: e["metrics"] for e in evaluations if e["round_id"]}  # the latest wins
    return {rid: {m: zero_shot_verdict(report, m) for m in ("ndcg", "reasons")} for rid, report in reports.items()}


def rounds_metrics_frame(store: Store, summaries: list[dict[str, Any]] | None = None) -> Any:
    """One row per round with its headline metrics and the settings it changed since the round before
    (:func:`settings_changed_by_round`), for the table and charts across rounds; ``summaries`` are
    :func:`list_round_summaries` when the caller has read them already."""
    import pandas as pd

    verdicts = round_verdicts(store)
    summaries = list_round_summaries(store) if summaries is None else summaries
    changed = settings_changed_by_round(summaries)
    rows = []
    for i, r in enumerate(summaries, start=1):
        rows.append({"round": i, "round_id": r["round_id"], "status": r["status"], "policy_id": r["policy_id"],
                     "parent_policy_id": r.get("parent_policy_id"),
                     **{k: v for k, v in r["metrics"].items() if not isinstance(v, (dict, list))},
                     "rm_heldout_pairs": rm_heldout_pairs(r["metrics"]),
                     "ndcg_vs_zero_shot": verdicts.get(r["round_id"], {}).get("ndcg"),
                     "reasons_vs_zero_shot": verdicts.get(r["round_id"], {}).get("reasons"),
                     "settings_changed": changed[r["round_id"]],
                     "seconds": sum(v for v in r["timings"].values() if isinstance(v, (int, float)))})
    return pd.DataFrame.from_records(rows)


def rm_heldout_pairs(round_metrics: Mapping[str, Any]) -> int | None:
    """How many held-out pairs the round's reward-model accuracy was measured on (None: not recorded).

    Shown beside the accuracy everywhere: a round with a few dozen labels holds out two or three pairs,
    and "accuracy 0.000" on two pairs says nothing about the model.
    """
    n = _dig(round_metrics, "rm_counts", "examples_heldout")
    return int(n) if isinstance(n, (int, float)) else None


def model_registry(store: Store, policies: list[Any] | None = None) -> dict[str, Any]:
    """The reward models and policies registered in the store, as frames for the Training page; ``policies``:
    :func:`rlhf.policies.policy_summaries` when the caller has read them already."""
    import pandas as pd

    from rlhf.policies import policy_summaries
    from rlhf.reward.registry import method_of
    from storage.reward_models import list_reward_models

    with store.transaction() as con:
        rms = list_reward_models(con)
    rm_frame = pd.DataFrame.from_records([
        {"rm_id": r.rm_id, "round_id": r.round_id, "method": method_of(r),
         "backbone": r.backbone,
         "heldout_accuracy": (r.metrics or {}).get("heldout_accuracy"),
         "heldout_pairs": _dig(r.metrics, "heldout", "n"),
         "heldout_accuracy_unselected": (r.metrics or {}).get("heldout_accuracy_unselected"),
         "heldout_unselected_pairs": _dig(r.metrics, "heldout_unselected", "n"),
         "gold_accuracy": (r.metrics or {}).get("gold_accuracy"), "ece": (r.metrics or {}).get("heldout_ece"),
         "train_examples": _dig(r.card, "training", "n_train"), "created_at": r.created_at, "path": r.path}
        for r in rms
    ], columns=["rm_id", "round_id", "method", "backbone", "heldout_accuracy", "heldout_pairs",
                "heldout_accuracy_unselected", "heldout_unselected_pairs", "gold_accuracy", "ece", "train_examples", "created_at", "path"])
    columns = ["policy_id", "kind", "parent_id", "round_id", "verdict", "n_lists", "validity", "base_model",
               "adapter_path", "reward_model", "created_at"]
    policy_frame = pd.DataFrame.from_records(
        [{c: getattr(p, c) for c in columns} for p in (policy_summaries(store) if policies is None else policies)],
        columns=columns)
    return {"reward_models": rm_frame, "policies": policy_frame}
