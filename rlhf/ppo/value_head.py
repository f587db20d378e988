"""The critic: a value head on the actor's own hidden states.

Why a head and not a separate critic model: the policy forward pass already computes the last
hidden states, so values cost one ``hidden -> 1`` projection instead of a second transformer
(half the memory of a separate critic and, in the update loop, half the forward/backward compute;
this is most of our speed advantage over TRL's old PPOTrainer, which runs a separate value model).
The price is that value-loss gradients flow into the shared LoRA parameters; ``vf_coef`` (0.1 by
default) keeps them from dominating the policy gradient, and the value loss is clipped. Separate
critics are preferred at large scale for stability; for a 135M policy trained on one GPU with a LoRA
adapter the shared trunk is the better trade.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ValueHead(nn.Module):
    """hidden (B, T, H) -> value (B, T), computed in float32 whatever the autocast dtype."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        # Start at V = 0: the first advantages are then the (KL-shaped) returns themselves.
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            return self.summary(hidden_states.float()).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    """The LoRA actor (a PEFT model) plus its value head, as ONE module for accelerate/DDP.

    ``forward`` runs the decoder once over whole sequences and returns, for the response positions
    only, the next-token logits and the values: logits/values at index ``j`` belong to the state
    just before response token ``j`` (sequence position ``response_start + j``). Projecting only the
    response positions through the LM head avoids a (B, prompt+response, vocab) tensor, which for
    long prompts and a 49k vocabulary is gigabytes.

    ``policy`` keeps the PEFT model, so the reference is ``with self.policy.disable_adapter():``
    (the same weights, one copy in memory).
    """

    def __init__(self, policy: Any, hidden_size: int | None = None) -> None:
        super().__init__()
        self.policy = policy
        size = hidden_size or int(policy.config.hidden_size)
        self.value_head = ValueHead(size)

    def _base(self) -> Any:
        return self.policy.get_base_model() if hasattr(self.policy, "get_base_model") else self.policy

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_start: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        base = self._base()
        hidden = base.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            return_dict=True,
        ).last_hidden_state
        hidden = hidden[:, response_start - 1 : -1]
        logits = base.get_output_embeddings()(hidden)
        return logits, self.value_head(hidden)
