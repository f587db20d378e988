"""The six stages of a round, each a function of a :class:`RoundContext`; see :mod:`rlhf.rounds`."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rlhf.errors import RoundError
from rlhf.rounds.layout import (
    STAGES,
    UTC,
    RoundCancelled,
    RoundPaths,
    _dig,
    _read_json,
    _read_jsonl,
    _write_json,
)
from rlhf.runtime import jsonable
from rlhf.settings import Settings, with_values
from storage import Store
from storage.paths import absolute_within, relative_within, relocated
from storage.records import Generation, ListItem, Pair, Policy, RewardModelRecord

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------- the context a stage sees
@dataclass
class RoundContext:
    """What every stage needs: the round, its folder, its settings and the store (for short units only)."""

    round_id: str
    settings: Settings
    store: Store
    paths: RoundPaths
    progress_bars: bool = True
    #: (stage, total, step, when) of this process's first counted step of the current count: the pace's origin.
    _pace_origin: tuple[str, int | None, int, str] | None = field(default=None, repr=False)

    def set_progress(self, stage: str, step: int | None = None, total: int | None = None, **extra: Any) -> None:
        """Write ``progress.json``. Besides the step it records where this process started counting the
        stage (``pace_step``, ``pace_at``; a new total starts a new count), so that a reader can tell the time
        left at the pace so far (:func:`rlhf.rounds.timing.stage_seconds_left`) after a resume as well as in a
        fresh run."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        if self._pace_origin is None or self._pace_origin[:2] != (stage, total):  # a new count starts
            self._pace_origin = (stage, total, step, now) if step is not None else None
        pace = {"pace_step": self._pace_origin[2], "pace_at": self._pace_origin[3]} if self._pace_origin else {}
        _write_json(self.paths.progress, {
            "stage": stage, "step": step, "total": total, "pid": os.getpid(), "updated_at": now, **pace, **extra,
        })

    def marker(self, stage: str) -> dict[str, Any]:
        data = _read_json(self.paths.marker(stage))
        if data is None:
            raise RoundError(f"Stage {stage!r} of round {self.round_id} has not finished.")
        return data

    @property
    def meta(self) -> dict[str, Any]:
        return _read_json(self.paths.folder / "round.json", {}) or {}

    def portable(self, path: str | Path) -> str:
        """A path for a marker: relative to the data folder when inside it, so a moved store resumes."""
        return relative_within(path, self.settings.data_dir)  # type: ignore[return-value]

    def local(self, written: str | None) -> str | None:
        """The absolute path a marker's (or ``round.json``'s) ``written`` path means here. An absolute one was
        written before paths were relative, perhaps in the folder the store had before a move or a copy: it
        means the same file in this data folder (:func:`storage.paths.relocated`), not the old folder's."""
        if written is not None and Path(written).is_absolute():
            written = relocated(written, Path(self.settings.data_dir).expanduser().resolve())
        return absolute_within(written, self.settings.data_dir)


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
    return with_values(settings, "store", data_dir=data_dir)


def stage_reward_model(ctx: RoundContext) -> dict[str, Any]:
    """Train the round's reward model from the snapshot (files only; registered at enqueue).

    With ``rounds.ensemble_size`` K > 1, K-1 extra models are trained on bootstrap resamples of the
    training examples (kept in the round folder) so that active selection can use their disagreement.
    """
    from rlhf.reward.train import train_from_snapshot

    settings = ctx.settings
    k = max(1, int(settings.rounds.ensemble_size))
    progress = _ModelsProgress(ctx, k)
    progress.model_started(0)
    snap = _snapshot(ctx)
    record = train_from_snapshot(snap, settings, store=None, round_id=ctx.round_id,  # type: ignore[arg-type]
                                 progress=ctx.progress_bars, on_step=progress.steps_of(0))
    members = [record.path]
    if k > 1:
        members += _train_bootstrap_members(ctx, snap, k - 1, progress)
    m = record.metrics or {}
    return {
        "rm_id": record.rm_id, "backbone": record.backbone, "path": ctx.portable(record.path),
        "metrics": record.metrics, "card": record.card, "members": [ctx.portable(p) for p in members],
        "heldout_accuracy": m.get("heldout_accuracy", _dig(m, "heldout", "accuracy")),
        "loss_history": (record.card or {}).get("loss_history", []),
    }


@dataclass
class _ModelsProgress:
    """The reward_model stage's progress over its ``models`` (the round's model and its bootstrap members): in
    optimizer steps when training reports them (LoRA), so that the time left is known within a model, else
    in models finished (the probe fits in one go)."""

    ctx: RoundContext
    models: int
    steps_seen: bool = False

    def model_started(self, index: int) -> None:
        if not self.steps_seen:
            self.ctx.set_progress("reward_model", index, self.models)

    def steps_of(self, index: int) -> Callable[[int, int], None]:
        def report(step: int, total: int) -> None:  # every model trains as many steps (same-sized resamples)
            self.steps_seen = True
            self.ctx.set_progress("reward_model", index * total + step, self.models * total)
        return report


def _train_bootstrap_members(ctx: RoundContext, snap: Any, n: int, progress: _ModelsProgress) -> list[str]:
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
        progress.model_started(k + 1)
        sample = train.iloc[rng.integers(0, len(train), len(train))].reset_index(drop=True)
        member_id = f"boot{k + 1}"
        folder = ctx.paths.ensemble / "reward_models" / member_id
        if (folder / "card.json").is_file():
            out.append(str(folder.resolve()))
            continue
        result = train_reward_model(sample, settings=local, output_dir=folder, progress=ctx.progress_bars,
                                    on_step=progress.steps_of(k + 1))
        record = save_reward_model(result, rm_id=member_id, store=None, settings=local, metrics={},
                                   round_id=ctx.round_id, extra={"bootstrap_member": k + 1})
        out.append(record.path)
    return out


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


def _drop_metrics_after(path: Path, step: int) -> None:
    """Forget the per-step metrics an interrupted PPO wrote after its last checkpoint: it runs those steps again,
    and the live charts would show the two attempts' curves as one until the new steps replaced them."""
    rows = _read_jsonl(path)
    kept = [row for row in rows if int(row["step"]) <= step]
    if len(kept) < len(rows):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        tmp.replace(path)


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
    parent_adapter = ctx.local(ctx.meta.get("parent_adapter"))
    if parent_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, parent_adapter, is_trainable=True)
    model.train()
    examples = _ppo_examples(snap, settings, tokenizer, _pool_contexts(snap, settings))
    if not examples:
        raise RoundError("No training contexts with enough candidates to run PPO on.")
    scorer = load_reward_model_from_folder(ctx.local(rm["path"]), device=settings.model.device, settings=settings)
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
    _drop_metrics_after(ctx.paths.metrics, resumed_from)
    ctx.set_progress("ppo", trainer.step_count, config.steps)
    history = trainer.train(progress=ctx.progress_bars)
    trainer.save_adapter(ctx.paths.adapter)
    trainer.close()
    final = history[-1] if history else (trainer.history[-1] if trainer.history else {})
    return {"adapter": ctx.portable(ctx.paths.adapter), "steps": config.steps, "resumed_from": resumed_from,
            "n_prompts": len(examples), "final_metrics": final}


# ----------------------------------------------------------------------------------- stage: generate
def _sample(model: Any, tokenizer: Any, views: Sequence[Any], settings: Settings, policy_id: str, round_id: str,
            catalog: set[str], progress: bool, on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    from rlhf.generate import SamplingParams
    from rlhf.prompts import PROMPT_VERSION, prompt_fingerprint
    from storage.ids import new_id

    if not views:
        return []
    p = SamplingParams.from_settings(settings)
    lists = p.sample(model, tokenizer, views, progress=progress, catalog_ids=catalog, on_batch=on_batch)
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
    # Progress counts lists (every policy samples samples_per_context per context), updated after each batch.
    per_context = settings.generation.samples_per_context
    total = per_context * (len(pool) + len(held) + sum(len(todo) for _, todo in missing.values()))
    done = 0
    ctx.set_progress("generate", done, total)

    def counted(lists_so_far: int) -> None:
        ctx.set_progress("generate", done + lists_so_far, total)

    model, tokenizer = _load_for_sampling(settings, ctx.local(ppo["adapter"]))
    new_policy = meta["policy_id"]
    rows = _sample(model, tokenizer, _views(snap, pool + held, settings), settings, new_policy, ctx.round_id, catalog,
                   ctx.progress_bars, counted)
    done = len(rows)
    del model
    # The comparison policies' lists on the evaluation contexts (the comparison and the RM win rates).
    for policy_id, (adapter, todo) in missing.items():
        model, tokenizer = _load_for_sampling(settings, ctx.local(adapter))
        rows += _sample(model, tokenizer, _views(snap, todo, settings), settings, policy_id, ctx.round_id, catalog,
                        ctx.progress_bars, counted)
        del model
        done = len(rows)
    ctx.set_progress("generate", done, total)
    with ctx.paths.generations.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, default=str) + "\n")
    new_rows = [r for r in rows if r["policy_id"] == new_policy]
    return {"n_generations": len(rows), "n_new_policy": len(new_rows), "pool_contexts": len(pool),
            "eval_contexts": len(held),
            "comparison_lists_generated": {p: sum(r["policy_id"] == p for r in rows) for p in missing},
            "validity": sum(r["is_valid"] for r in new_rows) / len(new_rows) if new_rows else None}




def _as_generation(r: Mapping[str, Any]) -> Generation:
    return Generation(
        generation_id=r["generation_id"], context_id=r["context_id"], policy_id=r["policy_id"], raw_text=r["raw_text"],
        items=[ListItem(i["item_id"], i.get("reason", "")) for i in r["items"]], problems=list(r["problems"]),
        is_valid=bool(r["is_valid"]), sampling=r.get("sampling"), prompt_tokens=r.get("prompt_tokens"),
        completion_tokens=r.get("completion_tokens"), round_id=r.get("round_id"),
    )


# ----------------------------------------------------------------------------------- stage: select (+ evaluation)
def _human_eval_pairs(ctx: RoundContext, held_lists: list[Generation], exclude: set[tuple[str, str]],
                      offset: float) -> list[Pair]:
    """``rounds.human_eval_pairs`` pairs of the new policy's list against its parent's on held-out shoppers.

    No model chooses them, so their labels estimate how often annotators prefer the new policy (the
    Agreement page's human win rate); being on held-out shoppers, they never train a reward model
    (:mod:`rlhf.reward.dataset`). They sit in the middle of the round's priorities, so that they are
    labelled alongside its own pairs rather than after all of them.
    """
    from rlhf.pairs import plan_pairs

    settings, meta = ctx.settings, ctx.meta
    new_policy, parent = meta["policy_id"], meta["parent_policy_id"]
    if settings.rounds.human_eval_pairs <= 0 or not parent:
        return []
    mine = [g for g in held_lists if g.policy_id == new_policy]
    theirs = [g for g in held_lists if g.policy_id == parent]
    existing = exclude | {(b, a) for a, b in exclude}
    pairs, _ = plan_pairs("new_vs_previous", mine, theirs, existing, overlap_target=settings.queue.overlap_target,
                          limit=settings.rounds.human_eval_pairs, round_id=ctx.round_id, seed=settings.generation.seed)
    reason = "human evaluation: against its parent, held-out shopper"
    return [replace(p, priority=offset + p.priority / 2, selection_reason=reason) for p in pairs]


def stage_select(ctx: RoundContext) -> dict[str, Any]:
    """Score the new lists with the round's reward model(s), choose the pairs to label, evaluate."""

    from rlhf.active import (
        SelectionShares,
        bootstrap_scores,
        round_candidate_pairs,
        round_priority_offset,
        select_pairs,
        to_pair_records,
    )
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
    scorers = [load_reward_model_from_folder(ctx.local(p), device=settings.model.device, settings=settings)
               for p in rm["members"]]
    batch = settings.reward_model.eval_batch_size
    scores = bootstrap_scores([lambda p, r, s=s: s.score(p, r, batch_size=batch) for s in scorers], prompts, responses)
    score_of = dict(zip(ids, scores[0].tolist()))
    ctx.set_progress("select", 1, 2)

    # Candidate pairs on training contexts: at least one list of the new policy, two different lists.
    candidates = round_candidate_pairs([g for g in by_id.values() if g.context_id not in held], new_policy)
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
                              priority_offset=offset)
    human_eval = _human_eval_pairs(ctx, [by_id[g] for g in ids if by_id[g].context_id in held], exclude, offset)
    with ctx.paths.pairs.open("w", encoding="utf-8") as fh:
        for p in [*records, *human_eval]:
            fh.write(json.dumps(p.__dict__, default=str) + "\n")

    evaluation = _evaluate(ctx, snap, by_id, score_of, sorted(held), new_policy, parent, zero)
    _write_json(ctx.paths.evaluation, evaluation)
    ctx.set_progress("select", 2, 2)
    reasons: dict[str, int] = {}
    for p in records:
        reasons[p.selection_reason or ""] = reasons.get(p.selection_reason or "", 0) + 1
    return {"candidates": len(candidates), "selected": len(records), "by_reason": reasons,
            "human_eval_pairs": len(human_eval),
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
    from storage.generations import find_policy, insert_generations, insert_pairs, upsert_policy
    from storage.ids import new_id
    from storage.reward_models import insert_reward_model
    from storage.rounds import get_round, insert_evaluation, insert_training_metrics, update_round

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
    # What it trained on stays beside what it measured (the row held only the former while it ran).
    round_metrics = {"usable_labels": ctx.meta.get("usable_labels_at_start"),
                     **_round_metrics(rm, ppo, gen, sel, evaluation, settings)}
    timings = _timings(ctx)
    ppo_run = f"{ctx.round_id}-ppo"
    rm_run = f"{ctx.round_id}-rm"
    with ctx.store.transaction() as con:
        # A cancel that committed first wins: nothing is ingested (the one unit of work rolls back).
        if get_round(con, ctx.round_id).status == "cancelled":
            raise RoundCancelled(f"Round {ctx.round_id} was cancelled before its outputs were ingested; the store "
                                 "is unchanged.")
        already = find_policy(con, new_policy)
        if already is None:
            upsert_policy(con, Policy(
                policy_id=new_policy, kind="llm", base_model=settings.model.policy, adapter_path=ctx.local(ppo["adapter"]),
                parent_id=meta["parent_policy_id"], round_id=ctx.round_id,
                metrics={"algo": "ppo", "steps": ppo.get("steps"), "reward_model": rm["rm_id"], **final},
            ))
            insert_reward_model(con, RewardModelRecord(
                rm_id=rm["rm_id"], backbone=rm["backbone"], path=ctx.local(rm["path"]), round_id=ctx.round_id,
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
        "rm_heldout_accuracy_unselected": _dig(rm.get("metrics"), "heldout_unselected", "accuracy"),
        "rm_heldout_unselected_pairs": _dig(rm.get("metrics"), "heldout_unselected", "n"),
        "rm_counts": _dig(rm.get("card"), "data", "counts"),
        "ppo_reward": final.get("reward/score"),
        "ppo_kl": final.get("kl/mean"),
        "ppo_validity": final.get("reward/validity_rate"),
        "generation_validity": gen.get("validity"),
        "pairs_enqueued": (sel.get("selected") or 0) + (sel.get("human_eval_pairs") or 0),
        "human_eval_pairs": sel.get("human_eval_pairs", 0),
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


