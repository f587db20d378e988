"""Settings changed in code are validated like settings read from the file or the environment."""

from __future__ import annotations

import pytest

from rlhf.settings import ConfigError, load_settings, with_values


def test_values_set_in_code_are_validated_and_leave_the_original_alone(tmp_path):
    settings = load_settings(store={"data_dir": tmp_path})
    changed = with_values(settings, "reward_model", epochs=2.0, method="probe")
    assert (changed.reward_model.epochs, changed.reward_model.method) == (2.0, "probe")
    assert settings.reward_model == load_settings(store={"data_dir": tmp_path}).reward_model  # a copy was changed
    assert with_values(settings, "ppo") is settings  # nothing to change


@pytest.mark.parametrize(("section", "values", "named"), [
    ("reward_model", {"heldout_fraction": 1.0}, "reward_model.heldout_fraction: Input should be less than 1"),
    ("ppo", {"steps": -3}, "ppo.steps: Input should be greater than or equal to 0"),
    ("reward_model", {"method": "bayes"}, "reward_model.method: Input should be 'auto', 'lora' or 'probe'"),
    ("reward_model", {"epoch": 2}, "reward_model has unknown keys: epoch"),
    ("rewards", {"epochs": 2}, "settings names an unknown section 'rewards'"),
])
def test_a_value_the_settings_refuse_is_a_config_error_naming_it(tmp_path, section, values, named):
    """``model_copy`` alone let a negative step count or an unknown method through to the work that used it."""
    settings = load_settings(store={"data_dir": tmp_path})
    with pytest.raises(ConfigError, match=r"^Invalid settings\. ") as refused:
        with_values(settings, section, **values)
    assert named in str(refused.value)


def test_a_change_that_breaks_the_quick_round_is_refused(tmp_path):
    settings = load_settings(store={"data_dir": tmp_path})
    with pytest.raises(ConfigError, match=r"rounds\.quick\.ppo has unknown keys: stepz"):
        with_values(settings, "rounds", quick={"ppo": {"stepz": 1}})


def test_names_that_are_no_setting_are_found_in_the_environment_and_the_file(tmp_path, monkeypatch):
    """RECFEEDBACK_QUEUE__BOGUS=1 or a misspelt key in recfeedback.toml were ignored without a word."""
    from rlhf.settings import unknown_settings

    config = tmp_path / "recfeedback.toml"
    config.write_text("[queue]\noverlap_target = 3\noverlap_targte = 4\n[ppx]\nsteps = 1\n", encoding="utf-8")
    monkeypatch.setenv("RECFEEDBACK_CONFIG", str(config))
    environ = {"RECFEEDBACK_QUEUE__BOGUS": "1", "RECFEEDBACK_QUEUEE": "2", "RECFEEDBACK_PPO__STEPS": "3",
               "RECFEEDBACK_CONFIG": str(config), "RECFEEDBACK_CACHE": "/tmp/models", "HOME": "/root"}
    assert unknown_settings(environ) == ["RECFEEDBACK_QUEUEE", "RECFEEDBACK_QUEUE__BOGUS",
                                         f"queue.overlap_targte in {config}", f"[ppx] in {config}"]


def test_the_cli_warns_about_them_and_goes_on(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rlhf.cli import app

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECFEEDBACK_QUEUE__BOGUS", "1")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "Warning: RECFEEDBACK_QUEUE__BOGUS is not a setting, so it is ignored" in result.output
    assert "[queue]" in result.output  # the command still ran


def test_an_invalid_value_is_said_to_come_from_where_it_was_set(tmp_path, monkeypatch):
    """A bad value in the settings file was reported as 'environment variable RECFEEDBACK_PPO__STEPS'."""
    config = tmp_path / "bad.toml"
    config.write_text("[ppo]\nsteps = -1\n", encoding="utf-8")
    monkeypatch.setenv("RECFEEDBACK_CONFIG", str(config))
    with pytest.raises(ConfigError, match=rf"ppo\.steps: .* \(given -1 in {config}\)"):
        load_settings()
    monkeypatch.setenv("RECFEEDBACK_PPO__STEPS", "-2")  # the environment wins over the file
    with pytest.raises(ConfigError, match=r"\(given '-2' by environment variable RECFEEDBACK_PPO__STEPS\)"):
        load_settings()
    with pytest.raises(ConfigError, match=r"\(given -3 set in code\)"):  # and code over both
        load_settings(ppo={"steps": -3})
