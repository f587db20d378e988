"""Turning a policy's raw text into a recommendation list plus a record of what is wrong with it.

Public API (stable; the app shows ``problems`` as badges, PPO uses validity as a structural reward):

- :func:`parse_list(text, view_or_mapping, n_expected, catalog_ids=None, titles=None) -> ParsedList`
  **never raises**, whatever the text (property-tested with hypothesis).
- :func:`describes_other_item(reason, item_id, titles)`: the ``other_item_reason`` rule alone (the
  Label page badges single items with it).
- :class:`ParsedList`: ``items`` (``ListItem`` with REAL item ids, in list order, at most
  ``n_expected``), ``short_ids`` (parallel to items, the id as the model wrote it, normalised),
  ``problems`` (dicts ``{"kind", "detail", "position"}``), ``is_valid``, ``n_valid``.
- :data:`PROBLEM_KINDS` and :data:`PROBLEM_LABELS` (short human names for badges).

Rules. Lines are read in order; blank lines are ignored. An item line is an optional rank or bullet
(``1.``, ``2)``, ``-``, ``**3.**``), an id, a separator (``|``, ``:``, ``-``, ``–``) and a reason,
so ``1. C07 | Goes with the mugs.`` and ``- c7: goes with the mugs`` both parse. The id may be a
short id (``C07``; case and zero padding do not matter) or a real candidate item id.

Problem kinds (``position`` is the 1-based line number in the raw text, None for list-level ones):

- ``unparseable``: a non-blank line that is not an item line (chatter, a title without an id);
  also used once, at position None, for empty output.
- ``unknown_id``: an id-like token that names no candidate and no catalogue item.
- ``not_a_candidate``: a real catalogue item that is not among this context's candidates.
- ``duplicate``: an item already listed above (the later line is dropped).
- ``missing_reason``: an item line without a reason (the item is kept with reason ``""``).
- ``copied_example``: the reason is the prompt's example reason copied
  (:func:`rlhf.prompts.copies_example`); the item is kept, the list is not valid.
- ``other_item_reason``: the reason begins with ANOTHER candidate's title, i.e. it is that item's
  description (SmolLM2 writes ``C03 | Oak Wall Hanging (Home Decor, price 20.99)`` for an oak frame:
  a false title and price for the item listed); the item is kept, the list is not valid. Only checked
  when the candidates' titles are known (a ContextView, or ``titles``); a title that the item's own
  title begins with does not count, nor one under :data:`MIN_TITLE_CHARS` letters and digits.
- ``too_few`` / ``too_many``: fewer / more usable items than asked (extra items are dropped).

``n_valid`` counts the items kept (candidate ids, first occurrence, at most ``n_expected``);
``is_valid`` is True only when there is no problem at all, i.e. exactly ``n_expected`` candidate
items, each with a reason, and nothing else in the text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.prompts import copies_example, letters_and_digits
from storage.records import ListItem

log = logging.getLogger(__name__)

PROBLEM_KINDS: tuple[str, ...] = (
    "unparseable", "unknown_id", "not_a_candidate", "duplicate", "missing_reason", "copied_example",
    "other_item_reason", "too_few", "too_many",
)
PROBLEM_LABELS: dict[str, str] = {
    "unparseable": "unreadable line",
    "unknown_id": "unknown item",
    "not_a_candidate": "not a candidate",
    "duplicate": "duplicate",
    "missing_reason": "no reason",
    "copied_example": "copied example reason",
    "other_item_reason": "describes another item",
    "too_few": "too few items",
    "too_many": "too many items",
}

MAX_REASON_CHARS = 500
MIN_TITLE_CHARS = 6  # a shorter title ("Mug") is a word a reason may begin with, not a description
_MAX_LINES = 200  # a runaway output is judged on its first lines; the rest is one problem

_SHORT_RE = re.compile(r"^c0*(\d{1,4})$", re.IGNORECASE)
_SHORT_ANYWHERE_RE = re.compile(r"(?<![A-Za-z0-9])[Cc]0*(\d{1,4})(?![A-Za-z0-9])")
_PREFIX_RE = re.compile(
    r"^\s*(?:[-*•+>]+\s*)?(?:\*\*|__)?\s*(?:(?:#|no\.?\s*)?\d{1,3}\s*[.):\]]+\s*)?(?:\*\*|__)?\s*", re.IGNORECASE
)
_SEPARATOR_RE = re.compile(r"\s*(?:\||:|\s[-–—]\s|[-–—]{1,2}(?=\s)|=>|->)\s*")
_STRIP_ID = " \t*_`'\"[](){}<>#.,;"


@dataclass(frozen=True)
class ParsedList:
    """The usable part of a generated list and everything that was wrong with it."""

    items: list[ListItem]
    problems: list[dict[str, Any]]
    is_valid: bool
    n_valid: int
    n_expected: int
    short_ids: list[str] = field(default_factory=list)

    def problem_kinds(self) -> list[str]:
        """Distinct problem kinds in order of first appearance (for badges)."""
        return list(dict.fromkeys(p["kind"] for p in self.problems))


def _mapping_from(view_or_mapping: Any) -> dict[str, str]:
    """short id -> real item id, from a ContextView, a mapping, or a plain list of candidate ids."""
    if hasattr(view_or_mapping, "short_to_item"):
        return dict(view_or_mapping.short_to_item)
    if isinstance(view_or_mapping, Mapping):
        return {str(k): str(v) for k, v in view_or_mapping.items()}
    if isinstance(view_or_mapping, Sequence) and not isinstance(view_or_mapping, str):
        from rlhf.prompts import short_id_for

        ids = [str(x) for x in view_or_mapping]
        return {short_id_for(i, len(ids)): x for i, x in enumerate(ids)}
    return {}


def _titles_from(view_or_mapping: Any, titles: Mapping[str, str] | None) -> dict[str, str]:
    """item id -> title: ``titles`` when given, else a ContextView's candidates, else nothing."""
    if titles is not None:
        return {str(k): str(v) for k, v in titles.items()}
    return {c.item_id: c.title for c in getattr(view_or_mapping, "candidates", None) or []
            if getattr(c, "title", None)}


def describes_other_item(reason: str, item_id: str, titles: Mapping[str, str]) -> str | None:
    """The id of another candidate whose title ``reason`` begins with, or None.

    Compared in :func:`rlhf.prompts.letters_and_digits` form, so case, spacing and punctuation do not
    matter. ``titles`` maps candidate ids to titles; a title that ``item_id``'s own title begins with
    ("Oak Frame" inside "Oak Frame Large") is the item's own name, not another's.
    """
    said = letters_and_digits(reason)
    own = letters_and_digits(titles.get(item_id, ""))
    for other, title in titles.items():
        spelled = letters_and_digits(title)
        if other != item_id and len(spelled) >= MIN_TITLE_CHARS and said.startswith(spelled) \
                and not own.startswith(spelled):
            return other
    return None


def _problem(kind: str, detail: str, position: int | None) -> dict[str, Any]:
    return {"kind": kind, "detail": detail, "position": position}


def _clean_reason(text: str) -> str:
    reason = " ".join(text.split()).strip(" *_\"'`|:-–—")
    return reason[:MAX_REASON_CHARS]


class _Resolver:
    """Classifies an id token against the candidates and the catalogue."""

    def __init__(self, mapping: dict[str, str], catalog_ids: Collection[str] | None) -> None:
        self.by_number: dict[int, str] = {}
        for short in mapping:
            m = _SHORT_RE.match(short)
            if m:
                self.by_number[int(m.group(1))] = short
        self.mapping = mapping
        self.candidates = {v: k for k, v in mapping.items()}
        self.catalog_ids = catalog_ids

    def resolve(self, token: str) -> tuple[str, str | None, str | None]:
        """(status, real item id, short id); status in ok / unknown_id / not_a_candidate / not_an_id."""
        token = token.strip(_STRIP_ID)
        if not token:
            return "not_an_id", None, None
        m = _SHORT_RE.match(token)
        if m:
            short = self.by_number.get(int(m.group(1)))
            if short is not None:
                return "ok", self.mapping[short], short
        if token in self.candidates:
            return "ok", token, self.candidates[token]
        if self.catalog_ids is not None and token in self.catalog_ids:
            return "not_a_candidate", token, None
        if m or (" " not in token and len(token) <= 64 and any(ch.isdigit() for ch in token)):
            return "unknown_id", None, None
        return "not_an_id", None, None


def _split_line(line: str) -> tuple[str, str | None]:
    """(id part, reason or None when there is no separator) after removing rank/bullet markup."""
    body = _PREFIX_RE.sub("", line, count=1)
    m = _SEPARATOR_RE.search(body)
    if m is None or m.start() == 0:
        parts = body.split(None, 1)
        if not parts:
            return "", None
        return parts[0], (parts[1] if len(parts) > 1 else None)
    return body[: m.start()], body[m.end():]


def _parse_lines(text: str, resolver: _Resolver, n_expected: int, titles: Mapping[str, str]) -> ParsedList:
    items: list[ListItem] = []
    shorts: list[str] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    extra = 0
    lines = text.splitlines()
    for lineno, raw in enumerate(lines[:_MAX_LINES], start=1):
        line = raw.strip()
        if not line:
            continue
        head, reason = _split_line(line)
        status, item_id, short = resolver.resolve(head)
        if status == "not_an_id":
            # "Blue mug (C07) - reason": fall back to the one short id written anywhere on the line.
            found = _SHORT_ANYWHERE_RE.findall(line)
            if len(found) == 1:
                status, item_id, short = resolver.resolve("C" + found[0])
                m = _SHORT_ANYWHERE_RE.search(line)
                rest = line[m.end():] if m else ""
                sep = _SEPARATOR_RE.search(rest)
                reason = rest[sep.end():] if sep else rest
        if status == "not_an_id":
            problems.append(_problem("unparseable", f"not an item line: {line[:80]!r}", lineno))
            continue
        if status == "unknown_id":
            problems.append(_problem("unknown_id", f"{head.strip(_STRIP_ID)[:40]!r} is not a candidate id", lineno))
            continue
        if status == "not_a_candidate":
            problems.append(_problem("not_a_candidate", f"{item_id!r} is not among this context's candidates", lineno))
            continue
        assert item_id is not None and short is not None
        if item_id in seen:
            problems.append(_problem("duplicate", f"{short} is listed more than once", lineno))
            continue
        seen.add(item_id)
        if len(items) >= n_expected:
            extra += 1
            continue
        cleaned = _clean_reason(reason or "")
        if not any(ch.isalnum() for ch in cleaned):
            cleaned = ""
            problems.append(_problem("missing_reason", f"{short} has no reason", lineno))
        elif copies_example(cleaned):
            problems.append(_problem("copied_example", f"{short}'s reason is the prompt's example", lineno))
        elif titles and (other := describes_other_item(cleaned, item_id, titles)) is not None:
            problems.append(_problem(
                "other_item_reason", f"{short}'s reason begins with another candidate's title ({other})", lineno))
        items.append(ListItem(item_id, cleaned))
        shorts.append(short)
    if len(lines) > _MAX_LINES:
        problems.append(_problem("unparseable", f"{len(lines) - _MAX_LINES} more lines were not read", None))
    if not items and not problems:
        problems.append(_problem("unparseable", "the output is empty", None))
    if len(items) < n_expected:
        problems.append(_problem("too_few", f"{len(items)} usable items, {n_expected} asked", None))
    if extra:
        problems.append(_problem("too_many", f"{extra} items beyond the {n_expected} asked were dropped", None))
    return ParsedList(items, problems, not problems, len(items), n_expected, shorts)


def parse_list(
    text: Any, view_or_mapping: Any, n_expected: int, catalog_ids: Collection[str] | None = None,
    titles: Mapping[str, str] | None = None,
) -> ParsedList:
    """Parse ``text`` into at most ``n_expected`` candidate items with reasons; never raises.

    ``view_or_mapping`` is a :class:`rlhf.prompts.ContextView`, a ``{short id: item id}`` mapping, or a
    list of candidate item ids (short ids are then C01.. in that order). ``catalog_ids`` (optional)
    lets real-but-wrong ids be told apart (``not_a_candidate``) from invented ones (``unknown_id``).
    ``titles`` (candidate id -> title; a ContextView brings its own) turns on ``other_item_reason``.
    """
    try:
        n = max(0, int(n_expected))
    except Exception:  # noqa: BLE001 - never raise on odd input
        n = 0
    try:
        body = text if isinstance(text, str) else ("" if text is None else str(text))
        return _parse_lines(body, _Resolver(_mapping_from(view_or_mapping), catalog_ids), n,
                            _titles_from(view_or_mapping, titles))
    except Exception as exc:
        log.exception("parser error (recorded as a problem)")
        return ParsedList([], [_problem("unparseable", f"parser error: {type(exc).__name__}", None)], False, 0, n)
