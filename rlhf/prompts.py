"""The prompt a policy sees: a shopper's history, the candidate items, and the output format.

Public API (stable; PPO, the reward model and the app depend on it):

- :class:`ContextView` — a context with its catalogue items resolved and each candidate given a short
  id (``C01``..``C20``; three digits past 99 candidates). Short ids keep prompts small and make
  constrained decoding simple (digits are single tokens in SmolLM2/Qwen tokenizers).
- :func:`build_context_view` / :func:`build_context_views` — read the items for contexts (one query).
- :func:`build_messages` — chat messages (system + user) for a view.
- :func:`render_prompt` — the exact prompt text: the tokenizer's chat template with
  ``add_generation_prompt=True``, history truncated (oldest first) to fit a token budget.
  The reward model is given ``render_prompt(policy_tokenizer, view, n_items, max_prompt_tokens)`` +
  the completion (:mod:`rlhf.reward.inputs` reads them back with :func:`prompt_sections` to name each
  item of the answer): it is deterministic, and :func:`prompt_fingerprint` of it is stored with every
  generation (``sampling["prompt_sha1"]``) so that a re-render can be checked.
- :func:`format_list_line` / :data:`LINE_FORMAT` — the output format, one line per item::

      1. C07 | One-sentence reason.

Why history is truncated first: candidates are what the policy must choose from (and what the
constraint and parser map ids against), so they are never dropped; long titles are shortened next.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.errors import RecFeedbackError
from storage.records import CatalogItem, Context

#: Bumped whenever the wording or format changes, and stored with each generation. Catalogue attributes
#: (``contexts.item_attributes``, none by default) change the text, not the version: each generation's
#: ``prompt_sha1`` tells renderings apart.
PROMPT_VERSION = "v1"

LINE_FORMAT = "<rank>. <candidate id> | <one-sentence reason>"
#: The reason in the prompt's one example line. The 135M default policy copies it for ~6% of its items
#: (57 of 1,000 over 200 demo contexts, ``benchmarks/results/generation.md``), and without a concrete
#: example it writes worse reasons, so the example stays and the parser flags copies (:func:`copies_example`).
EXAMPLE_REASON = "A teapot to go with the mugs they bought last month."

#: Section headers of the user message; :func:`prompt_sections` reads a rendered prompt back by them.
HISTORY_HEADER = "The shopper bought these products before (oldest first):"
CANDIDATES_HEADER = "Candidate products:"
NO_HISTORY = "- (no earlier purchases known)"

SYSTEM_PROMPT = (
    "You are a shopping assistant for an online shop. You recommend products to a shopper, choosing "
    "only from a given list of candidate products, and you give one short reason for each choice."
)

_TITLE_CHARS_SHORT = 48
#: What may not appear in an attribute value in the prompt (it would read as the details' punctuation).
_ATTRIBUTE_UNSAFE = re.compile(r"[,;()\n]")


class PromptTooLongError(RecFeedbackError):
    """Even with no history and short titles, the prompt does not fit the token budget."""


@dataclass(frozen=True)
class ContextView:
    """A context ready for prompting: resolved items and candidate short ids.

    ``short_ids[i]`` is the short id of ``candidates[i]``. Candidates missing from the catalogue are
    left out (they cannot be described to the model); history items missing likewise. ``attributes``
    names the catalogue attributes described with each item (:func:`item_details`).
    """

    context_id: str
    shopper_id: str
    history: list[CatalogItem]
    candidates: list[CatalogItem]
    short_ids: list[str] = field(default_factory=list)
    attributes: tuple[str, ...] = ()

    @property
    def short_to_item(self) -> dict[str, str]:
        """Short id -> real item id (``"C07" -> "85123A"``)."""
        return {s: c.item_id for s, c in zip(self.short_ids, self.candidates)}

    @property
    def item_to_short(self) -> dict[str, str]:
        return {c.item_id: s for s, c in zip(self.short_ids, self.candidates)}

    @property
    def candidate_ids(self) -> list[str]:
        return [c.item_id for c in self.candidates]

    def item(self, item_id: str) -> CatalogItem | None:
        """A candidate or history item by real id (for display)."""
        for it in (*self.candidates, *self.history):
            if it.item_id == item_id:
                return it
        return None


def short_id_for(index: int, n_candidates: int) -> str:
    """The short id of the ``index``-th (0-based) of ``n_candidates`` candidates: C01, C02, ..."""
    width = max(2, len(str(n_candidates)))
    return f"C{index + 1:0{width}d}"


def make_view(
    context_id: str, shopper_id: str, history: Sequence[CatalogItem], candidates: Sequence[CatalogItem],
    *, attributes: Sequence[str] | None = None,
) -> ContextView:
    """A :class:`ContextView` from items already in hand (tests, benchmarks, the demo).

    ``attributes``: the catalogue attributes to describe with each item; None takes
    ``contexts.item_attributes`` from the settings, so that every prompt of a shop reads the same."""
    seen: set[str] = set()
    unique = [c for c in candidates if not (c.item_id in seen or seen.add(c.item_id))]
    shorts = [short_id_for(i, len(unique)) for i in range(len(unique))]
    return ContextView(context_id, shopper_id, list(history), unique, shorts, _attribute_keys(attributes))


def _attribute_keys(attributes: Sequence[str] | None) -> tuple[str, ...]:
    if attributes is None:
        from rlhf.settings import get_settings

        attributes = get_settings().contexts.item_attributes
    return tuple(attributes)


def item_details(item: CatalogItem, attributes: Sequence[str]) -> str:
    """What the prompt says about ``item`` after its title: ``Kitchen, price 4.50; color Navy, rating 4.5``
    (category, price and, after a semicolon, :func:`attribute_details`); "" when it has none of them."""
    details = ", ".join(d for d in (item.category, None if item.price is None else f"price {item.price:.2f}") if d)
    attrs = attribute_details(item, attributes)
    return "; ".join(part for part in (details, ", ".join(attrs)) if part)


def attribute_details(item: CatalogItem, attributes: Sequence[str]) -> list[str]:
    """Each named catalogue attribute ``item`` has, as ``"color Navy"`` / ``"rating 4.8"``, unless its title
    already says it. The policy's prompt and the Label page both describe items with this, so that
    annotators judge what the policy was shown."""
    attrs = item.attributes or {}
    title = item.title.lower()
    out = []
    for key in attributes:
        value = attrs.get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        text = " ".join(_ATTRIBUTE_UNSAFE.sub(" ", str(value)).split())
        if text and not (isinstance(value, str) and text.lower() in title):
            out.append(f"{key} {text}")
    return out


def build_context_views(
    con_or_store: Any, contexts: Sequence[Context], *, attributes: Sequence[str] | None = None
) -> list[ContextView]:
    """Views for many contexts, reading all their items in one query.

    ``con_or_store`` is an open transaction's connection or a :class:`storage.Store` (then a short
    read transaction is opened here). ``attributes`` as in :func:`make_view`.
    """
    from storage import Store
    from storage.catalog import get_items

    keys = _attribute_keys(attributes)
    ids = [i for c in contexts for i in (*c.history, *c.candidates)]
    if isinstance(con_or_store, Store):
        with con_or_store.transaction() as con:
            items = get_items(con, ids)
    else:
        items = get_items(con_or_store, ids)
    views = []
    for c in contexts:
        history = [items[i] for i in c.history if i in items]
        candidates = [items[i] for i in c.candidates if i in items]
        views.append(make_view(c.context_id, c.shopper_id, history, candidates, attributes=keys))
    return views


def build_context_view(con_or_store: Any, context: Context | str) -> ContextView:
    """The view of one context (a :class:`Context` or its id)."""
    if isinstance(context, str):
        from storage import Store
        from storage.contexts import get_context

        if isinstance(con_or_store, Store):
            with con_or_store.transaction() as con:
                context = get_context(con, context)
        else:
            context = get_context(con_or_store, context)
    return build_context_views(con_or_store, [context])[0]


def _describe(item: CatalogItem, title_chars: int | None, attributes: Sequence[str]) -> str:
    title = " ".join(item.title.split())
    if title_chars and len(title) > title_chars:
        title = title[: title_chars - 1].rstrip() + "…"
    details = item_details(item, attributes)
    return f"{title} ({details})" if details else title


def described_title(line: str) -> str:
    """The title in a history or candidate line the prompt wrote (``Title (details)``): the line without its
    last bracketed group, which may itself hold brackets. A reader of the prompt (the reward model's reason
    column) needs the titles the policy could copy."""
    if not line.endswith(")"):
        return line
    depth = 0
    for i in range(len(line) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(line[i], 0)
        if depth == 0:
            return line[:i].rstrip()
    return line


def build_messages(
    view: ContextView, n_items: int, *, history_limit: int | None = None, title_chars: int | None = None
) -> list[dict[str, str]]:
    """System and user messages asking for ``n_items`` lines in :data:`LINE_FORMAT`.

    ``history_limit`` keeps only the most recent that many history items (None: all);
    ``title_chars`` shortens long titles. :func:`render_prompt` picks both to fit the budget.
    """
    if history_limit is None:
        history = view.history
    else:
        history = view.history[max(0, len(view.history) - history_limit):] if history_limit > 0 else []
    if history:
        past = "\n".join(f"- {_describe(it, title_chars, view.attributes)}" for it in history)
    else:
        past = NO_HISTORY
    cands = "\n".join(f"{s}: {_describe(c, title_chars, view.attributes)}" for s, c in zip(view.short_ids, view.candidates))
    example = view.short_ids[min(6, len(view.short_ids) - 1)] if view.short_ids else "C07"
    user = (
        f"{HISTORY_HEADER}\n{past}\n\n"
        f"{CANDIDATES_HEADER}\n{cands}\n\n"
        f"Choose the {n_items} candidates this shopper is most likely to want, best first. "
        f"Answer with exactly {n_items} lines and nothing else. Each line must be:\n"
        f"{LINE_FORMAT}\n"
        f"For example:\n1. {example} | {EXAMPLE_REASON}\n"
        "Use only candidate ids from the list above, each at most once."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def copies_example(reason: str) -> bool:
    """Whether ``reason`` is the prompt's :data:`EXAMPLE_REASON` repeated (ignoring case, spacing and
    punctuation): a reason copied from the instructions, not written for the item. Constrained decoding
    forbids such copies (:mod:`rlhf.constrained`); this finds them in unconstrained or older lists."""
    return letters_and_digits(reason) == _EXAMPLE_SPELLED


def letters_and_digits(text: str) -> str:
    """``text`` lower-cased with everything but ASCII letters and digits removed: the form in which
    reasons are compared with the example, so that case, spacing and punctuation cannot hide a copy."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


_EXAMPLE_SPELLED = letters_and_digits(EXAMPLE_REASON)


@dataclass(frozen=True)
class PromptSections:
    """What a rendered prompt told the policy: history lines (oldest first) and candidates by short id."""

    history: list[str]
    candidates: dict[str, str]


def prompt_sections(prompt: str) -> PromptSections | None:
    """The history and candidate descriptions of a prompt made by :func:`render_prompt`, or None.

    The inverse of :func:`build_messages` for the two lists it writes, so that a reader of the policy's
    answer (the reward model) can put each ``C07`` back next to what it stands for. Returns None for
    text that is not one of our prompts (imported labels, benchmark prompts).
    """
    h = prompt.find(HISTORY_HEADER)
    c = prompt.find(CANDIDATES_HEADER, h + 1)
    if h < 0 or c < 0:
        return None
    history = [
        line[2:].strip() for line in prompt[h + len(HISTORY_HEADER):c].splitlines()
        if line.startswith("- ") and line.strip() != NO_HISTORY
    ]
    candidates: dict[str, str] = {}
    for line in prompt[c + len(CANDIDATES_HEADER):].splitlines()[1:]:
        if not line.strip():
            break
        short, sep, description = line.partition(": ")
        if not sep or not short.startswith("C"):
            break
        candidates[short.strip()] = description.strip()
    return PromptSections(history, candidates) if candidates else None


def format_list_line(rank: int, short_id: str, reason: str) -> str:
    """One output line in the policy's format (baselines write their lists this way too)."""
    return f"{rank}. {short_id} | {reason}"


def _apply_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in a rendered prompt (special tokens are already in the text)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt(tokenizer: Any, view: ContextView, n_items: int, max_prompt_tokens: int) -> str:
    """The prompt text for ``view``, at most ``max_prompt_tokens`` tokens.

    Drops history items (oldest first, by halving then one by one), then shortens titles; raises
    :class:`PromptTooLongError` if even that does not fit. Deterministic for the same inputs.
    """
    return render_prompt_with_info(tokenizer, view, n_items, max_prompt_tokens)[0]


def render_prompt_with_info(
    tokenizer: Any, view: ContextView, n_items: int, max_prompt_tokens: int
) -> tuple[str, dict[str, Any]]:
    """:func:`render_prompt` plus what was kept: ``{"history_kept", "titles_shortened", "prompt_tokens"}``."""
    n_hist = len(view.history)

    def attempt(limit: int, title_chars: int | None) -> tuple[str, int]:
        text = _apply_template(tokenizer, build_messages(view, n_items, history_limit=limit, title_chars=title_chars))
        return text, count_tokens(tokenizer, text)

    text, n = attempt(n_hist, None)
    if n <= max_prompt_tokens:
        return text, {"history_kept": n_hist, "titles_shortened": False, "prompt_tokens": n}
    for title_chars in (None, _TITLE_CHARS_SHORT):
        # Largest history that fits: binary search over how many recent items to keep.
        lo, hi, best = 0, n_hist, None
        while lo <= hi:
            mid = (lo + hi) // 2
            t, k = attempt(mid, title_chars)
            if k <= max_prompt_tokens:
                best, lo = (t, k, mid), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best[0], {"history_kept": best[2], "titles_shortened": title_chars is not None,
                             "prompt_tokens": best[1]}
    raise PromptTooLongError(
        f"The prompt for context {view.context_id} needs more than {max_prompt_tokens} tokens even without "
        f"history ({len(view.candidates)} candidates). Raise generation.max_prompt_tokens or lower "
        "contexts.n_candidates."
    )


def prompt_fingerprint(prompt: str) -> str:
    """A short hash of the exact prompt text, stored with generations."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]
