"""Constrained decoding: the policy can only write lists in the exact format, with candidate ids.

A small token-level state machine per generated list enforces the grammar::

    1. C07 | <free reason: no line break, no "|", at most max_reason_tokens tokens>\\n
    2. C12 | <reason>\\n
    ...
    N. C03 | <reason><eos>          (or "\\n" then <eos>)

Line heads (``"{k}. {short id} |"``) may only be spelled with tokens that keep the text a prefix of a
head whose short id is a candidate NOT used yet in this list, so ids are always candidates and never
repeated; ranks are forced to 1..N. In a reason's last :data:`REASON_CLOSING_TOKENS` tokens before its
cap no new word may start, so a long reason ends after a whole word rather than inside one. The
reason must contain a letter or digit before its line ends; end-of-sequence is allowed only at the end
of the last line. A reason may not repeat the prompt's
example reason (:data:`rlhf.prompts.EXAMPLE_REASON`, compared on letters and digits alone, as
:func:`rlhf.prompts.copies_example` does): once a reason has followed the example for its first
:data:`EXAMPLE_FREE_WORDS` words, tokens that would follow it further are masked, so the line must
say something of its own. Anywhere in a reason, a run of :data:`EXAMPLE_ECHO_WORDS` of the example's
words in a row is refused the same way, so near copies that change a word and then follow the example
("A teapot to drink with the mugs they bought last month") are cut short too. Runs are counted in
letters and digits: the limit is one less than the fewest letters any five consecutive words of the
example have, so a run of five of its words never fits. The mask depends only on the completion
tokens so far (a pure function of the token sequence), so generation and recomputation agree.

Public API (stable):

- :func:`token_table(tokenizer)` — per-tokenizer lookup tables (cached; ~0.3 s the first time).
- :class:`ListConstraint(table, short_ids, n_items, max_reason_tokens=22, forbidden_reason=None)` with
  ``start()``, ``advance(state, token_id)``, ``allowed(state)``, ``masks(completion_ids, vocab_size)``
  and ``follows(completion_ids)``; :func:`list_constraint(tokenizer, short_ids, n_items,
  max_reason_tokens, forbid_example=True)` and :func:`constraint_for_view` (the same for a context view).
- :class:`ConstrainedListProcessor(constraints, prompt_length)` — a transformers ``LogitsProcessor``
  for ``model.generate(..., logits_processor=[...])``; row ``i`` of the batch follows
  ``constraints[i]``; ``prompt_length`` is the (left-padded) input width.
- :func:`apply_constraint(logits, completion_ids, constraints)` — the same masks over full-sequence
  logits, for teacher-forced log-prob recomputation (PPO).

How to recompute log-probs under the constraint (PPO, reference model, evaluation)::

    # prompt_ids: [B, P] left-padded, completion_ids: [B, T] right-padded (pad after EOS)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_attention, completion_attention], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, P - 1 : -1, :]
    logits = apply_constraint(logits, completion_ids, constraints)   # -inf outside the allowed set
    logp = torch.log_softmax(logits / temperature, dim=-1).gather(-1, completion_ids[..., None])[..., 0]
    # then mask positions after each completion's EOS with completion_attention

``constraints`` are rebuilt from the same views with :func:`constraint_for_view` (stored
generations keep ``sampling["constrained"]`` and ``sampling["max_reason_tokens"]``). Forced tokens
get log-prob exactly 0 under the constraint, for the policy and the reference alike, so they add no
KL. Masks are meaningful only for sequences that were generated under the constraint: check with
``constraint.follows(completion_ids)``; once a sequence breaks the grammar (or after EOS) every token
is allowed. Use the same ``temperature`` as sampling; ``top_k``/``top_p`` are sampling-only filters
and are not part of the recomputed distribution (the usual RLHF convention).

Tokenizers: built and tested for byte-level BPE tokenizers (SmolLM2, Qwen2.5, Llama-3), whose single
tokens decode to their own text. Digits need not be single tokens: heads are matched as text.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rlhf.prompts import EXAMPLE_REASON, letters_and_digits

if TYPE_CHECKING:
    import torch

    from rlhf.prompts import ContextView

_HEAD_ALPHABET = frozenset("0123456789. C|")
_MAX_HEAD_TOKEN_CHARS = 12
DEFAULT_MAX_REASON_TOKENS = 22
#: A reason may begin like the forbidden one for this many words ("A teapot to ..."), no further.
EXAMPLE_FREE_WORDS = 3
#: Anywhere in a reason, no run of this many of the forbidden reason's words in a row (the benchmarks
#: count such runs as near copies).
EXAMPLE_ECHO_WORDS = 5
#: In a reason's last this many tokens before its cap, no new word may start: the line ends after the
#: word in progress (or its punctuation) instead of being cut inside the next one ("... Loose Leaf Tea T").
REASON_CLOSING_TOKENS = 3


def _has_break(text: str) -> bool:
    """Would ``str.splitlines`` break a line inside this text? (the parser reads lines that way)"""
    return len(("a" + text + "a").splitlines()) > 1


@dataclass(frozen=True)
class TokenTable:
    """What the constraint needs to know about a tokenizer's vocabulary."""

    texts: tuple[str, ...]
    eos_id: int
    newline_id: int
    head_tokens: dict[str, tuple[int, ...]]
    #: special/added tokens (never inside a list), tokens with a line break not at their very end, and
    #: tokens with "|" (a reason is one sentence, not a copy of a "title | category | price" row)
    banned_in_reason: frozenset[int]
    #: tokens that end a line: text ends with one "\\n" and has no other break
    line_enders: frozenset[int]
    #: line enders with nothing but blanks before the newline (not allowed before a reason has text)
    blank_line_enders: frozenset[int]
    #: tokens that contain a letter or digit (a reason needs at least one)
    wordy: frozenset[int]

    @property
    def size(self) -> int:
        return len(self.texts)

    @cached_property
    def spelled(self) -> tuple[str, ...]:
        """Each token's text in :func:`rlhf.prompts.letters_and_digits` form ("" for blanks and punctuation)."""
        return tuple(letters_and_digits(t) for t in self.texts)

    def continuing(self, rest: str) -> frozenset[int]:
        """Tokens whose letters and digits are a non-empty prefix of ``rest``: the tokens that would
        keep a reason on the forbidden one's track. Cached per ``rest`` (a forbidden reason has few)."""
        found = self._continuing.get(rest)
        if found is None:
            found = self._continuing[rest] = frozenset(
                i for i, sp in enumerate(self.spelled) if sp and rest.startswith(sp)
            )
        return found

    @cached_property
    def _continuing(self) -> dict[str, frozenset[int]]:
        return {}

    @cached_property
    def word_starts(self) -> frozenset[int]:
        """Tokens that begin a new word: a blank, then a letter or digit (byte-level BPE spells the
        space before a word inside its token), and blanks alone (a word could follow them)."""
        return frozenset(
            i for i, t in enumerate(self.texts)
            if (len(t) > 1 and t[0].isspace() and t[1].isalnum()) or (t and t.isspace() and not _has_break(t))
        )

    def starting_with(self, prefix: str) -> frozenset[int]:
        """Tokens whose letters and digits begin with ``prefix`` (and are at least as long): the tokens
        that would carry a run of the forbidden reason ``len(prefix)`` letters further."""
        by_prefix = self._by_prefix.get(len(prefix))
        if by_prefix is None:
            grouped: dict[str, set[int]] = {}
            for i, sp in enumerate(self.spelled):
                if len(sp) >= len(prefix):
                    grouped.setdefault(sp[: len(prefix)], set()).add(i)
            by_prefix = self._by_prefix[len(prefix)] = {k: frozenset(v) for k, v in grouped.items()}
        return by_prefix.get(prefix, frozenset())

    @cached_property
    def _by_prefix(self) -> dict[int, dict[str, frozenset[int]]]:
        return {}


_tables: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()


def token_table(tokenizer: Any) -> TokenTable:
    """The :class:`TokenTable` of a tokenizer, built once per tokenizer object."""
    try:
        return _tables[tokenizer]
    except (KeyError, TypeError):
        pass
    table = _build_table(tokenizer)
    try:
        _tables[tokenizer] = table
    except TypeError:  # not weak-referenceable: no cache
        pass
    return table


def _build_table(tokenizer: Any) -> TokenTable:
    n = len(tokenizer)
    texts = tuple(tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False))
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("Constrained decoding needs a tokenizer with an end-of-sequence token.")
    newline = [i for i, t in enumerate(texts) if t == "\n"]
    if not newline:
        raise ValueError("Constrained decoding needs a tokenizer with a single-newline token.")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    head: dict[str, list[int]] = {}
    banned: set[int] = set()
    enders: set[int] = set()
    blank_enders: set[int] = set()
    wordy: set[int] = set()
    for i, t in enumerate(texts):
        if i in special:
            banned.add(i)
            continue
        if t and len(t) <= _MAX_HEAD_TOKEN_CHARS and set(t) <= _HEAD_ALPHABET:
            head.setdefault(t, []).append(i)
        if t.endswith("\n") and not _has_break(t[:-1]):
            enders.add(i)
            if not any(ch.isalnum() for ch in t):
                blank_enders.add(i)
        elif _has_break(t):
            banned.add(i)
        if "|" in t:
            banned.add(i)
        if any(ch.isalnum() for ch in t):
            wordy.add(i)
    banned.discard(eos)
    return TokenTable(
        texts=texts, eos_id=int(eos), newline_id=newline[0],
        head_tokens={k: tuple(v) for k, v in head.items()},
        banned_in_reason=frozenset(banned), line_enders=frozenset(enders),
        blank_line_enders=frozenset(blank_enders), wordy=frozenset(wordy),
    )


def _echo_limit(forbidden_reason: str, words: int = EXAMPLE_ECHO_WORDS) -> int:
    """The most letters and digits in a row a reason may share with ``forbidden_reason``: one less than
    its shortest run of ``words`` consecutive words (its whole length if it is shorter)."""
    split = forbidden_reason.split()
    runs = [len(letters_and_digits(" ".join(split[i:i + words]))) for i in range(len(split) - words + 1)]
    return max(1, (min(runs) if runs else len(letters_and_digits(forbidden_reason))) - 1)


@dataclass(frozen=True)
class State:
    """Where a list is in the grammar. ``phase``: head, reason, done (only EOS), free (anything)."""

    line: int = 1
    phase: str = "head"
    consumed: str = ""
    used: frozenset[str] = frozenset()
    reason_tokens: int = 0
    reason_has_text: bool = False
    #: how many letters and digits of the forbidden reason this reason has repeated so far, or None
    #: once it has said something else
    copied: int | None = 0
    #: every place the reason's latest letters and digits repeat the forbidden reason: (where that
    #: run ends in the forbidden reason, its length), sorted
    echo: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Allowed:
    """A set of allowed next tokens: ``only`` these, or everything except ``banned``."""

    only: frozenset[int] | None = None
    banned: frozenset[int] = frozenset()

    def __contains__(self, token_id: int) -> bool:
        if self.only is not None:
            return token_id in self.only
        return token_id not in self.banned

    def dense(self, vocab_size: int, table_size: int, device: Any = None) -> torch.Tensor:
        """A [vocab_size] bool mask (ids past the tokenizer's vocabulary are never allowed)."""
        import torch

        if self.only is not None:
            mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            ids = [i for i in self.only if i < vocab_size]
            if ids:
                mask[torch.tensor(ids, device=device)] = True
            return mask
        mask = torch.ones(vocab_size, dtype=torch.bool, device=device)
        if table_size < vocab_size:
            mask[table_size:] = False
        if self.banned:
            mask[torch.tensor(sorted(self.banned), device=device)] = False
        return mask


_ALL = Allowed()


class ListConstraint:
    """The grammar of one list: its candidate short ids, length and reason cap."""

    def __init__(
        self, table: TokenTable, short_ids: Sequence[str], n_items: int,
        max_reason_tokens: int = DEFAULT_MAX_REASON_TOKENS, forbidden_reason: str | None = None,
    ) -> None:
        self.table = table
        self.short_ids = tuple(short_ids)
        self.n_items = int(n_items)
        self.max_reason_tokens = max(1, int(max_reason_tokens))
        self.forbidden_reason = forbidden_reason
        #: the forbidden reason in letters and digits, and how much of it a reason may repeat
        self._forbidden = letters_and_digits(forbidden_reason or "")
        free_words = (forbidden_reason or "").split()[:EXAMPLE_FREE_WORDS]
        self._free_chars = min(len(letters_and_digits(" ".join(free_words))), len(self._forbidden) - 1)
        self._max_echo = _echo_limit(forbidden_reason or "")
        self._echoless: dict[tuple[Allowed, tuple[tuple[int, int], ...]], Allowed] = {}
        self._head_cache: dict[tuple[int, str, frozenset[str]], Allowed] = {}
        self._guarded: dict[tuple[Allowed, int], Allowed] = {}

    # -- the state machine -------------------------------------------------------------------------
    def start(self) -> State:
        return self._line_start(1, frozenset())

    def _line_start(self, line: int, used: frozenset[str]) -> State:
        if line > self.n_items or len(used) >= len(self.short_ids):
            return State(line=line, phase="done", used=used)
        return State(line=line, phase="head", used=used)

    def _heads(self, state: State) -> list[tuple[str, str]]:
        """(head text, short id) of every head still possible from this state."""
        return [
            (h, s) for s in self.short_ids if s not in state.used
            for h in (f"{state.line}. {s} |",) if h.startswith(state.consumed)
        ]

    def _is_last_line(self, state: State) -> bool:
        return state.line >= self.n_items or len(state.used) >= len(self.short_ids)

    def allowed(self, state: State) -> Allowed:
        """The tokens that may come next in ``state``."""
        t = self.table
        if state.phase == "head":
            key = (state.line, state.consumed, state.used)
            cached = self._head_cache.get(key)
            if cached is None:
                ids: set[int] = set()
                for head, _ in self._heads(state):
                    rest = head[len(state.consumed):]
                    for j in range(1, min(len(rest), _MAX_HEAD_TOKEN_CHARS) + 1):
                        ids.update(t.head_tokens.get(rest[:j], ()))
                cached = Allowed(only=frozenset(ids)) if ids else Allowed(only=frozenset({t.eos_id}))
                self._head_cache[key] = cached
            return cached
        if state.phase == "reason":
            capped = state.reason_tokens >= self.max_reason_tokens
            allowed = self._fixed[("reason", self._is_last_line(state), state.reason_has_text, capped)]
            if (state.reason_has_text and not capped
                    and state.reason_tokens >= self.max_reason_tokens - REASON_CLOSING_TOKENS):
                allowed = self._fixed[("closing", self._is_last_line(state))]
            if self._forbidden and state.copied is not None and state.copied >= self._free_chars:
                allowed = self._off_the_copy(allowed, state.copied)
            if state.echo:
                allowed = self._off_the_echo(allowed, state.echo)
            return allowed
        if state.phase == "done":
            return self._fixed[("done",)]
        return _ALL

    @cached_property
    def _fixed(self) -> dict[tuple[Any, ...], Allowed]:
        """The few allowed sets outside line heads, built once per constraint."""
        t = self.table
        out: dict[tuple[Any, ...], Allowed] = {("done",): Allowed(only=frozenset({t.eos_id}))}
        for last in (False, True):
            end = frozenset({t.eos_id} if last else {t.newline_id})
            for has_text in (False, True):
                banned = set(t.banned_in_reason)
                if not has_text:
                    banned |= t.blank_line_enders | {t.eos_id}
                if not last:
                    banned.add(t.eos_id)
                out[("reason", last, has_text, False)] = Allowed(banned=frozenset(banned))
            # Close to the cap: finish the word in progress, punctuate or end the line; no new word.
            out[("closing", last)] = Allowed(banned=out[("reason", last, True, False)].banned | t.word_starts)
            # Out of reason tokens: end the line, or (no word yet) write a word first.
            out[("reason", last, True, True)] = Allowed(only=end)
            out[("reason", last, False, True)] = Allowed(only=frozenset(t.wordy - t.banned_in_reason))
        return out

    def _off_the_copy(self, allowed: Allowed, copied: int) -> Allowed:
        """``allowed`` less the tokens that would repeat more of the forbidden reason."""
        if allowed.only is not None:  # a forced line end or first word: never part of a copy
            return allowed
        key = (allowed, copied)
        out = self._guarded.get(key)
        if out is None:
            out = self._guarded[key] = Allowed(
                banned=allowed.banned | self.table.continuing(self._forbidden[copied:])
            )
        return out

    def _off_the_echo(self, allowed: Allowed, echo: tuple[tuple[int, int], ...]) -> Allowed:
        """``allowed`` less the tokens that would make a run of the forbidden reason longer than the
        limit (:func:`_echo_limit`); ``echo``: the runs the reason ends with now."""
        if allowed.only is not None:  # a forced line end or first word: never part of a copy
            return allowed
        key = (allowed, echo)
        out = self._echoless.get(key)
        if out is None:
            extra: set[int] = set()
            for end, length in echo:
                # letters more that would pass the limit (at least one: a single long token can pass it)
                need = max(1, self._max_echo + 1 - length)
                if end + need <= len(self._forbidden):
                    extra |= self.table.starting_with(self._forbidden[end:end + need])
            out = allowed if not extra else Allowed(banned=allowed.banned | extra)
            self._echoless[key] = out
        return out

    def _echo_after(self, echo: tuple[tuple[int, int], ...], spelled: str) -> tuple[tuple[int, int], ...]:
        """The runs of the forbidden reason that the text ends with once ``spelled`` (a token's letters
        and digits) is appended: runs it continues, and runs that begin inside it."""
        if not spelled:
            return echo  # blanks and punctuation neither continue nor break a run (letters only)
        forbidden = self._forbidden
        runs: dict[int, int] = {}
        for end, length in echo:
            if forbidden.startswith(spelled, end):
                runs[end + len(spelled)] = length + len(spelled)
        for k in range(len(spelled)):
            tail = spelled[k:]
            at = forbidden.find(tail)
            while at >= 0:
                end = at + len(tail)
                runs[end] = max(runs.get(end, 0), len(tail))
                at = forbidden.find(tail, at + 1)
        return tuple(sorted((end, length) for end, length in runs.items() if end < len(forbidden)))

    def advance(self, state: State, token_id: int) -> State:
        """The state after ``token_id``; a token the grammar does not allow leads to ``free``."""
        t = self.table
        token_id = int(token_id)
        if state.phase == "free":
            return state
        if token_id not in self.allowed(state):
            return State(line=state.line, phase="free", used=state.used)
        if state.phase == "done" or token_id == t.eos_id:
            return State(line=state.line, phase="free", used=state.used)  # finished: nothing follows
        text = t.texts[token_id] if 0 <= token_id < t.size else ""
        if state.phase == "head":
            consumed = state.consumed + text
            for head, short in self._heads(state):
                if head == consumed:
                    return State(line=state.line, phase="reason", used=state.used | {short})
            return State(line=state.line, phase="head", consumed=consumed, used=state.used)
        # reason
        if token_id in t.line_enders:
            if self._is_last_line(state):
                return State(line=state.line, phase="done", used=state.used)
            return self._line_start(state.line + 1, state.used)
        copied, echo = state.copied, state.echo
        if self._forbidden:
            spelled = t.spelled[token_id] if 0 <= token_id < t.size else ""
            if copied is not None:
                copied = copied + len(spelled) if self._forbidden.startswith(spelled, copied) else None
            echo = self._echo_after(echo, spelled)
        return State(
            line=state.line, phase="reason", used=state.used, reason_tokens=state.reason_tokens + 1,
            reason_has_text=state.reason_has_text or token_id in t.wordy, copied=copied, echo=echo,
        )

    # -- whole sequences ---------------------------------------------------------------------------
    def allowed_sequence(self, completion_ids: Sequence[int]) -> list[Allowed]:
        """``result[t]`` = tokens allowed at completion position ``t`` given ``completion_ids[:t]``."""
        state = self.start()
        out = []
        for tok in completion_ids:
            out.append(self.allowed(state))
            state = self.advance(state, int(tok))
        return out

    def follows(self, completion_ids: Sequence[int]) -> bool:
        """True when every token up to and including the first EOS was allowed."""
        state = self.start()
        for tok in completion_ids:
            tok = int(tok)
            if state.phase == "free" or tok not in self.allowed(state):
                return False
            if tok == self.table.eos_id:
                return True
            state = self.advance(state, tok)
        return True

    def masks(self, completion_ids: Sequence[int], vocab_size: int, device: Any = None) -> torch.Tensor:
        """[len(completion_ids), vocab_size] bool: the allowed set at each completion position."""
        import torch

        dense: dict[Allowed, torch.Tensor] = {}
        rows = []
        for allowed in self.allowed_sequence(completion_ids):
            row = dense.get(allowed)
            if row is None:
                row = dense[allowed] = allowed.dense(vocab_size, self.table.size, device)
            rows.append(row)
        if not rows:
            return torch.zeros((0, vocab_size), dtype=torch.bool, device=device)
        return torch.stack(rows)


def list_constraint(
    tokenizer: Any, short_ids: Sequence[str], n_items: int, max_reason_tokens: int = DEFAULT_MAX_REASON_TOKENS,
    forbid_example: bool = True,
) -> ListConstraint:
    """The product's grammar for a list over these candidate short ids; with ``forbid_example`` a reason
    may not repeat the prompt's example reason. Generation and PPO both build their constraints here."""
    return ListConstraint(token_table(tokenizer), short_ids, n_items, max_reason_tokens,
                          EXAMPLE_REASON if forbid_example else None)


def constraint_for_view(
    tokenizer: Any, view: ContextView, n_items: int, max_reason_tokens: int = DEFAULT_MAX_REASON_TOKENS,
    forbid_example: bool = True,
) -> ListConstraint:
    """:func:`list_constraint` for one context's list (its candidates' short ids)."""
    return list_constraint(tokenizer, view.short_ids, n_items, max_reason_tokens, forbid_example)


class ConstrainedListProcessor:
    """A transformers logits processor applying one :class:`ListConstraint` per batch row.

    Pass it in ``model.generate(..., logits_processor=LogitsProcessorList([processor]))`` (generate
    applies custom processors before temperature/top-k/top-p, so sampling filters see only allowed
    tokens). Keeps each row's state and advances it by the tokens appended since the last call, so a
    step costs O(batch) set look-ups. Instances are for one ``generate`` call.
    """

    def __init__(self, constraints: Sequence[ListConstraint], prompt_length: int) -> None:
        self.constraints = list(constraints)
        self.prompt_length = int(prompt_length)
        self._states = [c.start() for c in self.constraints]
        self._seen = [0] * len(self.constraints)
        self._dense: dict[tuple[Allowed, int], torch.Tensor] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import torch

        if input_ids.shape[0] != len(self.constraints):
            raise ValueError(
                f"{input_ids.shape[0]} rows but {len(self.constraints)} constraints: build one per row "
                "(do not combine with num_return_sequences or beams)."
            )
        vocab = scores.shape[-1]
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for row, constraint in enumerate(self.constraints):
            completion = input_ids[row, self.prompt_length:].tolist()
            state = self._states[row]
            for tok in completion[self._seen[row]:]:
                state = constraint.advance(state, tok)
            self._states[row], self._seen[row] = state, len(completion)
            allowed = constraint.allowed(state)
            key = (allowed, constraint.table.size)
            dense = self._dense.get(key)
            if dense is None:
                dense = self._dense[key] = allowed.dense(vocab, constraint.table.size, scores.device)
            mask[row] = dense
        return scores.masked_fill(~mask, float("-inf"))


def apply_constraint(
    logits: torch.Tensor, completion_ids: torch.Tensor, constraints: Sequence[ListConstraint]
) -> torch.Tensor:
    """``logits`` [B, T, V] (predictions for each completion token) with disallowed tokens at -inf.

    Row ``b`` position ``t`` gets exactly the mask the logits processor applied when it sampled
    ``completion_ids[b, t]`` (same state machine, same sequence). Not in place.
    """
    if logits.dim() != 3 or completion_ids.shape != logits.shape[:2]:
        raise ValueError(f"logits {tuple(logits.shape)} and completion_ids {tuple(completion_ids.shape)} disagree")
    if len(constraints) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows but {len(constraints)} constraints")
    import torch

    vocab = logits.shape[-1]
    masks = torch.stack([
        c.masks(completion_ids[b].tolist(), vocab, logits.device) for b, c in enumerate(constraints)
    ])
    return logits.masked_fill(~masks, float("-inf"))
