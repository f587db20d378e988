"""The reward-model registry: a folder per model with a model card, and a row in the store.

Layout of ``<data_dir>/reward_models/<rm_id>/``::

    adapter/      # PEFT LoRA adapter + the trained score head (modules_to_save); LoRA models
    head.safetensors  # the linear head of a probe model (rlhf.reward.probe), instead of adapter/
    tokenizer/    # the tokenizer exactly as used in training (pad token included)
    runs/         # TensorBoard event files of the training run
    card.json     # model card: backbone, data snapshot, label counts, settings, training cost, metrics

``card.json`` is written last and the store row after it, so a folder without a card is an interrupted
training run and is never loaded. Models are immutable: a new training run makes a new id.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.errors import ModelNotFoundError
from rlhf.reward.backbones import (
    Backbone,
    effective_max_length,
    load_backbone,
    load_tokenizer_for,
    resolve_backbone,
)
from rlhf.reward.probe import OBJECTIVE as PROBE_OBJECTIVE
from rlhf.reward.probe import load_probe, save_probe_head
from rlhf.reward.score import RewardScorer
from storage.records import RewardModelRecord

UTC = timezone.utc  # datetime.UTC is Python 3.11+

if TYPE_CHECKING:
    from rlhf.reward.train import TrainResult
    from rlhf.settings import Settings
    from storage import Store

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
CARD_VERSION = 1


def new_rm_id() -> str:
    """A sortable, readable reward model id: ``rm_<UTC time>_<random>``."""
    return f"rm_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:6]}"


def reward_model_dir(settings: Settings, rm_id: str) -> Path:
    return Path(settings.data_dir) / "reward_models" / rm_id


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"trl": trl.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "torch": torch.__version__}


def build_card(
    result: TrainResult,
    *,
    rm_id: str,
    settings: Settings,
    metrics: dict[str, Any],
    counts: dict[str, Any],
    snapshot_id: str | None,
    round_id: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card: everything needed to trust, compare and reload the model."""
    return {
        "card_version": CARD_VERSION,
        "rm_id": rm_id,
        "round_id": round_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": result.backbone.as_dict(),
        "objective": PROBE_OBJECTIVE if result.method == "probe" else
        "Bradley-Terry pairwise loss (TRL RewardTrainer) with strength margins and reward centring",
        "data": {"snapshot_id": snapshot_id, "counts": counts},
        "settings": {
            "reward_model": settings.reward_model.model_dump(mode="json"),
            "policy_model": settings.model.policy,
            "prompt": {"list_length": settings.generation.list_length,
                       "max_prompt_tokens": settings.generation.max_prompt_tokens},
        },
        "training": result.summary(),
        "loss_history": [
            {k: h[k] for k in ("step", "epoch", "loss", "accuracy", "margin") if k in h}
            for h in result.history if "loss" in h
        ],
        "metrics": metrics,
        "versions": _versions(),
        **(extra or {}),
    }


def save_reward_model(
    result: TrainResult,
    *,
    rm_id: str,
    store: Store | None,
    settings: Settings,
    metrics: dict[str, Any],
    counts: dict[str, Any] | None = None,
    snapshot_id: str | None = None,
    round_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RewardModelRecord:
    """Save adapter, tokenizer and card under the registry folder, then add the store row (if a store is given)."""
    from storage.reward_models import insert_reward_model

    folder = reward_model_dir(settings, rm_id)
    folder.mkdir(parents=True, exist_ok=True)
    if result.method == "probe":
        save_probe_head(result.scorer, folder)  # type: ignore[arg-type]
    else:
        result.model.save_pretrained(str(folder / "adapter"))
    result.tokenizer.save_pretrained(str(folder / "tokenizer"))
    card = build_card(result, rm_id=rm_id, settings=settings, metrics=metrics, counts=counts or {},
                      snapshot_id=snapshot_id, round_id=round_id, extra=extra)
    tmp = folder / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, folder / CARD_FILE)
    record = RewardModelRecord(
        rm_id=rm_id, backbone=result.backbone.name, path=str(folder.resolve()), round_id=round_id,
        metrics=metrics, card=card,
    )
    if store is not None:
        with store.transaction() as con:
            insert_reward_model(con, record)
    return record


def method_of(record: RewardModelRecord) -> str:
    """'lora' or 'probe': how a registered model was trained (models from before the probe are LoRA)."""
    return str(((record.card or {}).get("training") or {}).get("method") or "lora")


def _store_of(store_or_settings: Store | Settings) -> Store:
    from storage import Store

    if isinstance(store_or_settings, Store):
        return store_or_settings
    from rlhf.runtime import open_store

    return open_store(store_or_settings)


def get_record(store_or_settings: Store | Settings, rm_id: str | None = None) -> RewardModelRecord:
    """The registry row of ``rm_id``, or of the latest model; a clear error when there is none."""
    from storage.reward_models import get_reward_model, latest_reward_model

    store = _store_of(store_or_settings)
    with store.transaction() as con:
        record = get_reward_model(con, rm_id) if rm_id else latest_reward_model(con)
    if record is None:
        raise ModelNotFoundError("No reward model is registered yet; train one with `recfeedback rm train`.")
    return record


def list_reward_models(store_or_settings: Store | Settings) -> list[RewardModelRecord]:
    """Registered reward models, newest first."""
    from storage.reward_models import list_reward_models as _list

    with _store_of(store_or_settings).transaction() as con:
        return _list(con)


def load_reward_model(
    store_or_settings: Store | Settings,
    rm_id: str | None = None,
    *,
    device: str = "auto",
    settings: Settings | None = None,
) -> RewardScorer:
    """A ready :class:`RewardScorer` for ``rm_id`` (or the latest registered model)."""
    record = get_record(store_or_settings, rm_id)
    if settings is None and not hasattr(store_or_settings, "transaction"):
        settings = store_or_settings  # type: ignore[assignment]
    return load_reward_model_from_folder(record.path, device=device, settings=settings)


def load_reward_model_from_folder(
    folder: str | Path, *, device: str = "auto", settings: Settings | None = None
) -> RewardScorer:
    """Load a saved reward model from its registry folder (card, tokenizer, base backbone + adapter)."""
    from peft import PeftModel

    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise ModelNotFoundError(f"{folder} holds no finished reward model (no {CARD_FILE}).")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    info = card["backbone"]
    backbone = Backbone(name=info["name"], location=info["location"], kind=info["kind"], model_type=info["model_type"])
    if not (Path(backbone.location) / "config.json").is_file():
        # The converted cache may have been cleared: resolve the backbone again by name.
        if settings is None:
            from rlhf.settings import get_settings

            settings = get_settings()
        backbone = resolve_backbone(backbone.name, settings)
    if card.get("training", {}).get("method") == "probe":
        return load_probe(folder, card, backbone, device=device)
    tokenizer = load_tokenizer_for(backbone, str(folder / "tokenizer"))
    base, tokenizer = load_backbone(backbone, device="cpu", dtype="float32", tokenizer=tokenizer)
    model = PeftModel.from_pretrained(base, str(folder / "adapter"))
    from rlhf.models import pick_device

    dev = pick_device(device)
    if dev != "cpu":
        model.to(dev)
        if dev == "cuda":
            import torch

            model.to(torch.bfloat16)
    model.eval()
    max_length = int(card.get("training", {}).get("max_length") or card["settings"]["reward_model"]["max_length"])
    max_length = effective_max_length(base, max_length)
    # Models trained before input formats existed read the raw texts.
    input_format = card.get("training", {}).get("input_format", "policy")
    return RewardScorer(model, tokenizer, kind=backbone.kind, max_length=max_length, rm_id=card["rm_id"], card=card,
                        input_format=input_format)
