"""Batch scoring with a trained reward model (active selection, PPO and dashboards call this).

:class:`RewardScorer` wraps a sequence classifier (LoRA adapter + head) and its tokenizer. Inputs are
encoded exactly as in training (:func:`rlhf.reward.backbones.encode_pair`), sorted by length so that a
batch wastes little padding, and scored without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rlhf.errors import RecFeedbackError
from rlhf.reward.backbones import Kind, encode_pair
from rlhf.reward.inputs import reward_inputs

if TYPE_CHECKING:
    import pandas as pd

    from rlhf.settings import Settings
    from storage import Store


class RewardScorer:
    """Scores (prompt, response) pairs with a reward model; higher is better."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kind: Kind,
        max_length: int,
        rm_id: str | None = None,
        card: dict[str, Any] | None = None,
        input_format: str = "policy",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = int(max_length)
        self.input_format = input_format
        self.rm_id = rm_id
        self.card = card or {}

    @property
    def score_stats(self) -> dict[str, float] | None:
        """Mean/std of this model's scores over the lists it was trained on (from its card), if recorded."""
        stats = self.card.get("score_stats")
        return stats if isinstance(stats, dict) and "mean" in stats and "std" in stats else None

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """Token ids per (prompt, response), as used in training (same input format and truncation)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
        return [
            encode_pair(self.tokenizer, *reward_inputs(p, r, self.input_format), self.max_length, self.kind)
            for p, r in zip(prompts, responses)
        ]

    def score_ids(self, encoded: Sequence[Sequence[int]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Scores of already-encoded sequences, in input order."""
        import torch

        n = len(encoded)
        out = np.zeros(n, dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: len(encoded[i]), reverse=True)
        pad = int(self.tokenizer.pad_token_id)
        was_training = self.model.training
        self.model.eval()
        starts = range(0, n, max(1, batch_size))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Scoring", unit="batch")
        try:
            with torch.inference_mode():
                for start in starts:
                    idx = order[start:start + batch_size]
                    width = max(len(encoded[i]) for i in idx)
                    ids = torch.full((len(idx), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, i in enumerate(idx):
                        seq = encoded[i]
                        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                        mask[row, : len(seq)] = 1
                    logits = self.model(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
                    ).logits
                    out[idx] = logits[:, 0].float().cpu().numpy()
        finally:
            if was_training:
                self.model.train()
        return out

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """One reward per (prompt, response), as a float32 array in input order."""
        return self.score_ids(self.encode(prompts, responses), batch_size=batch_size, progress=progress)

    def score_pairs(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rewards of A, rewards of B) for pairs sharing a prompt, in one batched pass."""
        n = len(prompts)
        scores = self.score([*prompts, *prompts], [*responses_a, *responses_b], batch_size, progress)
        return scores[:n], scores[n:]

    def preference_probability(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        """P(A preferred over B) = σ(r_A − r_B) under the Bradley–Terry model."""
        ra, rb = self.score_pairs(prompts, responses_a, responses_b, batch_size)
        return 1.0 / (1.0 + np.exp(-(ra - rb)))


def score_generations(
    store: Store,
    scorer: RewardScorer,
    settings: Settings,
    *,
    generation_ids: Sequence[str] | None = None,
    policy_id: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score stored generations (by id, or all of a policy, or all) on the prompt their policy saw.

    Reads what it needs in one short unit of work, then scores outside it. Returns a frame with
    generation_id, context_id, policy_id, is_valid, reward. An unknown generation or policy id is an error
    (it read as "no generations to score").
    """
    import pandas as pd

    from rlhf.models import load_tokenizer
    from rlhf.prompts import build_context_views, render_prompt
    from storage.contexts import get_contexts, list_contexts
    from storage.generations import find_policy, generations_for_contexts, get_generations

    with store.transaction() as con:
        if policy_id is not None and find_policy(con, policy_id) is None:
            raise RecFeedbackError(f"No policy {policy_id!r}; `recfeedback policy list` shows them.")
        if generation_ids is not None:
            found = get_generations(con, list(generation_ids))
            missing = [g for g in generation_ids if g not in found]
            if missing:
                raise RecFeedbackError(f"No generation {', '.join(map(repr, missing))} in the store.")
            gens = list(found.values())
        else:
            context_ids = [c.context_id for c in list_contexts(con)]
            gens = generations_for_contexts(con, context_ids, policy_id=policy_id)
        if limit:
            gens = gens[: int(limit)]
        contexts = get_contexts(con, sorted({g.context_id for g in gens}))
        views = build_context_views(con, list(contexts.values()), attributes=settings.contexts.item_attributes)
        views = {v.context_id: v for v in views}
    columns = ["generation_id", "context_id", "policy_id", "is_valid", "reward"]
    if not gens:
        return pd.DataFrame(columns=columns)
    tokenizer = load_tokenizer(settings.model.tokenizer or settings.model.policy)
    prompts = {
        cid: render_prompt(tokenizer, view, settings.generation.list_length, settings.generation.max_prompt_tokens)
        for cid, view in views.items()
    }
    kept = [g for g in gens if g.context_id in prompts]
    rewards = scorer.score(
        [prompts[g.context_id] for g in kept], [g.raw_text for g in kept],
        batch_size=batch_size or settings.reward_model.eval_batch_size, progress=progress,
    )
    return pd.DataFrame(
        [(g.generation_id, g.context_id, g.policy_id, g.is_valid, float(r)) for g, r in zip(kept, rewards)],
        columns=columns,
    )
