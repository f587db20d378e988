"""The training round that closes the loop: labels -> reward model -> PPO -> new lists -> new pairs.

The package's modules: :mod:`~rlhf.rounds.layout` (the round folder, its files, the stage names),
:mod:`~rlhf.rounds.state` (processes, what the store says about rounds), :mod:`~rlhf.rounds.stages` (the
stages), :mod:`~rlhf.rounds.runner` (run, resume, cancel, launch), :mod:`~rlhf.rounds.reports`
(status, summaries, charts, verdicts, the registry) and :mod:`~rlhf.rounds.timing` (time left, past
durations). Everything public is importable from here.

Stages, in order (each one a function in :mod:`~rlhf.rounds.stages`)::

    snapshot -> reward_model -> ppo -> generate -> select -> enqueue -> done   (or failed / cancelled)

How a round shares the store with the app (DESIGN.md, "DuckDB and processes"):

- It SNAPSHOTS what it needs to Parquet under its round folder (``<data_dir>/rounds/<round_id>/snapshot``,
  one short unit of work per table) and trains from those files. The app keeps serving annotators.
- While it runs, the ONLY thing it writes to the store is its own ``rounds`` row (status, stage, pid,
  timings per finished stage) in short units of work. Per-step training metrics go to
  ``metrics.jsonl`` (+ TensorBoard) and live progress to ``progress.json`` in the round folder.
  (Two short reads happen too: the label count at start and, for evaluation, the held-out contexts'
  later purchases.)
- Its outputs are INGESTED IN ONE TRANSACTION at the end (``enqueue``): the new policy row, the reward
  model's registry row, the generations, the selected pairs (``round_id`` set, generations of the new
  policy), training metrics, the evaluation row, and the round's status ``done``. A round killed at any
  point therefore leaves every data table exactly as it was.
- Each finished stage writes ``stages/<stage>.json`` (its outputs and seconds). ``resume`` continues
  after the last finished stage; PPO additionally resumes from its latest checkpoint. The ``enqueue``
  transaction is idempotent: if it committed but the process died before its marker, a resume sees the
  policy row and only finishes the bookkeeping.

Round folder layout::

    settings.json     # the settings the round runs with (a resume uses these, not today's defaults)
    round.log         # stdout/stderr of a background round
    progress.json     # stage, step, total (live; read by `round status` and the Training page)
    snapshot/         # Parquet snapshot (storage.snapshot)
    stages/*.json     # completion markers
    ensemble/         # bootstrap reward models for disagreement (ensemble_size > 1)
    ppo/              # checkpoints/, tensorboard/, adapter/ (the new policy's LoRA)
    metrics.jsonl     # per-step PPO metrics
    generations.jsonl, pairs.jsonl, evaluation.json
"""

from __future__ import annotations

from rlhf.rounds.layout import (
    FINAL_STATUSES,
    STAGES,
    RoundCancelled,
    RoundPaths,
    completed_stages,
    load_round_settings,
    log_tail,
    new_round_id,
    quick_overrides,
    quick_settings,
    read_progress,
    round_folder,
    save_round_settings,
)
from rlhf.rounds.reports import (
    NOT_RECORDED,
    ROUND_SETTING_SECTIONS,
    RoundSettings,
    SettingValue,
    latest_report,
    list_round_summaries,
    live_ppo_metrics,
    model_registry,
    rm_heldout_pairs,
    round_curves,
    round_evaluation,
    round_settings,
    round_status,
    round_verdicts,
    rounds_metrics_frame,
    setting_text,
    settings_changed_by_round,
    zero_shot_verdicts,
)
from rlhf.rounds.runner import (
    LaunchedRound,
    cancel_round,
    create_round,
    execute,
    launch_round,
    prepare_resume,
    resume_round,
    run_round,
)
from rlhf.rounds.stages import (
    STAGE_FUNCS,
    RoundContext,
    comparison_policies,
    stage_enqueue,
    stage_generate,
    stage_ppo,
    stage_reward_model,
    stage_select,
    stage_snapshot,
)
from rlhf.rounds.state import (
    check_can_start,
    effective_status,
    gpu_visible,
    parent_policy_id,
    pid_alive,
    running_round,
    settings_problems,
    startable_policies,
    usable_label_count,
)
from rlhf.rounds.timing import (
    QUICK_MINUTES_ON_2_CORES,
    PastDuration,
    duration_text,
    first_quick_round_text,
    full_round_without_gpu,
    last_duration_like,
    last_duration_with,
    past_duration_text,
    reward_model_change,
    round_estimate,
    round_seconds_left,
    stage_left_text,
    stage_seconds_left,
)

__all__ = [
    "FINAL_STATUSES",
    "NOT_RECORDED",
    "QUICK_MINUTES_ON_2_CORES",
    "ROUND_SETTING_SECTIONS",
    "STAGES",
    "STAGE_FUNCS",
    "LaunchedRound",
    "PastDuration",
    "RoundCancelled",
    "RoundContext",
    "RoundPaths",
    "RoundSettings",
    "SettingValue",
    "cancel_round",
    "check_can_start",
    "comparison_policies",
    "completed_stages",
    "create_round",
    "duration_text",
    "effective_status",
    "execute",
    "first_quick_round_text",
    "full_round_without_gpu",
    "gpu_visible",
    "last_duration_like",
    "last_duration_with",
    "latest_report",
    "launch_round",
    "list_round_summaries",
    "live_ppo_metrics",
    "load_round_settings",
    "log_tail",
    "model_registry",
    "new_round_id",
    "parent_policy_id",
    "past_duration_text",
    "pid_alive",
    "prepare_resume",
    "quick_overrides",
    "quick_settings",
    "read_progress",
    "resume_round",
    "reward_model_change",
    "rm_heldout_pairs",
    "round_curves",
    "round_estimate",
    "round_evaluation",
    "round_folder",
    "round_seconds_left",
    "round_settings",
    "round_status",
    "round_verdicts",
    "rounds_metrics_frame",
    "run_round",
    "running_round",
    "save_round_settings",
    "setting_text",
    "settings_changed_by_round",
    "settings_problems",
    "stage_enqueue",
    "stage_generate",
    "stage_left_text",
    "stage_ppo",
    "stage_reward_model",
    "stage_seconds_left",
    "stage_select",
    "stage_snapshot",
    "startable_policies",
    "usable_label_count",
    "zero_shot_verdicts",
]
