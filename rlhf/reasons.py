"""Whether a list's reasons are about the item or the shopper at all: a lexical check for evaluation.

The product recommends items *with a reason for each*, and NDCG says nothing about the reasons. The
parser catches reasons that are missing, copied from the prompt's example or another candidate's title;
it cannot catch a fluent reason about something else ("A man who had a dream to be a chef" for a
building-block word). This check can: a reason is *grounded* when it shares a content word with the
item's title or category or with a title in the shopper's history.

It is a lower bound on nonsense, not a measure of quality: a grounded reason may still be wrong or
dull, and a good reason may use a synonym (it then counts as ungrounded). Words are compared lower-cased,
letters only, three letters or more, without a plural "s" and without common function words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: Function words and filler that say nothing about an item; everything else counts as content.
STOP_WORDS = frozenset([
    "the", "and", "for", "with", "from", "this", "that", "these", "those", "are", "was", "were", "been",
    "being", "has", "have", "had", "its", "their", "they", "them", "you", "your", "our", "his", "her", "she",
    "him", "who", "whom", "which", "what", "when", "where", "why", "how", "all", "any", "each", "few",
    "more", "most", "other", "some", "such", "only", "own", "same", "than", "too", "very", "can", "will",
    "just", "into", "over", "under", "again", "further", "then", "once", "here", "there", "also", "not",
    "nor", "but", "yet", "out", "off", "about", "above", "below", "between", "both", "because", "while",
    "during", "before", "after", "per", "one",
])


def content_words(text: str | None) -> set[str]:
    """The words of ``text`` that carry content, in the form reasons and titles are compared in."""
    words = set()
    for word in re.findall(r"[a-z]+", (text or "").lower()):
        if len(word) < 3 or word in STOP_WORDS:
            continue
        words.add(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return words


def reason_is_grounded(reason: str | None, about: Iterable[str | None]) -> bool:
    """Whether ``reason`` shares a content word with any text in ``about`` (the item's title and category,
    the titles the shopper bought before)."""
    said = content_words(reason)
    return bool(said) and any(said & content_words(text) for text in about)


#: One line of a list as the check reads it: ``(reason, item title, item category)``.
Line = tuple[str | None, str | None, str | None]


def grounded_lines(lines: Sequence[Line], history: Iterable[str | None]) -> list[bool]:
    """For each line, whether its reason is about its item or a title in ``history`` (the shopper's
    earlier purchases): the one place that says what a line is checked against."""
    past = list(history)
    return [reason_is_grounded(reason, [title, category, *past]) for reason, title, category in lines]


def off_topic_share(lines: Sequence[Line], history: Iterable[str | None]) -> float:
    """The share of a list's lines whose reason is about neither the item nor the shopper's history; 0.0 for
    an empty list. What a reader of the reasons notices first: the simulated crowd uses it when it reads
    reasons (``simulation.reason_penalty``), and the reasons benchmark when it asks whether a reward model
    learns it."""
    flags = grounded_lines(lines, history)
    return (len(flags) - sum(flags)) / len(flags) if flags else 0.0
