"""The policies a store knows, and exporting one as a standalone model for serving.

A trained policy lives in the store as its base model plus the LoRA adapter a round saved. That is
what RecFeedback needs, but not what a serving stack loads. :func:`export_policy` merges the adapter
into the base weights and writes an ordinary transformers folder (weights, tokenizer with its chat
template, a model card and ``recfeedback_policy.json`` with the provenance), which
``AutoModelForCausalLM.from_pretrained`` loads and which ``model.policy`` accepts as the base of
further rounds. The folder appears complete or not at all: it is written beside the target and
renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlhf.errors import RecFeedbackError
from rlhf.settings import Settings
from storage import Store
from storage.records import Policy, RoundRecord

log = logging.getLogger(__name__)

#: The file in an exported folder that says where the model came from.
PROVENANCE_FILE = "recfeedback_policy.json"
EXPORT_DTYPES = ("float32", "bfloat16", "float16")


class PolicyExportError(RecFeedbackError):
    """A policy cannot be exported (unknown id, a baseline, the target folder is taken)."""


@dataclass(frozen=True)
class PolicySummary:
    """One registered policy with what it has produced: the rows of ``recfeedback policy list`` and of the
    Training page's policy registry."""

    policy_id: str
    kind: str
    base_model: str | None
    adapter_path: str | None
    parent_id: str | None
    round_id: str | None
    reward_model: str | None
    n_lists: int
    n_valid: int
    verdict: str | None
    created_at: datetime | None

    @property
    def validity(self) -> float | None:
        return self.n_valid / self.n_lists if self.n_lists else None


@dataclass(frozen=True)
class PolicyExport:
    """What :func:`export_policy` wrote."""

    policy_id: str
    path: Path
    merged_adapter: bool
    dtype: str
    n_parameters: int
    seconds: float

    def sentence(self) -> str:
        what = "base model with its LoRA adapter merged in" if self.merged_adapter else "base model (no adapter)"
        return (f"Exported {self.policy_id} to {self.path}: the {what}, {self.n_parameters / 1e6:.1f}M parameters "
                f"in {self.dtype}, in {self.seconds:.0f} s.")


def policy_summaries(store: Store) -> list[PolicySummary]:
    """Every registered policy, oldest first, with its lists' count and validity and, for a round's
    policy, the round's verdict against the zero-shot model."""
    from rlhf.rounds import zero_shot_verdicts
    from storage.generations import generation_counts_by_policy, list_policies

    with store.transaction() as con:
        policies = list_policies(con)
        counts = generation_counts_by_policy(con)
    verdicts = zero_shot_verdicts(store)
    return [
        PolicySummary(
            policy_id=p.policy_id, kind=p.kind, base_model=p.base_model, adapter_path=p.adapter_path,
            parent_id=p.parent_id, round_id=p.round_id, reward_model=(p.metrics or {}).get("reward_model"),
            n_lists=counts.get(p.policy_id, (0, 0))[0],
            n_valid=counts.get(p.policy_id, (0, 0))[1], verdict=verdicts.get(p.round_id) if p.round_id else None,
            created_at=p.created_at,
        )
        for p in policies
    ]


def export_policy(store: Store, settings: Settings, policy_id: str, out: str | os.PathLike[str], *,
                  dtype: str = "float32", overwrite: bool = False) -> PolicyExport:
    """Write ``policy_id`` as a standalone transformers model folder at ``out`` (see the module docstring).

    ``dtype`` is the weights' type on disk (``float32`` keeps the merged weights exact; ``bfloat16``
    halves the folder). An existing non-empty ``out`` is refused unless ``overwrite``, and even then unless it
    holds an earlier export (its provenance file): ``--force`` must never delete a folder of other files, let
    alone the store. It is replaced only once the new folder is complete.
    """
    if dtype not in EXPORT_DTYPES:
        raise PolicyExportError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, not {dtype!r}.")
    policy, round_record = _policy_to_export(store, policy_id)
    target = Path(out).expanduser().resolve()
    _check_export_target(target, Path(settings.data_dir).resolve(), overwrite=overwrite)
    started = time.perf_counter()
    from rlhf.errors import ModelNotFoundError
    from rlhf.models import load_policy

    base = policy.base_model or settings.model.policy
    if policy.adapter_path and not (Path(policy.adapter_path) / "adapter_config.json").is_file():
        raise PolicyExportError(f"{policy_id}'s LoRA adapter is missing from {policy.adapter_path} (was its round "
                                "folder moved or deleted?): restore it to export the policy.")
    try:
        model, tokenizer = load_policy(base, policy.adapter_path, device="cpu", dtype=dtype,
                                       tokenizer_spec=settings.model.tokenizer, merge=True)
    except ModelNotFoundError as exc:
        raise PolicyExportError(f"Cannot load {policy_id}'s base model {base!r}: {exc}") from exc
    provenance = _provenance(store, policy, round_record, base, dtype, settings)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        (partial / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
        (partial / "README.md").write_text(model_card(provenance), encoding="utf-8")
        _readable_like_folder(partial)
        _replace(partial, target)
    except OSError as exc:  # a full disk, a folder we may not write: nothing half-written is left behind
        raise PolicyExportError(f"Could not write the model to {target} ({exc}); nothing was left there"
                                + (", and the folder that was there is unchanged." if target.exists() else ".")) from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    n_parameters = sum(p.numel() for p in model.parameters())
    log.info("Exported policy %s to %s", policy_id, target)
    return PolicyExport(policy_id=policy_id, path=target, merged_adapter=bool(policy.adapter_path), dtype=dtype,
                        n_parameters=n_parameters, seconds=time.perf_counter() - started)


def _check_export_target(target: Path, data_dir: Path, *, overwrite: bool) -> None:
    """Refuse a target the export would replace but must not: a file, the data folder or one that holds it, a
    non-empty folder without ``overwrite``, and with it any folder that is not an earlier export."""
    if target.exists() and not target.is_dir():
        raise PolicyExportError(f"{target} is a file; give a folder to export the model into.")
    if target == data_dir or target in data_dir.parents:
        raise PolicyExportError(f"{target} holds the store ({data_dir}); export the model into a folder of its own.")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise PolicyExportError(f"{target} already has files in it; choose an empty folder or pass --force "
                                    "to replace an earlier export.")
        if not (target / PROVENANCE_FILE).is_file():
            raise PolicyExportError(f"{target} is not an earlier export (it has no {PROVENANCE_FILE}); --force only "
                                    "replaces those. Choose an empty folder.")


def _policy_to_export(store: Store, policy_id: str) -> tuple[Policy, RoundRecord | None]:
    """The policy row (refusing unknown ids and baselines by name) and the round that trained it."""
    from storage.generations import find_policy, list_policies
    from storage.rounds import find_round

    with store.transaction() as con:
        policy = find_policy(con, policy_id)
        if policy is None and policy_id.startswith("baseline-"):  # baselines are registered when first evaluated
            policy = Policy(policy_id=policy_id, kind="baseline")
        if policy is None:
            known = [p.policy_id for p in list_policies(con) if p.kind != "baseline"]
            listed = ", ".join(known) if known else "none yet"
            raise PolicyExportError(f"No policy {policy_id!r} in this store. Policies that can be exported: "
                                    f"{listed} (`recfeedback policy list`).")
        if policy.kind == "baseline":
            raise PolicyExportError(f"{policy_id} is a baseline, a rule rather than a model: there is nothing to "
                                    "export.")
        round_record = find_round(con, policy.round_id) if policy.round_id else None
    return policy, round_record


def _provenance(store: Store, policy: Policy, round_record: RoundRecord | None, base: str, dtype: str,
                settings: Settings) -> dict[str, Any]:
    """Where the exported weights came from and how the policy was judged, as JSON-ready data. The sampling
    settings are the round's; for a policy no round trained, those it is sampled with now."""
    from rlhf import __version__
    from rlhf.models import resolve_model_source
    from rlhf.prompts import PROMPT_VERSION
    from rlhf.runtime import jsonable

    source = resolve_model_source(base)
    verdict = None
    if policy.round_id:
        from rlhf.rounds import zero_shot_verdicts

        verdict = zero_shot_verdicts(store, policy.round_id).get(policy.round_id)
    config = (round_record.config or {}) if round_record else {}
    return jsonable({
        "policy_id": policy.policy_id,
        "base_model": base,
        "base_model_identity": source.identity or source.location,
        "base_gguf_file": source.gguf_file,
        "adapter_path": policy.adapter_path,
        "parent_policy_id": policy.parent_id,
        "round_id": policy.round_id,
        "reward_model_id": round_record.reward_model_id if round_record else (policy.metrics or {}).get("reward_model"),
        "round_metrics": (round_record.metrics or {}) if round_record else {},
        "ndcg_vs_zero_shot": verdict,
        "prompt_version": PROMPT_VERSION,
        "generation": config.get("generation") or settings.generation.model_dump(mode="json"),
        "dtype": dtype,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recfeedback_version": __version__,
    })


def _readable_like_folder(folder: Path) -> None:
    """Give every file the folder's read permissions: transformers writes the weights owner-only (0600),
    and a serving process running as another user could not read the export."""
    mode = folder.stat().st_mode & 0o666
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(mode)


def _replace(partial: Path, target: Path) -> None:
    """Move the finished folder into place; an existing target is kept until the new one is there."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    try:
        partial.rename(target)
    except OSError:
        if old.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _introduction(provenance: Mapping[str, Any]) -> str:
    """The card's first lines: what the policy is, and whether a round's adapter is merged into it."""
    does = ("it reads a shopper's recent purchases and a list of candidate items and writes a ranked\nlist with a "
            "reason for each item.")
    if provenance.get("adapter_path"):
        return (f"A recommendation policy trained with human feedback in RecFeedback: {does} The LoRA adapter a "
                "round trained is merged into the base weights, so this folder loads like any causal LM.")
    return (f"A recommendation policy as RecFeedback runs it before any training: {does} No round trained it: "
            "these are the base model's weights as RecFeedback samples them, for comparison.")


def model_card(provenance: Mapping[str, Any]) -> str:
    """A Hugging Face style README for an exported policy: what it is, how it was judged, how to use it."""
    p = provenance
    metrics = p.get("round_metrics") or {}
    gen = p.get("generation") or {}
    n = gen.get("list_length")
    rows = [("policy id", p["policy_id"]), ("base model", p["base_model"]),
            ("trained in round", p.get("round_id") or "not trained: the base model as is"),
            ("parent policy", p.get("parent_policy_id")), ("reward model", p.get("reward_model_id")),
            ("NDCG against the zero-shot model", p.get("ndcg_vs_zero_shot")),
            (f"NDCG@{n} on held-out shoppers" if n else "NDCG on held-out shoppers",
             _fmt(metrics.get(f"ndcg@{n}") if n else None)),
            ("lists valid (round's held-out lists)", _fmt(metrics.get("eval_validity"))),
            ("reward model held-out accuracy", _fmt(metrics.get("rm_heldout_accuracy"))),
            ("weights", p["dtype"]), ("exported", p["exported_at"]),
            ("RecFeedback", p["recfeedback_version"])]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v not in (None, ""))
    constrained = gen.get("constrained", True)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [recfeedback, rlhf, ppo, recommendation]
---

# {p["policy_id"]}

{_introduction(p)}

| | |
|---|---|
{table}

## Use

In RecFeedback, as the base of new lists or rounds:

```bash
RECFEEDBACK_MODEL__POLICY=/path/to/this/folder recfeedback generate --split heldout
```

Elsewhere, with transformers:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("/path/to/this/folder")
model = AutoModelForCausalLM.from_pretrained("/path/to/this/folder")
```

The policy was trained and judged on RecFeedback's prompt (version {p["prompt_version"]}: the system
prompt and the shopper's context in `rlhf/prompts.py`), applied with this tokenizer's chat template.
{"Its lists were sampled under RecFeedback's list grammar (constrained decoding: only candidate ids, no repeats); sampled freely, expect fewer valid lists." if constrained else "Its lists were sampled without constrained decoding."}
{_gguf_note(p.get("base_gguf_file"))}Provenance, the round's metrics and its sampling settings are in `{PROVENANCE_FILE}`.
"""


def _gguf_note(gguf_file: str | None) -> str:
    """A line for a base that came as GGUF: its weights here are dequantized, quantization error included."""
    if not gguf_file:
        return ""
    return (f"The base weights were dequantized from the GGUF file `{gguf_file}` (the model RecFeedback trained and "
            "evaluated), so they carry its quantization error; they are not the original checkpoint's.\n")


def _fmt(value: Any) -> str | None:
    return None if value is None else f"{float(value):.3f}"
