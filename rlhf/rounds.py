"""The training round that closes the loop: labels -> reward model -> PPO -> new lists -> new pairs.

Stages, in order (each one a function below)::

    snapshot -> reward_model -> ppo -> generate -> select -> enqueue -> done   (or failed / cancelled)

How a round shares the store with the app (DESIGN.md, "DuckDB and processes"):

- It SNAPSHOTS what it needs to Parquet under its round folder (``<data_dir>/rounds/<round_id>/snapshot``,
  one short unit of work per table) and trains from those files. The app keeps serving annotators.
- While it runs, the ONLY thing it writes to the store is its own ``rounds`` row (status, stage, pid,
  timings per finished stage) in short units of work. Per-step training metrics go to
  ``metrics.jsonl`` (+ TensorBoard) and live progress to ``progress.json`` in the round folder.
  (Two short reads happen too: the label count at start and, for evaluation, the held-out contexts'
  later purchases.)
- Its outputs are INGESTED IN ONE TRANSACTION at the end (``enqueue``): the new policy row, the reward
  model's registry row, the generations, the selected pairs (``round_id`` set, generations of the new
  policy), training metrics, the evaluation row, and the round's status ``done``. A round killed at any
  point therefore leaves every data table exactly as it was.
- Each finished stage writes ``stages/<stage>.json`` (its outputs and seconds). ``resume`` continues
  after the last finished stage; PPO additionally resumes from its latest checkpoint. The ``enqueue``
  transaction is idempotent: if it committed but the process died before its marker, a resume sees the
  policy row and only finishes the bookkeeping.

Round folder layout::

    settings.json     # the settings the round runs with (a resume uses these, not today's defaults)
    round.log         # stdout/stderr of a background round
    progress.json     # stage, step, total (live; read by `round status` and the Training page)
    snapshot/         # Parquet snapshot (storage.snapshot)
    stages/*.json     # completion markers
    ensemble/         # bootstrap reward models for disagreement (ensemble_size > 1)
    ppo/              # checkpoints/, tensorboard/, adapter/ (the new policy's LoRA)
    metrics.jsonl     # per-step PPO metrics
    generations.jsonl, pairs.jsonl, evaluation.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf.errors import RoundError
from rlhf.runtime import jsonable
from rlhf.settings import Settings, load_settings
from storage import Store
from storage.records import Generation, ListItem, Pair, Policy, RewardModelRecord, RoundRecord

UTC = timezone.utc  # datetime.UTC is Python 3.11+

log = logging.getLogger(__name__)

#: The stages a round runs, in order.
STAGES: tuple[str, ...] = ("snapshot", "reward_model", "ppo", "generate", "select", "enqueue")
#: Statuses a rounds row can hold ("interrupted" is derived: running, but its process is gone).
FINAL_STATUSES = ("done", "failed", "cancelled")


class RoundCancelled(RoundError):
    """The round's process received SIGTERM (``round cancel``)."""


# ----------------------------------------------------------------------------------- folder and files
@dataclass(frozen=True)
class RoundPaths:
    """Where a round keeps its files."""

    folder: Path

    @property
    def settings(self) -> Path:
        return self.folder / "settings.json"

    @property
    def log(self) -> Path:
        return self.folder / "round.log"

    @property
    def progress(self) -> Path:
        return self.folder / "progress.json"

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshot"

    @property
    def stages(self) -> Path:
        return self.folder / "stages"

    @property
    def ppo(self) -> Path:
        return self.folder / "ppo"

    @property
    def adapter(self) -> Path:
        return self.ppo / "adapter"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def generations(self) -> Path:
        return self.folder / "generations.jsonl"

    @property
    def pairs(self) -> Path:
        return self.folder / "pairs.jsonl"

    @property
    def evaluation(self) -> Path:
        return self.folder / "evaluation.json"

    @property
    def ensemble(self) -> Path:
        return self.folder / "ensemble"

    def marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"


def round_folder(settings: Settings, round_id: str) -> Path:
    """``<data_dir>/rounds/<round_id>``."""
    return Path(settings.data_dir) / "rounds" / round_id


def quick_settings(settings: Settings) -> Settings:
    """The settings of a QUICK round: ``settings.rounds.quick`` laid over the full values, section by section.

    For a demo or a smoke test on a CPU, where the full round (hundreds of PPO steps on every context)
    would take hours. Values are validated like any settings; an unknown section or key is an error.
    """
    updates: dict[str, Any] = {}
    for section, values in settings.rounds.quick.items():
        current = getattr(settings, section, None)
        if not isinstance(current, BaseModel):
            raise RoundError(f"settings.rounds.quick names an unknown section {section!r}.")
        unknown = sorted(set(values) - set(type(current).model_fields))
        if unknown:
            raise RoundError(f"settings.rounds.quick.{section} has unknown keys: {', '.join(unknown)}.")
        updates[section] = type(current).model_validate({**current.model_dump(), **values})
    return settings.model_copy(update=updates)


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU looks usable here, without importing torch (the app's pages stay light)."""
    return shutil.which("nvidia-smi") is not None and bool(os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip())


def new_round_id() -> str:
    """A sortable, readable id: ``round_<UTC time>_<random>``."""
    import uuid

    return f"round_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:6]}"


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def completed_stages(folder: Path) -> list[str]:
    """Stages with a completion marker, in stage order."""
    paths = RoundPaths(folder)
    return [s for s in STAGES if paths.marker(s).is_file()]


def read_progress(folder: Path) -> dict[str, Any]:
    """The live progress a running round writes (stage, step, total, updated_at); {} when none."""
    return _read_json(RoundPaths(folder).progress, {}) or {}


def log_tail(folder: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of the round's log (background rounds)."""
    path = RoundPaths(folder).log
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64_000))
        text = fh.read().decode("utf-8", errors="replace")
    # tqdm redraws with carriage returns: keep the last state of each line.
    cleaned = [ln.split("\r")[-1] for ln in text.splitlines()]
    return "\n".join(cleaned[-lines:])


def save_round_settings(settings: Settings, folder: Path) -> None:
    """Record the settings a round runs with (also what a background process is started with)."""
    _write_json(RoundPaths(folder).settings, settings.to_toml_dict())


def load_round_settings(folder: Path) -> Settings:
    """The settings recorded in a round folder."""
    data = _read_json(RoundPaths(folder).settings)
    if data is None:
        raise RoundError(f"{folder} has no readable settings.json; the round cannot be resumed.")
    return load_settings(**data)


# ----------------------------------------------------------------------------------- processes
def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id is running (a zombie counts as gone; our own children are reaped)."""
    if not pid or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our finished child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")
    return True


def effective_status(record: RoundRecord) -> str:
    """The status to show: a 'running' round whose process is gone is 'interrupted'."""
    if record.status == "running" and not pid_alive(record.pid):
        return "interrupted"
    return record.status


# ----------------------------------------------------------------------------------- store reads
def usable_label_count(store: Store) -> int:
    """Current, non-re-show A/B labels on non-gold pairs: what the reward model can learn from."""
    from storage.generations import gold_flags
    from storage.queue import current_labels, gold_answers

    with store.transaction() as con:
        labels = [lab for lab in current_labels(con) if not lab.is_reshow and lab.choice in ("A", "B")]
        gold = set(gold_answers(con))
        is_gold = gold_flags(con, sorted({lab.pair_id for lab in labels} - gold))  # one query, not one per pair
    return sum(1 for lab in labels if lab.pair_id in is_gold and not is_gold[lab.pair_id])


def running_round(store: Store) -> RoundRecord | None:
    """A round whose status is 'running' and whose process is alive, or None."""
    from storage.rounds import list_rounds

    with store.transaction() as con:
        rounds = list_rounds(con)
    for r in rounds:
        if r.status == "running" and pid_alive(r.pid):
            return r
    return None


def check_can_start(store: Store, settings: Settings) -> int:
    """Raise RoundError with a clear sentence when a round may not start; return the usable label count."""
    busy = running_round(store)
    if busy is not None:
        raise RoundError(
            f"Round {busy.round_id} is still running (stage {busy.stage}, pid {busy.pid}). "
            "Wait for it to finish or cancel it with `recfeedback round cancel " + busy.round_id + "`."
        )
    n = usable_label_count(store)
    need = settings.rounds.min_labels
    if n < need:
        raise RoundError(
            f"Only {n} usable labels (A/B choices on non-gold pairs); a round needs at least {need} "
            "(settings.rounds.min_labels). Collect more labels first."
        )
    return n


def parent_policy_id(store: Store, settings: Settings) -> str:
    """The policy a new round starts from: the newest finished round's policy, else the base model."""
    from rlhf.generate import default_policy_id
    from storage.rounds import list_rounds

    with store.transaction() as con:
        rounds = list_rounds(con)
    done = [r for r in rounds if r.status == "done" and r.policy_id]
    return done[-1].policy_id if done else default_policy_id(settings.model.policy)


def _update_row(store: Store, round_id: str, **fields: Any) -> None:
    from storage.rounds import update_round

    with store.transaction() as con:
        update_round(con, round_id, **fields)


def _get_row(store: Store, round_id: str) -> RoundRecord:
    from storage.rounds import get_round

    with store.transaction() as con:
        return get_round(con, round_id)


# ----------------------------------------------------------------------------------- the context a stage sees
@dataclass
class RoundContext:
    """What every stage needs: the round, its folder, its settings and the store (for short units only)."""

    round_id: str
    settings: Settings
    store: Store
    paths: RoundPaths
    progress_bars: bool = True

    def set_progress(self, stage: str, step: int | None = None, total: int | None = None, **extra: Any) -> None:
        _write_json(self.paths.progress, {
            "stage": stage, "step": step, "total": total, "pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"), **extra,
        })

    def marker(self, stage: str) -> dict[str, Any]:
        data = _read_json(self.paths.marker(stage))
        if data is None:
            raise RoundError(f"Stage {stage!r} of round {self.round_id} has not finished.")
        return data

    @property
    def meta(self) -> dict[str, Any]:
        return _read_json(self.paths.folder / "round.json", {}) or {}


# ----------------------------------------------------------------------------------- stage: snapshot
def stage_snapshot(ctx: RoundContext) -> dict[str, Any]:
    """Copy labels, pairs, generations, contexts, annotators and the catalogue to Parquet."""
    from storage.snapshot import MANIFEST, write_snapshot

    if ctx.paths.snapshot.exists() and not (ctx.paths.snapshot / MANIFEST).exists():
        shutil.rmtree(ctx.paths.snapshot)  # an interrupted export: start it again
    if (ctx.paths.snapshot / MANIFEST).exists():
        from storage.snapshot import read_manifest

        manifest = read_manifest(ctx.paths.snapshot)
    else:
        manifest = write_snapshot(ctx.store, ctx.paths.snapshot, snapshot_id=f"snap_{ctx.round_id}")
    from rlhf.evaluation import evaluation_context_ids

    return {"snapshot_id": manifest["snapshot_id"], "counts": {k: v["rows"] for k, v in manifest["tables"].items()},
            "eval_contexts": evaluation_context_ids(ctx.store, ctx.settings)}


def _snapshot(ctx: RoundContext) -> Any:
    from storage.snapshot import read_snapshot

    return read_snapshot(ctx.paths.snapshot)


# ----------------------------------------------------------------------------------- stage: reward model
def _settings_in(settings: Settings, data_dir: Path) -> Settings:
    """A copy of the settings whose data folder is ``data_dir`` (files of ensemble members)."""
    return settings.model_copy(update={"store": settings.store.model_copy(update={"data_dir": data_dir})})


def stage_reward_model(ctx: RoundContext) -> dict[str, Any]:
    """Train the round's reward model from the snapshot (files only; registered at enqueue).

    With ``rounds.ensemble_size`` K > 1, K-1 extra models are trained on bootstrap resamples of the
    training examples (kept in the round folder) so that active selection can use their disagreement.
    """
    from rlhf.reward.train import train_from_snapshot

    settings = ctx.settings
    ctx.set_progress("reward_model", 0, settings.rounds.ensemble_size)
    snap = _snapshot(ctx)
    record = train_from_snapshot(snap, settings, store=None, round_id=ctx.round_id,  # type: ignore[arg-type]
                                 progress=ctx.progress_bars)
    members = [record.path]
    k = max(1, int(settings.rounds.ensemble_size))
    if k > 1:
        members += _train_bootstrap_members(ctx, snap, k - 1)
    m = record.metrics or {}
    return {
        "rm_id": record.rm_id, "backbone": record.backbone, "path": record.path, "metrics": record.metrics,
        "card": record.card, "members": members,
        "heldout_accuracy": m.get("heldout_accuracy", _dig(m, "heldout", "accuracy")),
        "loss_history": (record.card or {}).get("loss_history", []),
    }


def _train_bootstrap_members(ctx: RoundContext, snap: Any, n: int) -> list[str]:
    import numpy as np

    from rlhf.reward.dataset import build_reward_dataset
    from rlhf.reward.registry import save_reward_model
    from rlhf.reward.train import train_reward_model

    settings = ctx.settings
    local = _settings_in(settings, ctx.paths.ensemble)
    dataset = build_reward_dataset(snap, settings)
    train = dataset.train.reset_index(drop=True)
    rng = np.random.default_rng(settings.reward_model.seed + 101)
    out = []
    for k in range(n):
        ctx.set_progress("reward_model", k + 1, n + 1)
        sample = train.iloc[rng.integers(0, len(train), len(train))].reset_index(drop=True)
        member_id = f"boot{k + 1}"
        folder = ctx.paths.ensemble / "reward_models" / member_id
        if (folder / "card.json").is_file():
            out.append(str(folder.resolve()))
            continue
        result = train_reward_model(sample, settings=local, output_dir=folder, progress=ctx.progress_bars)
        record = save_reward_model(result, rm_id=member_id, store=None, settings=local, metrics={},
                                   round_id=ctx.round_id, extra={"bootstrap_member": k + 1})
        out.append(record.path)
    return out


def _dig(data: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = data
    for key in keys:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


# ----------------------------------------------------------------------------------- views from the snapshot
def _views(snap: Any, context_ids: Sequence[str], settings: Settings) -> list[Any]:
    from rlhf.prompts import make_view

    contexts = snap.context_records()
    items = snap.catalog_records()
    out = []
    for cid in context_ids:
        c = contexts[cid]
        out.append(make_view(c.context_id, c.shopper_id, [items[i] for i in c.history if i in items],
                             [items[i] for i in c.candidates if i in items],
                             attributes=settings.contexts.item_attributes))
    return out


def _pool_contexts(snap: Any, settings: Settings) -> list[str]:
    """Training contexts for this round: the least-paired first (coverage), then by id, at most contexts_per_round."""
    contexts = snap.table("contexts")
    train = contexts[contexts["split"] != "heldout"]["context_id"].tolist()
    pairs = snap.table("pairs")
    load = pairs["context_id"].value_counts().to_dict() if len(pairs) else {}
    n_items = settings.generation.list_length
    cands = dict(zip(contexts["context_id"], contexts["candidates"]))
    train = [c for c in train if len(cands.get(c) or []) >= n_items]
    train.sort(key=lambda c: (load.get(c, 0), c))
    return train[: settings.rounds.contexts_per_round]


def _eval_contexts(ctx: RoundContext, snap: Any) -> list[str]:
    """The held-out contexts the snapshot stage chose for evaluation (``evaluation_context_ids``); rounds
    snapshotted before that choice existed keep the first ``eval_contexts`` held-out contexts by id."""
    chosen = ctx.marker("snapshot").get("eval_contexts")
    if chosen is not None:
        return list(chosen)
    contexts = snap.table("contexts")
    held = sorted(contexts[contexts["split"] == "heldout"]["context_id"].tolist())
    return held[: ctx.settings.rounds.eval_contexts]


def _ppo_examples(snap: Any, settings: Settings, tokenizer: Any, context_ids: Sequence[str]) -> list[dict[str, Any]]:
    from rlhf.ppo.product import ppo_example
    from rlhf.prompts import PromptTooLongError, render_prompt

    n_items = settings.generation.list_length
    budget = min(settings.ppo.max_prompt_tokens, settings.generation.max_prompt_tokens)
    out = []
    for view in _views(snap, context_ids, settings):
        if len(view.candidates) < n_items:
            continue
        try:
            prompt = render_prompt(tokenizer, view, n_items, budget)
        except PromptTooLongError:
            continue
        out.append(ppo_example(view, prompt))
    return out


# ----------------------------------------------------------------------------------- stage: PPO
def stage_ppo(ctx: RoundContext) -> dict[str, Any]:
    """PPO against the round's reward model, from the parent policy; resumes from its latest checkpoint."""
    from rlhf.models import load_causal_lm, load_tokenizer
    from rlhf.ppo.checkpoint import latest_checkpoint
    from rlhf.ppo.config import PPOConfig
    from rlhf.ppo.product import ListGrammarConstraint, build_product_reward
    from rlhf.ppo.trainer import PPOTrainer
    from rlhf.reward.registry import load_reward_model_from_folder

    settings = ctx.settings
    rm = ctx.marker("reward_model")
    snap = _snapshot(ctx)
    config = PPOConfig.from_settings(settings.ppo, algo="ppo")
    model, tokenizer = load_causal_lm(settings.model.policy, device="cpu", dtype="float32")
    if settings.model.tokenizer:
        tokenizer = load_tokenizer(settings.model.tokenizer)
    parent_adapter = ctx.meta.get("parent_adapter")
    if parent_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, parent_adapter, is_trainable=True)
    model.train()
    examples = _ppo_examples(snap, settings, tokenizer, _pool_contexts(snap, settings))
    if not examples:
        raise RoundError("No training contexts with enough candidates to run PPO on.")
    scorer = load_reward_model_from_folder(rm["path"], device=settings.model.device, settings=settings)
    reward = build_product_reward(scorer, settings)
    constraint = ListGrammarConstraint.from_settings(tokenizer, settings) if config.constrained else None
    ctx.paths.ppo.mkdir(parents=True, exist_ok=True)

    def file_sink(step: int, metrics: Mapping[str, float]) -> None:
        import math

        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        with ctx.paths.metrics.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": int(step), **clean}) + "\n")
        ctx.set_progress("ppo", int(step), config.steps, reward=clean.get("reward/score"), kl=clean.get("kl/mean"))

    trainer = PPOTrainer(config, model, tokenizer, reward, examples, logits_mask_fn=constraint,
                         output_dir=ctx.paths.ppo, metrics_sinks=[file_sink])
    resumed_from = 0
    if latest_checkpoint(ctx.paths.ppo) is not None:
        resumed_from = trainer.load(ctx.paths.ppo)
        log.info("Round %s: PPO resumes at step %d", ctx.round_id, resumed_from)
    ctx.set_progress("ppo", trainer.step_count, config.steps)
    history = trainer.train(progress=ctx.progress_bars)
    trainer.save_adapter(ctx.paths.adapter)
    trainer.close()
    final = history[-1] if history else (trainer.history[-1] if trainer.history else {})
    return {"adapter": str(ctx.paths.adapter.resolve()), "steps": config.steps, "resumed_from": resumed_from,
            "n_prompts": len(examples), "final_metrics": final}


# ----------------------------------------------------------------------------------- stage: generate
def _sample(model: Any, tokenizer: Any, views: Sequence[Any], settings: Settings, policy_id: str, round_id: str,
            catalog: set[str], progress: bool) -> list[dict[str, Any]]:
    from rlhf.generate import SamplingParams
    from rlhf.prompts import PROMPT_VERSION, prompt_fingerprint
    from rlhf.runtime import new_id

    if not views:
        return []
    p = SamplingParams.from_settings(settings)
    lists = p.sample(model, tokenizer, views, progress=progress, catalog_ids=catalog)
    sampling = {k: v for k, v in p.as_dict().items() if k not in ("samples_per_context", "batch_size")}
    return [
        {
            "generation_id": new_id("gen"), "context_id": g.context_id, "policy_id": policy_id,
            "raw_text": g.raw_text, "items": [{"item_id": i.item_id, "reason": i.reason} for i in g.parsed.items],
            "problems": list(g.parsed.problems), "is_valid": bool(g.parsed.is_valid),
            "sampling": {**sampling, "sample_index": g.sample_index, "finished": g.finished,
                         "prompt_version": PROMPT_VERSION, "prompt_sha1": prompt_fingerprint(g.prompt),
                         "history_kept": g.prompt_info.get("history_kept")},
            "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens, "round_id": round_id,
        }
        for g in lists
    ]


def comparison_policies(meta: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The policies a round's new policy is compared with, as (policy id, adapter path or None): its
    parent (one step of progress) and, from the second round on, the zero-shot base model (the
    progress of all rounds so far, which is what the loop is for)."""
    out: list[tuple[str, str | None]] = [(meta["parent_policy_id"], meta.get("parent_adapter"))]
    zero = meta.get("zero_shot_policy_id")
    if zero and zero != meta["parent_policy_id"]:
        out.append((zero, None))
    return out


def _load_for_sampling(settings: Settings, adapter: str | None) -> tuple[Any, Any]:
    """The policy model (base + ``adapter``, or the base alone) and its tokenizer, for sampling."""
    from rlhf.models import load_causal_lm, load_policy, load_tokenizer

    m = settings.model
    if adapter:
        return load_policy(m.policy, adapter, device=m.device, dtype=m.dtype, tokenizer_spec=m.tokenizer)
    model, tokenizer = load_causal_lm(m.policy, device=m.device, dtype=m.dtype)
    return model, (load_tokenizer(m.tokenizer) if m.tokenizer else tokenizer)


def stage_generate(ctx: RoundContext) -> dict[str, Any]:
    """New lists from the new policy: for the round's training contexts (pair candidates) and for
    held-out contexts (evaluation); the comparison policies' lists on held-out contexts they have none
    for (usually only the first round samples the zero-shot lists)."""
    settings = ctx.settings
    snap = _snapshot(ctx)
    meta = ctx.meta
    ppo = ctx.marker("ppo")
    pool = _pool_contexts(snap, settings)
    held = _eval_contexts(ctx, snap)
    catalog = set(snap.table("catalog_items")["item_id"])
    gens = snap.table("generations")
    missing: dict[str, tuple[str | None, list[str]]] = {}
    for policy_id, adapter in comparison_policies(meta):
        have = set(gens[gens["policy_id"] == policy_id]["context_id"]) if len(gens) else set()
        if todo := [c for c in held if c not in have]:
            missing[policy_id] = (adapter, todo)
    total = len(pool) + len(held) + sum(len(todo) for _, todo in missing.values())
    ctx.set_progress("generate", 0, total)
    model, tokenizer = _load_for_sampling(settings, ppo["adapter"])
    new_policy = meta["policy_id"]
    rows = _sample(model, tokenizer, _views(snap, pool + held, settings), settings, new_policy, ctx.round_id, catalog,
                   ctx.progress_bars)
    done = len(pool) + len(held)
    ctx.set_progress("generate", done, total)
    del model
    # The comparison policies' lists on the evaluation contexts (the comparison and the RM win rates).
    for policy_id, (adapter, todo) in missing.items():
        model, tokenizer = _load_for_sampling(settings, adapter)
        rows += _sample(model, tokenizer, _views(snap, todo, settings), settings, policy_id, ctx.round_id, catalog,
                        ctx.progress_bars)
        del model
        done += len(todo)
        ctx.set_progress("generate", done, total)
    with ctx.paths.generations.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, default=str) + "\n")
    new_rows = [r for r in rows if r["policy_id"] == new_policy]
    return {"n_generations": len(rows), "n_new_policy": len(new_rows), "pool_contexts": len(pool),
            "eval_contexts": len(held),
            "comparison_lists_generated": {p: sum(r["policy_id"] == p for r in rows) for p in missing},
            "validity": sum(r["is_valid"] for r in new_rows) / len(new_rows) if new_rows else None}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _as_generation(r: Mapping[str, Any]) -> Generation:
    return Generation(
        generation_id=r["generation_id"], context_id=r["context_id"], policy_id=r["policy_id"], raw_text=r["raw_text"],
        items=[ListItem(i["item_id"], i.get("reason", "")) for i in r["items"]], problems=list(r["problems"]),
        is_valid=bool(r["is_valid"]), sampling=r.get("sampling"), prompt_tokens=r.get("prompt_tokens"),
        completion_tokens=r.get("completion_tokens"), round_id=r.get("round_id"),
    )


# ----------------------------------------------------------------------------------- stage: select (+ evaluation)
def stage_select(ctx: RoundContext) -> dict[str, Any]:
    """Score the new lists with the round's reward model(s), choose the pairs to label, evaluate."""

    from rlhf.active import (
        CandidatePair,
        SelectionShares,
        bootstrap_scores,
        round_priority_offset,
        select_pairs,
        to_pair_records,
    )
    from rlhf.pairs import lists_identical
    from rlhf.reward.dataset import policy_prompt_renderer
    from rlhf.reward.registry import load_reward_model_from_folder

    settings = ctx.settings
    snap = _snapshot(ctx)
    meta = ctx.meta
    rm = ctx.marker("reward_model")
    rows = _read_jsonl(ctx.paths.generations)
    new_policy, parent = meta["policy_id"], meta["parent_policy_id"]
    held = set(_eval_contexts(ctx, snap))
    ctx.set_progress("select", 0, 2)

    # Everything to score: this round's lists, the parent's stored lists on the same contexts, and the
    # zero-shot policy's on the held-out ones (only there: they are for evaluation, not for new pairs).
    zero = meta.get("zero_shot_policy_id")
    old = snap.generation_records()
    contexts_new = {r["context_id"] for r in rows}
    by_id: dict[str, Generation] = {r["generation_id"]: _as_generation(r) for r in rows}
    for g in old.values():
        if (g.policy_id == parent and g.context_id in contexts_new) or (g.policy_id == zero and g.context_id in held):
            by_id.setdefault(g.generation_id, g)
    render = policy_prompt_renderer(snap, settings)
    ids = sorted(by_id)
    prompts = [render(by_id[g].context_id) for g in ids]
    responses = [by_id[g].raw_text for g in ids]
    scorers = [load_reward_model_from_folder(p, device=settings.model.device, settings=settings)
               for p in rm["members"]]
    batch = settings.reward_model.eval_batch_size
    scores = bootstrap_scores([lambda p, r, s=s: s.score(p, r, batch_size=batch) for s in scorers], prompts, responses)
    score_of = dict(zip(ids, scores[0].tolist()))
    ctx.set_progress("select", 1, 2)

    # Candidate pairs on training contexts: at least one list of the new policy, two different lists.
    per_context: dict[str, list[str]] = {}
    for g in ids:
        gen = by_id[g]
        if gen.context_id not in held:
            per_context.setdefault(gen.context_id, []).append(g)
    candidates = []
    for cid in sorted(per_context):
        gs = sorted(per_context[cid])
        for i in range(len(gs)):
            for j in range(i + 1, len(gs)):
                a, b = by_id[gs[i]], by_id[gs[j]]
                if new_policy not in (a.policy_id, b.policy_id) or lists_identical(a, b):
                    continue
                candidates.append(CandidatePair(cid, a.generation_id, b.generation_id))
    pairs_table = snap.table("pairs")
    exclude = set(zip(pairs_table["gen_a"], pairs_table["gen_b"])) if len(pairs_table) else set()
    labels = snap.table("labels")
    pair_ctx = dict(zip(pairs_table["pair_id"], pairs_table["context_id"])) if len(pairs_table) else {}
    labelled: dict[str, int] = {}
    for pid in set(labels["pair_id"]) if len(labels) else set():
        c = pair_ctx.get(pid)
        if isinstance(c, str):
            labelled[c] = labelled.get(c, 0) + 1
    selected = select_pairs(candidates, scores, ids, settings.rounds.new_pairs,
                            shares=SelectionShares.from_settings(settings.rounds), labelled_per_context=labelled,
                            exclude=exclude, seed=settings.generation.seed)
    earlier_rounds = {r for r in pairs_table["round_id"] if isinstance(r, str)} if len(pairs_table) else set()
    offset = round_priority_offset(len(earlier_rounds), settings.rounds.priority_offset)
    records = to_pair_records(selected, overlap_target=settings.queue.overlap_target, round_id=ctx.round_id,
                              strategy="active", priority_offset=offset)
    with ctx.paths.pairs.open("w", encoding="utf-8") as fh:
        for p in records:
            fh.write(json.dumps(p.__dict__, default=str) + "\n")

    evaluation = _evaluate(ctx, snap, by_id, score_of, sorted(held), new_policy, parent, zero)
    _write_json(ctx.paths.evaluation, evaluation)
    ctx.set_progress("select", 2, 2)
    reasons: dict[str, int] = {}
    for p in records:
        reasons[p.selection_reason or ""] = reasons.get(p.selection_reason or "", 0) + 1
    return {"candidates": len(candidates), "selected": len(records), "by_reason": reasons,
            "ensemble_size": len(scorers),
            "mean_score_new": _mean([score_of[g] for g in ids if by_id[g].policy_id == new_policy]),
            "mean_score_parent": _mean([score_of[g] for g in ids if by_id[g].policy_id == parent]),
            "rm_win_rate": _dig(evaluation, "rm_win_rate", "mean"),
            "rm_win_rate_vs_zero_shot": _dig(evaluation, "rm_win_rate_vs_zero_shot", "mean"),
            "ndcg": _dig(evaluation, "headline", f"ndcg@{settings.generation.list_length}")}


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _evaluate(ctx: RoundContext, snap: Any, by_id: Mapping[str, Generation], score_of: Mapping[str, float],
              held: Sequence[str], new_policy: str, parent: str, zero_shot: str | None) -> dict[str, Any]:
    """Offline metrics of the new, the parent and the zero-shot policy on held-out contexts, with the
    baselines, and the round's reward-model win rate of the new policy over the other two."""
    from rlhf.evaluation import load_ground_truth, policy_lists, round_report

    settings = ctx.settings
    if not held:
        return {"skipped": "no held-out contexts (settings.rounds.eval_contexts = 0 or none exist)"}
    r = settings.rounds
    truth = load_ground_truth(ctx.store, context_ids=list(held), list_length=settings.generation.list_length,
                              events=r.eval_events or None)
    policies = []
    held_gens = [g for g in by_id.values() if g.context_id in truth.contexts]
    for pid in dict.fromkeys(p for p in (new_policy, parent, zero_shot) if p):
        if (lists := policy_lists(pid, held_gens)).lists:
            policies.append(lists)
    return round_report(policies, truth, new_policy, previous_policy_id=parent, zero_shot_policy_id=zero_shot,
                        rm_scores=score_of, round_id=ctx.round_id, samples=r.eval_bootstrap_samples,
                        seed=r.eval_seed, exclude_history=r.eval_exclude_history)


# ----------------------------------------------------------------------------------- stage: enqueue (ingest)
def stage_enqueue(ctx: RoundContext) -> dict[str, Any]:
    """Ingest everything the round produced in ONE transaction, and mark the round done in it."""
    from rlhf.runtime import new_id
    from storage.generations import find_policy, insert_generations, insert_pairs, upsert_policy
    from storage.reward_models import insert_reward_model
    from storage.rounds import insert_evaluation, insert_training_metrics, update_round

    settings = ctx.settings
    meta = ctx.meta
    rm = ctx.marker("reward_model")
    ppo = ctx.marker("ppo")
    sel = ctx.marker("select")
    gen = ctx.marker("generate")
    generations = [_as_generation(r) for r in _read_jsonl(ctx.paths.generations)]
    pairs = [Pair(**{k: v for k, v in r.items() if k != "created_at"}) for r in _read_jsonl(ctx.paths.pairs)]
    steps: dict[int, dict[str, Any]] = {}
    for row in _read_jsonl(ctx.paths.metrics):  # a resumed PPO may repeat steps: the last one wins
        step = int(row.pop("step"))
        steps[step] = row
    evaluation = _read_json(ctx.paths.evaluation, {}) or {}
    new_policy = meta["policy_id"]
    final = {k: v for k, v in (ppo.get("final_metrics") or {}).items() if not str(k).startswith("time/")}
    round_metrics = _round_metrics(rm, ppo, gen, sel, evaluation, settings)
    timings = _timings(ctx)
    ppo_run = f"{ctx.round_id}-ppo"
    rm_run = f"{ctx.round_id}-rm"
    with ctx.store.transaction() as con:
        already = find_policy(con, new_policy)
        if already is None:
            upsert_policy(con, Policy(
                policy_id=new_policy, kind="llm", base_model=settings.model.policy, adapter_path=ppo["adapter"],
                parent_id=meta["parent_policy_id"], round_id=ctx.round_id,
                metrics={"algo": "ppo", "steps": ppo.get("steps"), "reward_model": rm["rm_id"], **final},
            ))
            insert_reward_model(con, RewardModelRecord(
                rm_id=rm["rm_id"], backbone=rm["backbone"], path=rm["path"], round_id=ctx.round_id,
                metrics=rm["metrics"], card=rm["card"],
            ))
            insert_generations(con, generations)
            insert_pairs(con, pairs)
            insert_training_metrics(con, ppo_run, "ppo", sorted(steps.items()))
            insert_training_metrics(con, rm_run, "reward_model",
                                    [(int(h.get("step", i)), h) for i, h in enumerate(rm.get("loss_history", []))])
            if evaluation and "table" in evaluation:
                insert_evaluation(con, new_id("eval"), evaluation, policy_id=new_policy, round_id=ctx.round_id,
                                  dataset="heldout")
        update_round(con, ctx.round_id, status="done", stage="done", error=None, policy_id=new_policy,
                     reward_model_id=rm["rm_id"], metrics=round_metrics, timings=timings,
                     finished_at=datetime.now(UTC).replace(tzinfo=None))
    return {"ingested": already is None, "generations": len(generations), "pairs": len(pairs),
            "training_metric_rows": len(steps)}


def _round_metrics(rm: Mapping[str, Any], ppo: Mapping[str, Any], gen: Mapping[str, Any], sel: Mapping[str, Any],
                   evaluation: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The headline numbers of a round (what the Training page charts)."""
    n = settings.generation.list_length
    final = ppo.get("final_metrics") or {}
    head = evaluation.get("headline") or {}
    return jsonable({
        "rm_heldout_accuracy": rm.get("heldout_accuracy"),
        "rm_counts": _dig(rm.get("card"), "data", "counts"),
        "ppo_reward": final.get("reward/score"),
        "ppo_kl": final.get("kl/mean"),
        "ppo_validity": final.get("reward/validity_rate"),
        "generation_validity": gen.get("validity"),
        "pairs_enqueued": sel.get("selected"),
        "selection": sel.get("by_reason"),
        "mean_rm_score_new": sel.get("mean_score_new"),
        "mean_rm_score_parent": sel.get("mean_score_parent"),
        "rm_win_rate": _dig(evaluation, "rm_win_rate", "mean"),
        "rm_win_rate_vs_zero_shot": _dig(evaluation, "rm_win_rate_vs_zero_shot", "mean"),
        f"ndcg@{n}": head.get(f"ndcg@{n}"),
        f"zero_shot_ndcg@{n}": next((row.get(f"ndcg@{n}") for row in evaluation.get("table") or []
                                     if row.get("policy") == evaluation.get("zero_shot_policy_id")), None),
        f"hr@{n}": head.get(f"hr@{n}"),
        "eval_validity": head.get("validity"),
        "eval_diversity": head.get("diversity"),
        "eval_reasons_grounded": head.get("reasons_grounded"),
    })


def _timings(ctx: RoundContext) -> dict[str, float]:
    out = {}
    for stage in STAGES:
        data = _read_json(ctx.paths.marker(stage))
        if data and "seconds" in data:
            out[stage] = data["seconds"]
    return out


STAGE_FUNCS: dict[str, Callable[[RoundContext], dict[str, Any]]] = {
    "snapshot": stage_snapshot,
    "reward_model": stage_reward_model,
    "ppo": stage_ppo,
    "generate": stage_generate,
    "select": stage_select,
    "enqueue": stage_enqueue,
}


# ----------------------------------------------------------------------------------- run / resume
def create_round(store: Store, settings: Settings, round_id: str | None = None, *, pid: int | None = None) -> RoundRecord:
    """Check that a round may start, then create its folder and its 'running' rounds row."""
    from rlhf.generate import default_policy_id
    from storage.generations import find_policy
    from storage.rounds import insert_round

    n_labels = check_can_start(store, settings)
    round_id = round_id or new_round_id()
    folder = round_folder(settings, round_id)
    folder.mkdir(parents=True, exist_ok=True)
    save_round_settings(settings, folder)
    parent = parent_policy_id(store, settings)
    with store.transaction() as con:
        found = find_policy(con, parent)
    parent_adapter = found.adapter_path if found is not None else None
    meta = {"round_id": round_id, "parent_policy_id": parent, "parent_adapter": parent_adapter,
            "policy_id": f"policy_{round_id.removeprefix('round_')}", "usable_labels_at_start": n_labels,
            "zero_shot_policy_id": default_policy_id(settings.model.policy),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_json(folder / "round.json", meta)
    record = RoundRecord(round_id=round_id, status="running", stage=STAGES[0], config=settings.to_toml_dict(),
                         timings={}, metrics={"usable_labels": n_labels}, parent_policy_id=parent,
                         folder=str(folder.resolve()), pid=pid or os.getpid())
    with store.transaction() as con:
        insert_round(con, record)
    log.info("Round %s created (parent policy %s, %d usable labels)", round_id, parent, n_labels)
    return record


def _install_sigterm() -> Any:
    def handler(signum: int, frame: Any) -> None:
        raise RoundCancelled("The round was cancelled (SIGTERM).")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no handler, SIGKILL still stops it
        return None


def execute(store: Store, round_id: str, *, progress: bool = True,
            stop_after: str | None = None) -> RoundRecord:
    """Run the stages of an existing round that have no completion marker, in order.

    ``stop_after`` ends the run after that stage (tests, debugging); the round stays 'running' with its
    markers, exactly like a killed one, until resumed.
    """
    row = _get_row(store, round_id)
    if row.status in FINAL_STATUSES:  # e.g. cancelled between its launch and its process starting
        raise RoundError(f"Round {round_id} is {row.status}; there is nothing to run.")
    folder = Path(row.folder) if row.folder else None
    if folder is None or not folder.is_dir():
        raise RoundError(f"Round {round_id} has no folder on disk ({row.folder}); it cannot run.")
    settings = load_round_settings(folder)
    ctx = RoundContext(round_id, settings, store, RoundPaths(folder), progress_bars=progress)
    previous = _install_sigterm()
    current = None
    try:
        for stage in STAGES:
            if ctx.paths.marker(stage).is_file():
                continue
            current = stage
            _update_row(store, round_id, stage=stage, status="running", pid=os.getpid(), timings=_timings(ctx))
            ctx.set_progress(stage)
            log.info("Round %s: stage %s", round_id, stage)
            started = time.perf_counter()
            out = STAGE_FUNCS[stage](ctx)
            out["seconds"] = round(time.perf_counter() - started, 3)
            _write_json(ctx.paths.marker(stage), jsonable(out))
            log.info("Round %s: stage %s finished in %.1f s", round_id, stage, out["seconds"])
            if stage == "enqueue":
                # The marker exists now: add the enqueue time to the row's timings.
                _update_row(store, round_id, timings=_timings(ctx))
            if stop_after == stage:
                break
        ctx.set_progress("done" if current == "enqueue" or ctx.paths.marker("enqueue").is_file() else (current or ""))
    except RoundCancelled as exc:
        log.warning("Round %s cancelled during %s", round_id, current)
        _safe_update(store, round_id, status="cancelled", error=str(exc))
        raise
    except BaseException as exc:
        message = f"{type(exc).__name__} in stage {current}: {exc}"
        log.exception("Round %s failed", round_id)
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        _safe_update(store, round_id, status=status, error=message[:2000])
        if isinstance(exc, Exception) and not isinstance(exc, RoundError):
            raise RoundError(f"Round {round_id} failed in stage {current}: {exc}") from exc
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return _get_row(store, round_id)


def _safe_update(store: Store, round_id: str, **fields: Any) -> None:
    try:
        current = _get_row(store, round_id)
        if current.status == "cancelled" and fields.get("status") != "cancelled":
            return  # `round cancel` already recorded the outcome
        _update_row(store, round_id, **fields)
    except Exception:  # recording the failure must not hide the failure
        log.warning("Could not record the outcome of round %s", round_id, exc_info=True)


def run_round(store: Store, settings: Settings, *, round_id: str | None = None, progress: bool = True,
              stop_after: str | None = None) -> RoundRecord:
    """Start a new round (checks, folder, row) and run it to the end in this process."""
    if round_id is not None:
        folder = round_folder(settings, round_id)
        if (folder / "settings.json").is_file():
            settings = load_round_settings(folder)  # prepared by `launch_round`
    record = create_round(store, settings, round_id)
    return execute(store, record.round_id, progress=progress, stop_after=stop_after)


def resume_round(store: Store, round_id: str, *, progress: bool = True, stop_after: str | None = None) -> RoundRecord:
    """Continue a failed, cancelled or interrupted round after its last finished stage."""
    prepare_resume(store, round_id)
    return execute(store, round_id, progress=progress, stop_after=stop_after)


def prepare_resume(store: Store, round_id: str) -> None:
    """Check that a round may continue and mark it running again (this process's pid until another takes it)."""
    row = _get_row(store, round_id)
    status = effective_status(row)
    if status == "done":
        raise RoundError(f"Round {round_id} is already done.")
    if status == "running":
        raise RoundError(f"Round {round_id} is still running (pid {row.pid}); cancel it first to resume it.")
    busy = running_round(store)
    if busy is not None:
        raise RoundError(f"Round {busy.round_id} is running; wait for it or cancel it before resuming {round_id}.")
    _update_row(store, round_id, status="running", pid=os.getpid(), error=None)


def cancel_round(store: Store, round_id: str, *, grace_s: float | None = None) -> RoundRecord:
    """Stop a round's process (SIGTERM, then SIGKILL after the grace period) and mark it cancelled."""
    row = _get_row(store, round_id)
    if row.status in FINAL_STATUSES:
        raise RoundError(f"Round {round_id} is already {row.status}.")
    if grace_s is None:
        settings = load_round_settings(Path(row.folder)) if row.folder else None
        grace_s = settings.rounds.cancel_grace_s if settings else 10.0
    _update_row(store, round_id, status="cancelled", error="Cancelled by the user.",
                finished_at=datetime.now(UTC).replace(tzinfo=None))
    pid = row.pid
    if pid and pid != os.getpid() and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            log.warning("Round %s (pid %d) ignored SIGTERM; sending SIGKILL", round_id, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
    return _get_row(store, round_id)


def launch_round(settings: Settings, *, round_id: str | None = None, resume: bool = False,
                 extra_env: Mapping[str, str] | None = None, store: Store | None = None) -> tuple[str, int]:
    """Start a round (or resume one) as a detached background process; returns (round_id, pid).

    The checks and the round's 'running' row happen HERE, before the process starts: the page or command
    that launched it sees it running at once (the child needs seconds to import its libraries), and a
    second click meets "one round at a time" instead of starting a second process. The child only runs
    the stages (``round execute``). The settings are written to the round folder and the child reads
    them from there, so the round runs with exactly what the caller had (in-process overrides included).
    Output goes to ``round.log``.
    """
    from rlhf.runtime import open_store, spawn_detached

    store = store or open_store(settings)
    if resume:
        if round_id is None:
            raise RoundError("Name the round to resume.")
        prepare_resume(store, round_id)
    else:
        round_id = create_round(store, settings, round_id).round_id
    folder = Path(_get_row(store, round_id).folder or round_folder(settings, round_id))
    args = ["-c", "from rlhf.cli.rounds import main; main()", "execute", round_id,
            "--data-dir", str(Path(settings.data_dir).resolve()), "--no-progress"]
    try:
        pid = spawn_detached(args, RoundPaths(folder).log, extra_env)
    except OSError as exc:
        _update_row(store, round_id, status="failed", error=f"The round's process could not start: {exc}",
                    finished_at=datetime.now(UTC).replace(tzinfo=None))
        raise RoundError(f"Round {round_id} could not start its process: {exc}") from exc
    _update_row(store, round_id, pid=pid)
    log.info("Round %s launched in the background (pid %d)", round_id, pid)
    return round_id, pid


# ----------------------------------------------------------------------------------- reading rounds
def round_status(store: Store, round_id: str) -> dict[str, Any]:
    """A round's row plus what only its folder knows: effective status, finished stages, live progress."""
    row = _get_row(store, round_id)
    folder = Path(row.folder) if row.folder else None
    return {
        "round_id": row.round_id, "status": effective_status(row), "stored_status": row.status, "stage": row.stage,
        "pid": row.pid, "error": row.error, "policy_id": row.policy_id, "parent_policy_id": row.parent_policy_id,
        "reward_model_id": row.reward_model_id, "folder": row.folder, "created_at": row.created_at,
        "finished_at": row.finished_at, "timings": row.timings or {}, "metrics": row.metrics or {},
        "completed_stages": completed_stages(folder) if folder else [],
        "progress": read_progress(folder) if folder else {},
    }


def list_round_summaries(store: Store) -> list[dict[str, Any]]:
    """Every round (oldest first) with its effective status and headline metrics."""
    from storage.rounds import list_rounds

    with store.transaction() as con:
        rows = list_rounds(con)
    return [{"round_id": r.round_id, "status": effective_status(r), "stage": r.stage, "created_at": r.created_at,
             "finished_at": r.finished_at, "policy_id": r.policy_id, "reward_model_id": r.reward_model_id,
             "error": r.error, "metrics": r.metrics or {}, "timings": r.timings or {}, "folder": r.folder}
            for r in rows]


# ----------------------------------------------------------------------------------- dashboard helpers
_CURVES = ("reward/score", "kl/mean", "reward/validity_rate", "loss/policy", "loss/value", "entropy")


def live_ppo_metrics(folder: str | Path) -> Any:
    """Per-step PPO metrics of a round from its folder (while it runs, before ingestion), long form."""
    import pandas as pd

    rows = {}
    for row in _read_jsonl(RoundPaths(Path(folder)).metrics):
        rows[int(row["step"])] = row
    records = [{"step": s, "metric": k, "value": v} for s, row in sorted(rows.items())
               for k, v in row.items() if k != "step" and v is not None]
    return pd.DataFrame.from_records(records, columns=["step", "metric", "value"])


def round_curves(store: Store, round_id: str) -> Any:
    """A finished round's ingested PPO metrics in long form (step, metric, value)."""
    import pandas as pd

    from storage.rounds import training_metrics_frame

    with store.transaction() as con:
        wide = training_metrics_frame(con, run_id=f"{round_id}-ppo")
    if wide.empty:
        return pd.DataFrame(columns=["step", "metric", "value"])
    long = wide.drop(columns=["run_id", "run_kind"]).melt(id_vars="step", var_name="metric", value_name="value")
    return long.dropna(subset=["value"])


def round_evaluation(store: Store, round_id: str) -> Any:
    """A finished round's held-out evaluation table, one row per policy and baseline, with its role.

    Columns: ``role`` (new policy, parent, zero-shot, baseline), ``policy`` and the metrics of
    :func:`rlhf.evaluation.evaluate_lists` (HR/NDCG with 95% bootstrap intervals, validity, diversity,
    novelty, coverage), and for every other row ``paired_diff`` / ``paired_lo`` / ``paired_hi``: the new
    policy's NDCG@N minus theirs over the same shoppers, the interval that says whether the round won
    (older reports have none, or none for the baseline rows: those cells stay empty); ``reasons_verdict``
    for the parent and zero-shot rows: the new policy's share of grounded reasons minus theirs, paired,
    in words with its interval (:mod:`rlhf.reasons`). Empty when the round stored no evaluation (no
    held-out contexts, or not done).
    """
    import pandas as pd

    from rlhf.evaluation import paired_verdict, verdict_in_words
    from storage.rounds import list_evaluations

    with store.transaction() as con:
        evaluations = list_evaluations(con, round_id=round_id)
    report = evaluations[-1]["metrics"] if evaluations else {}
    table = pd.DataFrame.from_records(report.get("table") or [])
    if table.empty:
        return pd.DataFrame(columns=["role", "policy"])
    roles = {report.get("policy_id"): "new policy", report.get("previous_policy_id"): "parent"}
    roles.setdefault(report.get("zero_shot_policy_id"), "zero-shot")
    if report.get("previous_policy_id") == report.get("zero_shot_policy_id"):
        roles[report.get("previous_policy_id")] = "parent (zero-shot)"
    table.insert(0, "role", [roles.get(p, "baseline" if k == "baseline" else "policy")
                             for p, k in zip(table["policy"], table.get("kind", [""] * len(table)))])
    differences = report.get("ndcg_difference") or {}  # reports stored before 2026-12-06 have none
    for column, key in (("paired_diff", "mean"), ("paired_lo", "lo"), ("paired_hi", "hi")):
        table[column] = [(differences.get(p) or {}).get(key) for p in table["policy"]]
    table["verdict"] = [paired_verdict(lo, hi) for lo, hi in zip(table["paired_lo"], table["paired_hi"])]
    reasons = report.get("reasons_difference") or {}  # reports stored before 2026-12-06 (afternoon) have none
    table["reasons_verdict"] = [verdict_in_words(reasons.get(p)) for p in table["policy"]]
    return table


def zero_shot_verdicts(store: Store, round_id: str | None = None) -> dict[str, str | None]:
    """:func:`rlhf.evaluation.zero_shot_verdict` (NDCG) of every round (or only ``round_id``) that stored an
    evaluation, by round id."""
    return {rid: verdicts["ndcg"] for rid, verdicts in round_verdicts(store, round_id).items()}


def round_verdicts(store: Store, round_id: str | None = None) -> dict[str, dict[str, str | None]]:
    """Every round's (or only ``round_id``'s) verdicts against the zero-shot model, ``{"ndcg": ...,
    "reasons": ...}`` (:func:`rlhf.evaluation.zero_shot_verdict`), by round id, from one read."""
    from rlhf.evaluation import zero_shot_verdict
    from storage.rounds import list_evaluations

    with store.transaction() as con:
        evaluations = list_evaluations(con, round_id=round_id)
    reports = {e["round_id"]: e["metrics"] for e in evaluations if e["round_id"]}  # the latest wins
    return {rid: {m: zero_shot_verdict(report, m) for m in ("ndcg", "reasons")} for rid, report in reports.items()}


def rounds_metrics_frame(store: Store) -> Any:
    """One row per round with its headline metrics, for the charts across rounds."""
    import pandas as pd

    verdicts = round_verdicts(store)
    rows = []
    for i, r in enumerate(list_round_summaries(store), start=1):
        rows.append({"round": i, "round_id": r["round_id"], "status": r["status"], "policy_id": r["policy_id"],
                     **{k: v for k, v in r["metrics"].items() if not isinstance(v, (dict, list))},
                     "rm_heldout_pairs": rm_heldout_pairs(r["metrics"]),
                     "ndcg_vs_zero_shot": verdicts.get(r["round_id"], {}).get("ndcg"),
                     "reasons_vs_zero_shot": verdicts.get(r["round_id"], {}).get("reasons"),
                     "seconds": sum(v for v in r["timings"].values() if isinstance(v, (int, float)))})
    return pd.DataFrame.from_records(rows)


def rm_heldout_pairs(round_metrics: Mapping[str, Any]) -> int | None:
    """How many held-out pairs the round's reward-model accuracy was measured on (None: not recorded).

    Shown beside the accuracy everywhere: a round with a few dozen labels holds out two or three pairs,
    and "accuracy 0.000" on two pairs says nothing about the model.
    """
    n = _dig(round_metrics, "rm_counts", "examples_heldout")
    return int(n) if isinstance(n, (int, float)) else None


def model_registry(store: Store) -> dict[str, Any]:
    """The reward models and policies registered in the store, as frames for the Training page."""
    import pandas as pd

    from rlhf.reward.registry import method_of
    from storage.generations import list_policies
    from storage.reward_models import list_reward_models

    with store.transaction() as con:
        rms = list_reward_models(con)
        policies = list_policies(con)
    rm_frame = pd.DataFrame.from_records([
        {"rm_id": r.rm_id, "round_id": r.round_id, "method": method_of(r),
         "backbone": r.backbone,
         "heldout_accuracy": (r.metrics or {}).get("heldout_accuracy"),
         "heldout_pairs": _dig(r.metrics, "heldout", "n"),
         "gold_accuracy": (r.metrics or {}).get("gold_accuracy"), "ece": (r.metrics or {}).get("heldout_ece"),
         "train_examples": _dig(r.card, "training", "n_train"), "created_at": r.created_at, "path": r.path}
        for r in rms
    ], columns=["rm_id", "round_id", "method", "backbone", "heldout_accuracy", "heldout_pairs", "gold_accuracy", "ece",
                "train_examples", "created_at", "path"])
    policy_frame = pd.DataFrame.from_records([
        {"policy_id": p.policy_id, "kind": p.kind, "parent_id": p.parent_id, "round_id": p.round_id,
         "base_model": p.base_model, "adapter_path": p.adapter_path,
         "reward_model": (p.metrics or {}).get("reward_model"), "created_at": p.created_at}
        for p in policies
    ], columns=["policy_id", "kind", "parent_id", "round_id", "base_model", "adapter_path", "reward_model",
                "created_at"])
    return {"reward_models": rm_frame, "policies": policy_frame}
