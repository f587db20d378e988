"""Saving and restoring a PPO run: adapter + value head + optimizer + KL controller + RNG + step.

Layout of one checkpoint folder (``<run>/checkpoints/step-000050``)::

    adapter/              PEFT adapter (adapter_config.json + adapter_model.safetensors), loadable
                          on its own by ``PeftModel.from_pretrained`` for generation
    value_head.pt         value head state dict
    trainer_state.pt      optimizer, KL controller, step, prompt-order and RNG states
    ppo_config.json       the PPOConfig the run used (for humans and for the round record)

A checkpoint is written to ``<name>.tmp`` and renamed, so a killed run never leaves a half-written
folder that :func:`latest_checkpoint` would pick up.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    *,
    policy: Any,
    value_head: torch.nn.Module,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write one checkpoint folder atomically and return its path."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save_pretrained(tmp / "adapter")
    torch.save(value_head.state_dict(), tmp / "value_head.pt")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    (tmp / "ppo_config.json").write_text(json.dumps(config, indent=2, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def load_checkpoint(folder: Path, *, policy: Any, value_head: torch.nn.Module) -> dict[str, Any]:
    """Load adapter and value-head weights in place; return the trainer state for the trainer to apply."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    adapter_file = folder / "adapter" / "adapter_model.safetensors"
    if not adapter_file.is_file():
        raise FileNotFoundError(f"{folder} is not a PPO checkpoint (no adapter/adapter_model.safetensors).")
    device = next(value_head.parameters()).device
    result = set_peft_model_state_dict(policy, load_file(str(adapter_file), device=str(device)))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"The checkpoint's adapter does not fit this model (unexpected keys: {unexpected[:3]}).")
    value_head.load_state_dict(torch.load(folder / "value_head.pt", map_location=device))
    return torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``run_dir/checkpoints`` (or ``run_dir`` itself if it is one)."""
    run_dir = Path(run_dir)
    if (run_dir / "trainer_state.pt").is_file():
        return run_dir
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = sorted(
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and not p.name.endswith(".tmp")
        and (p / "trainer_state.pt").is_file()
    )
    return found[-1] if found else None
