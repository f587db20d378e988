"""Tiny-model training rounds for tests: settings, a 2-layer policy and a labelled demo store.

- :func:`tiny_sections` / :func:`tiny_settings` -- every size small (demo shop, lists, reward model, PPO,
  round); :func:`as_environment` gives the same as ``RECFEEDBACK_*`` variables for another process.
- fixture ``tiny_model`` (session scope) -- a 2-layer Llama with SmolLM2's real tokenizer, as a local folder.
- :func:`build_labelled_store` and fixture ``labelled_base`` (session scope: copy it, never write to it) -- a
  small demo store with a first queue sampled by that policy and labels from a simulated crowd.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlhf.settings import Settings, load_settings
from storage import Store


def tiny_sections(data_dir: Path, model_dir: str, **extra) -> dict[str, dict[str, Any]]:
    """Everything small, as settings sections: demo shop, contexts, lists, reward model, PPO, round."""
    sections: dict[str, dict[str, Any]] = {
        "store": {"data_dir": data_dir},
        "demo": {"n_items": 60, "n_shoppers": 40, "n_categories": 4, "seed": 5},
        "contexts": {"n_candidates": 6, "history_cap": 4, "heldout_fraction": 0.25},
        "model": {"policy": model_dir, "device": "cpu", "dtype": "float32"},
        "generation": {"list_length": 2, "samples_per_context": 2, "max_new_tokens": 16, "max_reason_tokens": 4,
                    "batch_size": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
        "reward_model": {"backbone": "policy", "epochs": 1, "batch_size": 8, "max_length": 192, "lora_r": 4,
                      "lora_alpha": 8, "min_examples": 4, "logging_steps": 1, "eval_batch_size": 16,
                      "heldout_fraction": 0.3, "warmup_ratio": 0.0},
        "ppo": {"steps": 3, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16,
             "lora_r": 4, "lora_alpha": 8, "checkpoint_every": 1, "tensorboard": True},
        "rounds": {"new_pairs": 6, "contexts_per_round": 4, "eval_contexts": 2, "ensemble_size": 1, "min_labels": 10,
                "eval_bootstrap_samples": 50, "cancel_grace_s": 2.0},
        "queue": {"overlap_target": 2, "seed": 1, "gold_rate": 0.0, "reshow_rate": 0.0},
    }
    for key, value in extra.items():
        sections[key] = {**sections.get(key, {}), **value}
    return sections


def tiny_settings(data_dir: Path, model_dir: str, **extra) -> Settings:
    """:func:`tiny_sections` loaded as the settings (environment variables and a settings file still apply)."""
    return load_settings(**tiny_sections(data_dir, model_dir, **extra))


def as_environment(sections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The same settings as ``RECFEEDBACK_<SECTION>__<KEY>`` variables, for a process started with them (the
    app, a background round)."""
    return {f"RECFEEDBACK_{section.upper()}__{key.upper()}": value if isinstance(value, str) else
            str(value) if isinstance(value, Path) else json.dumps(value)
            for section, values in sections.items() for key, value in values.items()}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer Llama (hidden 64) with SmolLM2's real tokenizer, saved as a local model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.models import load_tokenizer

    tokenizer = load_tokenizer(load_settings().model.policy)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny_policy")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_labelled_store(settings) -> Store:
    """A small demo store with a first queue sampled by the policy and labels from a simulated crowd."""
    from rlhf import simulate as sim
    from rlhf.demo import build_demo, utility_fn_for_store
    from rlhf.pairs import bootstrap_queue

    store = Store.from_settings(settings)
    build_demo(store, settings)
    bootstrap_queue(store, settings, 12, progress=False)
    crowd = sim.make_crowd(4, "clean", seed=3)
    sim.ensure_accounts(store, crowd)
    report = sim.run_simulation(store, crowd, utility_fn_for_store(store), 24, settings=settings, seed=3)
    assert report.labels >= 16, report.summary()
    return store


@pytest.fixture(scope="session")
def labelled_base(tiny_model, tmp_path_factory) -> Path:
    """A data folder with a small demo store, a first queue and simulated labels (built once)."""
    data = tmp_path_factory.mktemp("base") / "data"
    build_labelled_store(tiny_settings(data, tiny_model))
    return data
