"""What the reward model reads: the policy's (prompt, answer) rewritten so that the answer stands alone.

The policy answers with short ids (``1. C07 | reason``) that only mean something next to the candidate
table of its prompt. A reward model that reads the raw text has to look each id up across hundreds of
tokens, and a small encoder's window (MiniLM: 512 tokens) cuts the prompt from the left, so it loses
the shopper's history first: it sees ids without knowing what they are or whom they are for. Annotators
do not work that way: the label page shows each item as the prompt describes it (title, category,
price, any attributes) beside the reason.

Input formats (``reward_model.input_format``, recorded in every model's card):

- ``"resolved"`` (default): the prompt becomes the shopper's history alone (the candidate table says
  nothing about which of two lists for the same context is better: both lists had the same choice),
  and each answer line names its item after its id: ``1. C07 Linen tea towel (Kitchen, price 4.50) |
  reason``. The id stays because it is the candidate's place in the prompt, a signal the raw text
  carries and titles alone lose: with ``contexts.candidate_order = "relevance"`` (default) C01 is the
  retriever's strongest match; with ``"interleaved"`` each slot stands for a source (co-purchase,
  category, popularity). An id that is not a candidate stays visible as such, so invalid lists still look
  invalid.
- ``"policy"``: the raw texts, as the policy saw and wrote them (models trained before this format
  existed have no entry in their card and are read this way).

Text that is not one of our prompts (imported labels, benchmark data) is passed through unchanged.
"""

from __future__ import annotations

import re

from rlhf.prompts import prompt_sections

INPUT_FORMATS: tuple[str, ...] = ("resolved", "policy")

#: One answer line: rank, short id, separator, reason (the parser's grammar, loosely).
_LINE = re.compile(r"^(\s*\d+\s*[.)]\s*)(C\d+)\b\s*(?:\|\s*)?(.*)$")

HISTORY_TITLE = "Shopper's earlier purchases (oldest first):"


def reward_inputs(prompt: str, response: str, input_format: str = "resolved") -> tuple[str, str]:
    """The (prompt, response) texts a reward model of ``input_format`` encodes for this example."""
    if input_format == "policy":
        return prompt, response
    if input_format != "resolved":
        raise ValueError(f"Unknown reward-model input format {input_format!r}; expected one of {INPUT_FORMATS}.")
    sections = prompt_sections(prompt) if prompt else None
    if sections is None:
        return prompt, response
    history = "\n".join(f"- {h}" for h in sections.history) or "- (none known)"
    return f"{HISTORY_TITLE}\n{history}", resolve_answer(response, sections.candidates)


def resolve_answer(response: str, candidates: dict[str, str]) -> str:
    """``response`` with each line's short id followed by the candidate it names."""
    out = []
    for line in response.splitlines():
        m = _LINE.match(line)
        if m is None:
            out.append(line)
            continue
        head, short, reason = m.groups()
        item = candidates.get(short)
        name = f"{short} {item}" if item is not None else f"{short} (not a candidate)"
        out.append(f"{head}{name} | {reason}" if reason else f"{head}{name}")
    return "\n".join(out)
