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
