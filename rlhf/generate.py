"""Batched sampling of recommendation lists, and storing them as generations.

Public API (stable):

- :class:`SamplingParams` — every knob of one sampling run (``from_settings`` reads settings.generation;
  ``sample(model, tokenizer, views)`` runs :func:`generate_lists` with them).
- :func:`generate_lists(model, tokenizer, views, *, n_items, samples_per_context, temperature, top_p,
  top_k, max_new_tokens, seed, constrained, batch_size, max_prompt_tokens, max_reason_tokens,
  forbid_example=True, progress=True) -> list[GeneratedList]` — pure model work, no store. Rows come back in input
  order: for each view, its samples ``0..samples_per_context-1``.
- :func:`generate_for_store(store, settings, policy_id=None, *, context_ids=None, n_contexts=None, ...)
  -> GenerationRun` — reads contexts in one short transaction, samples WITHOUT holding the store,
  then writes the policy row and all generations in one transaction.
- :func:`default_policy_id(spec)` — the policy id of an untrained base model (``base-<model key>``).
- :func:`left_pad(sequences, pad_id)` — (input_ids, attention_mask) as generation builds them.

Batching. Prompts are left-padded by hand (pad id = EOS, attention mask built from the true lengths),
because SmolLM2's pad token equals its EOS ``<|im_end|>``, which also appears inside every chat prompt:
a mask derived from the pad id would hide real prompt tokens. Rows are grouped by prompt length to
waste little padding; the grouping depends only on the inputs, so a run is reproducible: the same
model, views, parameters and ``seed`` give the same lists (each batch re-seeds torch with
``seed + batch index``). A completion ends at its first EOS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rlhf.constrained import ConstrainedListProcessor, constraint_for_view
from rlhf.errors import RecFeedbackError
from rlhf.parsing import ParsedList, parse_list
from rlhf.prompts import PROMPT_VERSION, ContextView, prompt_fingerprint, render_prompt_with_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """How lists are sampled; stored (as a dict) with every generation."""

    n_items: int = 5
    samples_per_context: int = 2
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    max_new_tokens: int = 160
    max_prompt_tokens: int = 1536
    max_reason_tokens: int = 22
    seed: int = 1234
    constrained: bool = True
    batch_size: int = 8
    forbid_example: bool = True

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SamplingParams:
        """Parameters from settings.generation, with explicit overrides (None values are ignored)."""
        g = settings.generation
        values = {
            "n_items": g.list_length, "samples_per_context": g.samples_per_context, "temperature": g.temperature,
            "top_p": g.top_p, "top_k": g.top_k, "max_new_tokens": g.max_new_tokens, "max_prompt_tokens": g.max_prompt_tokens,
            "max_reason_tokens": g.max_reason_tokens, "seed": g.seed, "constrained": g.constrained, "batch_size": g.batch_size,
            "forbid_example": g.forbid_example,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sample(self, model: Any, tokenizer: Any, views: Sequence[ContextView], *, progress: bool = True,
               catalog_ids: Any = None, on_batch: Callable[[int], None] | None = None) -> list[GeneratedList]:
        """:func:`generate_lists` with these parameters: one place that maps them onto its arguments,
        for every caller that samples as the settings say (the store, rounds)."""
        return generate_lists(
            model, tokenizer, views, n_items=self.n_items, samples_per_context=self.samples_per_context,
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_new_tokens=self.max_new_tokens,
            seed=self.seed, constrained=self.constrained, batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens, max_reason_tokens=self.max_reason_tokens,
            forbid_example=self.forbid_example, progress=progress, catalog_ids=catalog_ids, on_batch=on_batch,
        )


@dataclass(frozen=True)
class GeneratedList:
    """One sampled list: the exact prompt, the raw completion, and its parse.

    ``completion_ids`` are the sampled tokens up to and including the first EOS (``finished``), or
    all ``max_new_tokens`` of them when the list was cut off; ``raw_text`` is their decoding without
    special tokens. The prompt's ids are ``tokenizer(prompt, add_special_tokens=False)["input_ids"]``
    (``prompt_tokens`` of them); :func:`left_pad` rebuilds a batch exactly as sampling saw it.
    """

    context_id: str
    sample_index: int
    prompt: str
    raw_text: str
    parsed: ParsedList
    prompt_tokens: int
    completion_tokens: int
    completion_ids: list[int]
    finished: bool
    constrained: bool
    prompt_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationRun:
    """What :func:`generate_for_store` did."""

    policy_id: str
    generation_ids: list[str]
    n_contexts: int
    n_valid: int
    seconds: float
    completion_tokens: int
    params: SamplingParams

    @property
    def n_generations(self) -> int:
        return len(self.generation_ids)

    @property
    def validity(self) -> float:
        return self.n_valid / self.n_generations if self.generation_ids else 0.0


def _context_window(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None)


def _eos_ids(model: Any, tokenizer: Any, constrained: bool) -> list[int]:
    ids = [int(tokenizer.eos_token_id)]
    if not constrained:  # unconstrained: also stop on any EOS the model's generation config names
        cfg = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for i in cfg if isinstance(cfg, list) else ([cfg] if cfg is not None else []):
            if int(i) not in ids:
                ids.append(int(i))
    return ids


def constrained_worst_case_tokens(n_items: int, max_reason_tokens: int) -> int:
    """Most tokens a constrained list can take: per line a head of at most 8 one-character tokens
    (``"1. C07 |"``), the capped reason and a newline, plus EOS."""
    return n_items * (8 + max_reason_tokens + 1) + 1


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) tensors for token lists, padded on the left with ``pad_id``.

    The mask comes from the true lengths, never from comparing ids with the pad id (SmolLM2's pad
    id is its EOS, which occurs inside every chat prompt). PPO uses this to rebuild the batches.
    """
    import torch

    width = max((len(s) for s in sequences), default=0)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in sequences], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], dtype=torch.long, device=device)
    return ids, mask


def generate_lists(
    model: Any,
    tokenizer: Any,
    views: Sequence[ContextView],
    *,
    n_items: int = 5,
    samples_per_context: int = 2,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 50,
    max_new_tokens: int = 160,
    seed: int = 1234,
    constrained: bool = True,
    batch_size: int = 8,
    max_prompt_tokens: int = 1536,
    max_reason_tokens: int = 22,
    forbid_example: bool = True,
    progress: bool = True,
    catalog_ids: Any = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[GeneratedList]:
    """Sample ``samples_per_context`` lists per view, in left-padded batches; parse each.

    ``temperature == 0`` means greedy decoding. With ``constrained`` the
    :mod:`rlhf.constrained` grammar applies (item ids are candidates, format exact; with
    ``forbid_example`` no reason repeats the prompt's example reason).
    ``catalog_ids`` (optional) lets the parser tell real non-candidate items from invented ids.
    ``on_batch`` (optional) hears the number of lists sampled so far after each batch: live progress for a
    caller without a terminal (a background round's progress file).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    if samples_per_context < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("samples_per_context, batch_size and max_new_tokens must be at least 1")
    worst = constrained_worst_case_tokens(n_items, max_reason_tokens)
    if constrained and worst > max_new_tokens:
        log.warning("max_new_tokens=%d may cut constrained lists short (up to %d tokens for %d items with "
                    "max_reason_tokens=%d): such lists are stored as too_few.", max_new_tokens, worst, n_items,
                    max_reason_tokens)
    window = _context_window(model)
    budget = max_prompt_tokens if window is None else min(max_prompt_tokens, window - max_new_tokens)
    rendered = [render_prompt_with_info(tokenizer, v, n_items, budget) for v in views]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text, _ in rendered]
    rows = [(vi, s) for vi in range(len(views)) for s in range(samples_per_context)]
    order = sorted(range(len(rows)), key=lambda r: (len(encoded[rows[r][0]]), r))
    eos_ids = _eos_ids(model, tokenizer, constrained)
    pad_id = int(tokenizer.eos_token_id)
    device = next(model.parameters()).device
    results: dict[int, GeneratedList] = {}
    bar = tqdm(total=len(rows), desc="lists", unit="list", disable=not progress)
    try:
        for b, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start:start + batch_size]
            input_ids, attention = left_pad([encoded[rows[r][0]] for r in batch], pad_id, device=device)
            width = input_ids.shape[1]
            kwargs: dict[str, Any] = {
                "input_ids": input_ids, "attention_mask": attention, "max_new_tokens": max_new_tokens,
                "pad_token_id": pad_id, "eos_token_id": eos_ids,
            }
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if constrained:
                constraints = [constraint_for_view(tokenizer, views[rows[r][0]], n_items, max_reason_tokens,
                                                   forbid_example) for r in batch]
                kwargs["logits_processor"] = LogitsProcessorList([ConstrainedListProcessor(constraints, width)])
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                out = model.generate(**kwargs)
            completions = out[:, width:].tolist()
            for r, ids in zip(batch, completions):
                vi, sample = rows[r]
                end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
                finished = end is not None
                kept = ids[: end + 1] if finished else ids
                text = tokenizer.decode(kept[:-1] if finished else kept, skip_special_tokens=True)
                view = views[vi]
                results[r] = GeneratedList(
                    context_id=view.context_id, sample_index=sample, prompt=rendered[vi][0], raw_text=text,
                    parsed=parse_list(text, view, n_items, catalog_ids), prompt_tokens=len(encoded[vi]),
                    completion_tokens=len(kept), completion_ids=kept, finished=finished, constrained=constrained,
                    prompt_info=rendered[vi][1],
                )
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(results))
    finally:
        bar.close()
    return [results[r] for r in range(len(rows))]


def default_policy_id(spec: str) -> str:
    """The policy id of an untrained base model: ``base-<short model key>``."""
    from rlhf.models import resolve_model_source

    return "base-" + resolve_model_source(spec).key().lower()


def _sampling_record(params: SamplingParams, g: GeneratedList) -> dict[str, Any]:
    record = {k: v for k, v in params.as_dict().items() if k not in ("samples_per_context", "batch_size")}
    record.update(
        sample_index=g.sample_index, finished=g.finished, prompt_version=PROMPT_VERSION,
        prompt_sha1=prompt_fingerprint(g.prompt), history_kept=g.prompt_info.get("history_kept"),
    )
    return record


def generate_for_store(
    store: Any,
    settings: Any,
    policy_id: str | None = None,
    *,
    context_ids: Sequence[str] | None = None,
    n_contexts: int | None = None,
    split: str | None = "train",
    model_spec: str | None = None,
    samples_per_context: int | None = None,
    constrained: bool | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    round_id: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> GenerationRun:
    """Sample lists for contexts with a policy and store them as generations.

    Policy ids starting with ``baseline-`` name the non-LLM baselines of :mod:`rlhf.baselines`.
    Contexts: ``context_ids`` if given, else up to ``n_contexts`` (settings.generation.contexts_per_run)
    contexts of ``split`` (None: any) that have no generation of this policy yet, in id order.
    Policy: an existing policy row is used as stored (base model + adapter); a new ``policy_id`` (or
    none: :func:`default_policy_id`) is registered as an untrained LLM policy of ``model_spec``
    (settings.model.policy). Baseline policies are delegated to :mod:`rlhf.baselines`.
    ``model``/``tokenizer`` may be passed in (tests, benchmarks, PPO) to skip loading.
    """
    from rlhf.prompts import build_context_views
    from storage import NotFoundError
    from storage.catalog import existing_item_ids
    from storage.contexts import get_contexts
    from storage.generations import (
        contexts_without_generations,
        find_policy,
        insert_generations,
        upsert_policy,
    )
    from storage.ids import new_id
    from storage.records import Generation, Policy

    spec = model_spec or settings.model.policy
    policy_id = policy_id or default_policy_id(spec)
    params = SamplingParams.from_settings(
        settings, samples_per_context=samples_per_context, constrained=constrained, seed=seed,
        batch_size=batch_size, temperature=temperature,
    )
    with store.transaction() as con:
        if context_ids is not None:  # an unknown id is an error for a baseline as much as for a model
            found = get_contexts(con, list(context_ids))
            missing = [c for c in context_ids if c not in found]
            if missing:
                raise NotFoundError(f"No context with id {missing[0]!r} ({len(missing)} unknown).")
        policy: Policy | None = find_policy(con, policy_id)
        if policy is None and policy_id.startswith("baseline-"):
            policy = Policy(policy_id=policy_id, kind="baseline")  # registered by rlhf.baselines
        if policy is not None and policy.kind == "baseline":
            from rlhf.baselines import make_baseline_generations

            baseline_ids = None if context_ids is None else list(context_ids)
        else:
            if context_ids is not None:
                contexts = [found[c] for c in context_ids]
            else:
                wanted = n_contexts if n_contexts is not None else settings.generation.contexts_per_run
                ids = contexts_without_generations(con, policy_id, split=split, limit=wanted)
                contexts = list(get_contexts(con, ids).values())
                contexts.sort(key=lambda c: c.context_id)
            views = build_context_views(con, contexts, attributes=settings.contexts.item_attributes)
            catalog = existing_item_ids(con)
    if policy is not None and policy.kind == "baseline":
        return make_baseline_generations(store, settings, policy_id, context_ids=baseline_ids, n_contexts=n_contexts,
                                         split=split)
    if policy is None:
        policy = Policy(policy_id=policy_id, kind="llm", base_model=spec, round_id=round_id)
    if not views:
        log.info("No contexts to generate for (policy %s).", policy_id)
        return GenerationRun(policy_id, [], 0, 0, 0.0, 0, params)
    if model is None or tokenizer is None:
        from rlhf.models import get_policy_model

        m = settings.model
        model, tokenizer = get_policy_model(policy.base_model or spec, policy.adapter_path, device=m.device,
                                            dtype=m.dtype, tokenizer_spec=m.tokenizer)
    started = time.perf_counter()
    lists = params.sample(model, tokenizer, views, progress=progress, catalog_ids=catalog)
    seconds = time.perf_counter() - started
    generations = [
        Generation(
            generation_id=new_id("gen"), context_id=g.context_id, policy_id=policy_id, raw_text=g.raw_text,
            items=list(g.parsed.items), problems=list(g.parsed.problems), is_valid=g.parsed.is_valid,
            sampling=_sampling_record(params, g), prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens, round_id=round_id,
        )
        for g in lists
    ]
    with store.transaction() as con:
        if find_policy(con, policy_id) is None:
            upsert_policy(con, policy)
        insert_generations(con, generations)
    if not generations:
        raise RecFeedbackError("Sampling produced no lists.")  # pragma: no cover - views were non-empty
    return GenerationRun(
        policy_id=policy_id, generation_ids=[g.generation_id for g in generations], n_contexts=len(views),
        n_valid=sum(g.is_valid for g in generations), seconds=seconds,
        completion_tokens=sum(g.completion_tokens for g in lists), params=params,
    )
