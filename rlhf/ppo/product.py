"""The product's PPO inputs: prompts from the store, the list grammar as a constraint, the real reward.

This is the glue between the generic trainer and RecFeedback's other modules:

- :func:`load_ppo_examples` — training contexts rendered into prompts exactly as generation does
  (:func:`rlhf.prompts.render_prompt`), with the metadata the reward and the constraint need. Reads
  the store in ONE short transaction, then renders outside it; :func:`ppo_example` is one such
  example (rounds build theirs from a snapshot with it too).
- :class:`ListGrammarConstraint` — :mod:`rlhf.constrained`'s per-row list grammar as a
  :class:`~rlhf.ppo.trainer.LogitsConstraint`: the same masks at sampling and in log-prob recomputation.
- :func:`list_structure` — :func:`rlhf.parsing.parse_list` reduced to the counts the structural
  reward terms use.
- :func:`build_product_reward` — RM score (``RewardScorer.score``) + structure + no-EOS penalty.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlhf.ppo.rewards import ComposedReward, ListStructure, product_reward

log = logging.getLogger(__name__)


def load_ppo_examples(
    store: Any, settings: Any, tokenizer: Any, *, split: str | None = "train", limit: int | None = None
) -> list[dict[str, Any]]:
    """Prompts (and metadata) for the contexts of ``split`` (all when None), at most ``limit``."""
    from rlhf.prompts import PromptTooLongError, build_context_views, render_prompt
    from storage.contexts import list_contexts

    with store.transaction() as con:
        contexts = list_contexts(con, split=split, limit=limit)
        views = build_context_views(con, contexts, attributes=settings.contexts.item_attributes)
    n_items = settings.generation.list_length
    max_tokens = min(settings.ppo.max_prompt_tokens, settings.generation.max_prompt_tokens)
    examples, skipped = [], 0
    for view in views:
        if len(view.candidates) < n_items:
            skipped += 1
            continue
        try:
            prompt = render_prompt(tokenizer, view, n_items, max_tokens)
        except PromptTooLongError:
            skipped += 1
            continue
        examples.append(ppo_example(view, prompt))
    if skipped:
        log.info("Skipped %d contexts (too few candidates or prompt too long).", skipped)
    return examples


def ppo_example(view: Any, prompt: str) -> dict[str, Any]:
    """One PPO example: the prompt and what the grammar and the structural reward need to know about
    its context (candidate ids, short ids, and titles, so the reward parses as generation does; categories
    and the history's titles, so it can tell a reason from a copied product line)."""
    return {
        "prompt": prompt,
        "context_id": view.context_id,
        "candidates": view.candidate_ids,
        "short_ids": list(view.short_ids),
        "short_to_item": view.short_to_item,
        "candidate_titles": {c.item_id: c.title for c in view.candidates},
        "candidate_categories": {c.item_id: c.category for c in view.candidates},
        "history_titles": [h.title for h in view.history],
    }


class ListGrammarConstraint:
    """rlhf.constrained's list grammar for each example's candidates (a LogitsConstraint)."""

    def __init__(self, tokenizer: Any, n_items: int, max_reason_tokens: int, forbid_example: bool = True) -> None:
        self.tokenizer = tokenizer
        self.n_items = int(n_items)
        self.max_reason_tokens = int(max_reason_tokens)
        self.forbid_example = bool(forbid_example)
        self._cache: dict[tuple[str, ...], Any] = {}

    @classmethod
    def from_settings(cls, tokenizer: Any, settings: Any) -> ListGrammarConstraint:
        """The grammar ``settings.generation`` samples lists with, so PPO samples and scores the same."""
        g = settings.generation
        return cls(tokenizer, g.list_length, g.max_reason_tokens, g.forbid_example)

    def _constraints(self, examples: Sequence[Mapping[str, Any]]) -> list[Any]:
        from rlhf.constrained import list_constraint

        out = []
        for ex in examples:
            key = tuple(ex["short_ids"])
            if key not in self._cache:
                self._cache[key] = list_constraint(self.tokenizer, list(key), self.n_items, self.max_reason_tokens,
                                                   self.forbid_example)
            out.append(self._cache[key])
        return out

    def processor(self, examples: Sequence[Mapping[str, Any]], prompt_length: int) -> Any:
        from rlhf.constrained import ConstrainedListProcessor

        return ConstrainedListProcessor(self._constraints(examples), prompt_length)

    def apply(self, logits: Any, completion_ids: Any, examples: Sequence[Mapping[str, Any]]) -> Any:
        from rlhf.constrained import apply_constraint

        return apply_constraint(logits, completion_ids, self._constraints(examples))


_COUNT_RE = re.compile(r"^(\d+)")


def list_structure(text: str, example: Mapping[str, Any], n_items: int, *, count_copies: bool = False) -> ListStructure:
    """Counts for the structural reward terms, from :func:`rlhf.parsing.parse_list`; with ``count_copies``,
    also the kept items whose reason is only a copied candidate line (:func:`copied_line_reasons`)."""
    from rlhf.parsing import parse_list

    parsed = parse_list(text, example.get("short_to_item") or example.get("candidates") or [], n_items,
                        titles=example.get("candidate_titles"))
    kinds = [p["kind"] for p in parsed.problems]
    extra = 0
    for p in parsed.problems:
        if p["kind"] == "too_many":
            m = _COUNT_RE.match(str(p.get("detail", "")))
            extra += int(m.group(1)) if m else 1
    n_duplicate = kinds.count("duplicate")
    n_not_candidate = kinds.count("unknown_id") + kinds.count("not_a_candidate")
    n_candidate = parsed.n_valid + extra + n_duplicate
    return ListStructure(
        n_listed=n_candidate + n_not_candidate,
        n_candidate=n_candidate,
        n_duplicate=n_duplicate,
        is_valid=parsed.is_valid,
        n_kept=parsed.n_valid,
        n_bad_reason=sum(kinds.count(k) for k in ("missing_reason", "copied_example", "other_item_reason")),
        n_copied_reason=copied_line_reasons(parsed.items, example) if count_copies else 0,
    )


def copied_line_reasons(items: Sequence[Any], example: Mapping[str, Any]) -> int:
    """How many of ``items`` (parsed list items) have a reason that is a candidate's copied line and nothing
    grounded besides (:func:`rlhf.reasons.line_verdicts`' ``copy``, the evaluation's rule), not counting the
    reasons the parser already holds against the list as another item's title (a missing reason or the
    prompt's example is never a ``copy``)."""
    from rlhf.parsing import describes_other_item
    from rlhf.reasons import line_verdicts

    titles = example.get("candidate_titles") or {}
    categories = example.get("candidate_categories") or {}
    lines = [(it.reason, titles.get(it.item_id), categories.get(it.item_id)) for it in items]
    verdicts = line_verdicts(lines, example.get("history_titles") or [], titles.values())
    return sum(
        verdict == "copy" and describes_other_item(it.reason, it.item_id, titles) is None
        for it, verdict in zip(items, verdicts)
    )


def rm_normalization(scorer: Any, settings: Any) -> tuple[float, float]:
    """(shift, scale) that put the reward-model score on a unit scale, or (0, 1) to keep it raw.

    A Bradley-Terry model's scores have an arbitrary scale: one trained on few labels may spread its scores
    over 0.01 while a cut-off response costs 1.0, and PPO then only learns the structural terms.
    ``settings.ppo.rm_normalize`` uses the mean/std the model's card recorded over the lists it was
    trained on (older models without them stay raw, with a warning).
    """
    if not settings.ppo.rm_normalize:
        return 0.0, 1.0
    stats = getattr(scorer, "score_stats", None)
    if not stats or not float(stats.get("std") or 0.0) > 1e-6:
        log.warning("Reward model %s records no score spread; its scores enter the PPO reward unscaled.",
                    getattr(scorer, "rm_id", None))
        return 0.0, 1.0
    return float(stats["mean"]), float(stats["std"])


def build_product_reward(scorer: Any | None, settings: Any) -> ComposedReward:
    """The product reward from a ``RewardScorer`` (or None: structure and EOS terms only)."""
    n_items = settings.generation.list_length
    score_fn = None
    if scorer is not None:
        batch_size = getattr(getattr(settings, "reward_model", None), "eval_batch_size", 32)
        shift, scale = rm_normalization(scorer, settings)

        def score_fn(prompts: list[str], responses: list[str]) -> list[float]:
            return [(float(x) - shift) / scale for x in scorer.score(prompts, responses, batch_size=batch_size)]

    return product_reward(
        score_fn,
        lambda text, example: list_structure(text, example, n_items,
                                             count_copies=settings.ppo.own_reasons_count_copies),
        list_length=n_items,
        structure_weight=settings.ppo.structure_weight,
        no_eos_penalty=settings.ppo.no_eos_penalty,
    )


# ---------------------------------------------------------------- one run, end to end
def store_metrics_sink(store: Any, run_id: str, run_kind: str) -> Any:
    """A metrics sink writing each step to ``training_metrics`` in its own short transaction."""
    import math

    from storage.rounds import insert_training_metrics

    def sink(step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        with store.transaction() as con:
            insert_training_metrics(con, run_id, run_kind, [(step, clean)])

    return sink


def warn_if_cap_cuts_lists(config: Any, settings: Any) -> bool:
    """Log a warning (and return True) when PPO's response cap is below the longest constrained list.

    A list cut off by the cap gets no EOS and so the no-EOS penalty: PPO would then learn to shorten
    reasons that generation (whose cap follows the same worst case) accepts.
    """
    from rlhf.generate import constrained_worst_case_tokens

    g = settings.generation
    worst = constrained_worst_case_tokens(g.list_length, g.max_reason_tokens)
    if not config.constrained or config.max_new_tokens >= worst:
        return False
    log.warning("ppo.max_new_tokens=%d is below the longest constrained list (%d tokens for %d items with "
                "max_reason_tokens=%d): such lists are cut off and penalised as having no EOS.",
                config.max_new_tokens, worst, g.list_length, g.max_reason_tokens)
    return True


def run_ppo(
    settings: Any,
    store: Any,
    *,
    algo: str | None = None,
    steps: int | None = None,
    reward_model: str | None = None,
    resume: str | None = None,
    run_id: str | None = None,
    output_dir: str | None = None,
    limit_contexts: int | None = None,
    register_policy: bool = True,
    round_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the configured policy with PPO (or TRL GRPO/RLOO) against the product reward.

    ``reward_model``: a registered reward-model id, None for the latest one, or ``"none"`` to train on
    the structural terms only. ``resume``: a run folder (or checkpoint folder) to continue. Writes the
    run under ``<data_dir>/ppo/<run_id>`` (checkpoints, TensorBoard, ``adapter/``), per-step metrics to
    the store, and (``register_policy``) a ``policies`` row for the new adapter. Returns a summary.
    """
    from pathlib import Path

    from rlhf.errors import RecFeedbackError
    from rlhf.models import load_causal_lm
    from rlhf.ppo.config import PPOConfig
    from storage.ids import new_id

    config = PPOConfig.from_settings(settings.ppo, algo=algo, steps=steps)
    warn_if_cap_cuts_lists(config, settings)
    if resume:
        run_dir = Path(resume)
        if run_dir.name.startswith("step-"):
            run_dir = run_dir.parent.parent
        if not run_dir.is_dir():
            raise RecFeedbackError(f"Cannot resume: {resume} is not a folder.")
        run_id = run_id or run_dir.name
    else:
        run_id = run_id or new_id(config.algo)
        run_dir = Path(output_dir) if output_dir else settings.data_dir / "ppo" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_causal_lm(settings.model.policy, device="cpu", dtype="float32")
    model.train()
    examples = load_ppo_examples(store, settings, tokenizer, split="train", limit=limit_contexts)
    if not examples:
        raise RecFeedbackError("No training contexts to run PPO on. Build contexts first (recfeedback init --demo "
                               "or the data import).")
    scorer = None
    if (reward_model or "").lower() != "none":
        from rlhf.reward.registry import load_reward_model

        try:
            scorer = load_reward_model(store, reward_model, device=settings.model.device, settings=settings)
        except Exception as exc:  # storage NotFoundError or a missing folder
            raise RecFeedbackError(
                f"No usable reward model ({exc}). Train one with `recfeedback rm train`, or pass "
                "--reward-model none to train on the structural terms only."
            ) from exc
    reward = build_product_reward(scorer, settings)
    sink = store_metrics_sink(store, run_id, config.algo)
    log.info("%s run %s: %d prompts, reward model %s, folder %s", config.algo.upper(), run_id, len(examples),
             getattr(scorer, "rm_id", None), run_dir)

    final: dict[str, float] = {}
    if config.algo == "ppo":
        from rlhf.ppo.trainer import PPOTrainer

        constraint = ListGrammarConstraint.from_settings(tokenizer, settings) if config.constrained else None
        trainer = PPOTrainer(config, model, tokenizer, reward, examples, logits_mask_fn=constraint,
                             output_dir=run_dir, metrics_sinks=[sink])
        if resume:
            trainer.load(Path(resume))
        history = trainer.train(progress=progress)
        last = run_dir / "checkpoints" / f"step-{trainer.step_count:06d}"
        if not last.is_dir():
            trainer.save(last)
        adapter_dir = trainer.save_adapter(run_dir / "adapter")
        trainer.close()
        final = history[-1] if history else {}
        is_main = trainer.accelerator.is_main_process
    else:
        from rlhf.ppo.grpo import run_trl

        adapter_dir = run_trl(config, model, tokenizer, reward, examples, output_dir=run_dir, algo=config.algo,
                              resume=resume, metrics_sinks=[sink])
        is_main = True
    if register_policy and is_main:
        from rlhf.generate import default_policy_id
        from storage.generations import upsert_policy
        from storage.records import Policy

        with store.transaction() as con:
            upsert_policy(con, Policy(
                policy_id=run_id, kind="llm", base_model=settings.model.policy, adapter_path=str(adapter_dir),
                parent_id=default_policy_id(settings.model.policy), round_id=round_id,
                metrics={"algo": config.algo, "steps": config.steps, "reward_model": getattr(scorer, "rm_id", None),
                         **{k: v for k, v in final.items() if not k.startswith("time/")}},
            ))
    return {"run_id": run_id, "run_dir": str(run_dir), "adapter": str(adapter_dir), "algo": config.algo,
            "final_metrics": final, "reward_model": getattr(scorer, "rm_id", None), "n_prompts": len(examples)}
