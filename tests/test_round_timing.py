"""How long rounds take: the time left in a running stage, and the last finished round with the same settings."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from rlhf.rounds import (
    PastDuration,
    RoundContext,
    RoundPaths,
    duration_text,
    last_duration_like,
    last_duration_with,
    quick_settings,
    reward_model_change,
    round_seconds_left,
    save_round_settings,
    stage_seconds_left,
)
from rlhf.rounds.layout import UTC

T0 = datetime(2026, 12, 7, 11, 0, 0, tzinfo=UTC)


def _progress(step, total, pace_step, pace_after_s: float, updated_after_s: float) -> dict:
    return {"stage": "ppo", "step": step, "total": total, "pace_step": pace_step,
            "pace_at": (T0 + timedelta(seconds=pace_after_s)).isoformat(),
            "updated_at": (T0 + timedelta(seconds=updated_after_s)).isoformat()}


def test_the_time_left_in_a_stage_follows_its_pace_since_this_process_started_counting():
    # Resumed at step 2 (the steps before ran in another process), step 5 reached 30 s later: 10 s a step.
    progress = _progress(5, 8, 2, 0, 30)
    at_update = T0 + timedelta(seconds=30)
    assert stage_seconds_left(progress, at_update) == pytest.approx(30.0)
    assert stage_seconds_left(progress, at_update + timedelta(seconds=12)) == pytest.approx(18.0)  # counts down
    assert stage_seconds_left(progress, at_update + timedelta(seconds=100)) == 0.0  # a slow step: never below 0
    # In words: "under a minute" while the estimate runs, and no such promise once its step is overdue.
    from rlhf.rounds import stage_left_text

    assert stage_left_text(18.0) == "under a minute left in this stage"
    assert stage_left_text(0.0) == "its next step is taking longer than the ones before"
    # Nothing to say before a step has passed in this process, without a total, or at the end.
    assert stage_seconds_left(_progress(2, 8, 2, 0, 5), at_update) is None
    assert stage_seconds_left({**progress, "total": None}, at_update) is None
    assert stage_seconds_left(_progress(8, 8, 2, 0, 60), at_update) is None
    assert stage_seconds_left({"stage": "ppo", "step": 5, "total": 8}, at_update) is None  # an older progress file


def test_a_rounds_progress_file_records_where_each_stage_started_counting(tmp_path, settings):
    ctx = RoundContext("round_x", settings, None, RoundPaths(tmp_path))  # type: ignore[arg-type]

    def read() -> dict:
        return json.loads(ctx.paths.progress.read_text())

    ctx.set_progress("ppo")  # the stage starts; no step counted yet
    assert "pace_step" not in read()
    ctx.set_progress("ppo", 3, 10)  # a resumed PPO: its first counted step is 3, not 0
    origin = read()
    assert origin["pace_step"] == 3 and origin["pace_at"] == origin["updated_at"]
    ctx.set_progress("ppo", 4, 10)
    assert (read()["pace_step"], read()["pace_at"]) == (3, origin["pace_at"])
    ctx.set_progress("generate", 0, 12)  # a new stage starts its own count
    assert read()["pace_step"] == 0 and read()["stage"] == "generate"
    ctx.set_progress("generate", 5, 30)  # so does a new total (models counted, then optimizer steps)
    assert read()["pace_step"] == 5 and read()["pace_at"] == read()["updated_at"]


def test_the_reward_model_stage_counts_optimizer_steps_over_all_its_models_once_training_reports_them(
        tmp_path, settings):
    from rlhf.rounds.stages import _ModelsProgress

    ctx = RoundContext("round_x", settings, None, RoundPaths(tmp_path))  # type: ignore[arg-type]
    progress = _ModelsProgress(ctx, models=3)

    def read() -> tuple[int, int]:
        data = json.loads(ctx.paths.progress.read_text())
        return data["step"], data["total"]

    progress.model_started(0)
    assert read() == (0, 3)  # the probe reports no steps: models finished
    progress.steps_of(0)(40, 40)
    assert read() == (40, 120)
    progress.model_started(1)  # steps are being counted: a finished model does not go back to counting models
    assert read() == (40, 120)
    progress.steps_of(2)(10, 40)  # the third model's 10th step (a resume skipped the second, trained before)
    assert read() == (90, 120)


def _summary(tmp_path, round_id: str, settings, status: str = "done", rm_method: str | None = None,
             **timings: float) -> dict:
    folder = tmp_path / round_id
    save_round_settings(settings, folder)
    if rm_method:  # what its reward-model stage recorded
        RoundPaths(folder).marker("reward_model").parent.mkdir(parents=True, exist_ok=True)
        RoundPaths(folder).marker("reward_model").write_text(json.dumps({"card": {"training": {"method": rm_method}}}))
    return {"round_id": round_id, "status": status, "folder": str(folder), "timings": timings,
            "metrics": {"usable_labels": 36}}


def test_the_last_finished_round_with_the_same_settings_says_how_long_the_next_will_take(tmp_path, settings):
    quick = quick_settings(settings)
    summaries = [
        _summary(tmp_path, "round_1", quick, reward_model=6.5, ppo=407.1, generate=115.5),
        _summary(tmp_path, "round_2", settings, ppo=9000.0),  # a full round: other settings
        _summary(tmp_path, "round_3", quick, status="failed", ppo=12.0),  # never finished
        _summary(tmp_path, "round_4", quick.model_copy(update={"ppo": quick.ppo.model_copy(update={"steps": 7})}),
                 ppo=480.0),  # one setting differs
    ]
    past = last_duration_with(quick, summaries)
    assert past is not None and past.round_id == "round_1" and past.usable_labels == 36
    assert past.seconds == pytest.approx(529.1)
    assert last_duration_with(settings, summaries).round_id == "round_2"
    summaries.append(_summary(tmp_path, "round_5", quick, reward_model=7.0, ppo=300.0))
    assert last_duration_with(quick, summaries).round_id == "round_5"  # the latest like round
    # A running round's like round: by the settings its own folder recorded.
    summaries.append(_summary(tmp_path, "round_6", quick, status="running", ppo=10.0))
    assert last_duration_like("round_6", summaries).round_id == "round_5"
    summaries.append(_summary(tmp_path, "round_7", settings, status="running"))
    assert last_duration_like("round_7", summaries).round_id == "round_2"
    assert last_duration_like("round_6", summaries).round_id == "round_5"  # each by its own folder
    (tmp_path / "round_7" / "settings.json").unlink()
    assert last_duration_like("round_7", summaries) is None  # no recorded settings: nothing to compare
    # What a round started from does not change its work; nor is a setting added since held against a round.
    rolled_back = quick.model_copy(update={"rounds": quick.rounds.model_copy(update={"parent_policy": "policy_r1"})})
    summaries.append(_summary(tmp_path, "round_8", rolled_back, ppo=310.0))
    assert last_duration_with(quick, summaries).round_id == "round_8"
    older = json.loads((tmp_path / "round_5" / "settings.json").read_text())
    del older["ppo"]["steps"]  # as if ppo.steps had not existed when round_5 ran
    (tmp_path / "round_5" / "settings.json").write_text(json.dumps(older))
    assert last_duration_with(quick, summaries[:-1]).round_id == "round_5"
    other = settings.model_copy(update={"reward_model": settings.reward_model.model_copy(update={"epochs": 9.0})})
    assert last_duration_with(other, summaries) is None


def test_durations_read_as_a_person_says_them():
    assert [duration_text(s) for s in (12, 59.9, 61, 529, 3600, 3 * 3600 + 10 * 60)] == [
        "under a minute", "under a minute", "about 1 min", "about 9 min", "about 1 h", "about 3 h 10 min"]


def test_a_running_rounds_time_left_adds_the_later_stages_of_the_last_like_round():
    past = PastDuration("round_1", {"snapshot": 1.0, "reward_model": 6.0, "ppo": 400.0, "generate": 115.0,
                                    "select": 1.5, "enqueue": 0.5}, 36)
    progress = _progress(5, 8, 2, 0, 30)  # PPO: 30 s left at its pace
    assert round_seconds_left(progress, past, T0 + timedelta(seconds=30)) == pytest.approx(30.0 + 117.0)
    assert round_seconds_left({**progress, "stage": "generate"}, past, T0 + timedelta(seconds=30)) == pytest.approx(32.0)
    assert round_seconds_left(_progress(2, 8, 2, 0, 5), past, T0) is None  # the stage's pace is not known yet


def test_a_like_round_that_trained_the_other_kind_of_reward_model_is_said_to_say_little(tmp_path, settings):
    probe_round = last_duration_with(settings, [_summary(tmp_path, "round_p", settings, rm_method="probe", ppo=60.0)])
    assert probe_round.rm_method == "probe"
    threshold = settings.reward_model.probe_max_examples
    assert settings.reward_model.method == "auto"
    # Under 'auto', enough labels may cross into TRL + LoRA: far longer than the probe that round fitted.
    said = reward_model_change(probe_round, settings, threshold + 500)
    assert said and said.startswith("That round's reward model was the probe") and f"{threshold + 500:,}" in said
    assert reward_model_change(probe_round, settings, threshold - 1) is None  # still the probe
    lora = settings.model_copy(update={"reward_model": settings.reward_model.model_copy(update={"method": "lora"})})
    assert reward_model_change(probe_round, lora, 10) is not None
    lora_round = last_duration_with(settings, [_summary(tmp_path, "round_l", settings, rm_method="lora", ppo=60.0)])
    assert "this one fits the probe" in reward_model_change(lora_round, settings, threshold - 1)
    assert reward_model_change(lora_round, settings, threshold + 1) is None  # may train LoRA again
    unknown = last_duration_with(settings, [_summary(tmp_path, "round_u", settings, ppo=60.0)])
    assert unknown.rm_method is None and reward_model_change(unknown, settings, threshold + 500) is None
