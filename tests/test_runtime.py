"""Runtime helpers that bridge library versions."""

from __future__ import annotations

import dataclasses
import warnings

from rlhf.runtime import checkpointing_kwargs


def test_checkpointing_is_asked_for_by_the_name_the_installed_transformers_knows():
    """transformers 5 renamed ``gradient_checkpointing``; older releases know only the old name. Either
    way the trainer must see checkpointing on (TRL reads the old name), with no deprecation warning."""
    from trl import RewardConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = RewardConfig(output_dir="unused", use_cpu=True, report_to=[],
                            **checkpointing_kwargs(RewardConfig, True))
    assert args.gradient_checkpointing is True

    @dataclasses.dataclass
    class OlderArgs:  # a TrainingArguments from before the rename
        gradient_checkpointing: bool = False

    assert checkpointing_kwargs(OlderArgs, True) == {"gradient_checkpointing": True}
    assert OlderArgs(**checkpointing_kwargs(OlderArgs, False)).gradient_checkpointing is False
