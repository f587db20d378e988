"""Whether a list's reasons are about the item or the shopper at all: a lexical check for evaluation.

The product recommends items *with a reason for each*, and NDCG says nothing about the reasons. The
parser catches reasons that are missing, copied from the prompt's example or another candidate's title;
it cannot catch a fluent reason about something else ("A man who had a dream to be a chef" for a
building-block word). This check can: a reason is *grounded* when it shares a content word with the
item's title or category or with a title in the shopper's history.

A reason that begins by copying a candidate's line from the prompt (its title, or most of it, and the
bracketed category and price the prompt writes after it) is judged on what follows the copy: the copy
says nothing about why, and a copy of a neighbour's line names the wrong item while sharing its category.
So is a reason that begins with a line in the prompt's format under a name no candidate has: SmolLM2
garbles and invents them ("Recycled Plastic Card Game (Toys & Games, price 18.99)" for building blocks),
and its name shares the item's words as a copy does. A reason that is such a product line and nothing
about the item or the shopper besides is a *copy*, not grounded.

It is a lower bound on nonsense, not a measure of quality: a grounded reason may still be wrong or
dull, and a good reason may use a synonym (it then counts as ungrounded). Words are compared lower-cased,
letters only, three letters or more, without a plural "s" and without common function words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from rlhf.prompts import letters_and_digits

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


#: A copy of a candidate's title is at least this many of its first words, and more than half of them: a
#: reason may begin with the item's noun ("Candles in the evening") without copying "CANDLES IN A JAR".
MIN_COPIED_WORDS = 2


def after_copied_line(reason: str, titles: Iterable[str]) -> str:
    """What ``reason`` says after a copy of one of ``titles`` (the candidates') at its start, and after the
    bracketed details the prompt writes behind a title ("(kitchen & dining, price 1.65)", closed or not);
    ``reason`` itself when it begins with no copy. Words are compared in
    :func:`rlhf.prompts.letters_and_digits` form, so case and punctuation do not hide a copy."""
    words = reason.split()
    spelled = [letters_and_digits(w) for w in words]
    copied = 0
    for title in titles:
        named = [letters_and_digits(w) for w in title.split()]
        n = 0
        while n < min(len(named), len(spelled)) and spelled[n] and spelled[n] == named[n]:
            n += 1
        if n >= MIN_COPIED_WORDS and 2 * n > len(named):
            copied = max(copied, n)
    if not copied:
        return reason
    rest = " ".join(words[copied:])
    if rest[:1] in ("(", "["):
        close = rest.find(")" if rest[0] == "(" else "]")
        rest = rest[close + 1:].strip() if close >= 0 else ""
    return rest


#: The prompt's details behind an item's name as a policy writes them: a bracket, a category, then the price
#: ("(Toys & Games, price 18.99)", "(home decor, price: $9."), or the price alone after a comma ("Felt Card
#: Game, price 17.99"); what makes a line a product line.
_ROW_DETAILS = re.compile(r"\(\s*[^()]{1,60}?,\s*price\s*:?\s*[$£€]?\s*\d", re.IGNORECASE)
_ROW_PRICE = re.compile(r",\s*price\s*:?\s*[$£€]?\s*\d+(?:[.,]\d+)?\.?", re.IGNORECASE)
#: A product line's name is a title: a few words. A longer text before the details is a sentence.
MAX_ROW_NAME_WORDS = 8


def after_product_line(reason: str, titles: Iterable[str]) -> str:
    """What ``reason`` says after a product line at its start: a copied candidate line
    (:func:`after_copied_line`), or any name of at most :data:`MAX_ROW_NAME_WORDS` words followed by the
    prompt's bracketed category and price, or by ", price" and a number (a garbled or invented item, the
    price often false); ``reason`` itself when it begins with neither. What the verdicts read
    (:func:`line_verdicts`)."""
    rest = after_copied_line(reason, titles)
    if rest != reason:
        return rest
    found = [m for m in (_ROW_DETAILS.search(reason), _ROW_PRICE.search(reason)) if m is not None]
    if not found:
        return reason
    details = min(found, key=lambda m: m.start())
    if not 0 < len(reason[:details.start()].split()) <= MAX_ROW_NAME_WORDS:
        return reason
    if details.re is _ROW_PRICE:
        return reason[details.end():].strip()
    close = reason.find(")", details.end())
    return reason[close + 1:].strip() if close >= 0 else ""


_ARTICLES = frozenset({"a", "an", "the"})


def is_only_a_name(said: str, titles: Iterable[str | None]) -> bool:
    """Whether ``said`` is no more than a product's name: at most :data:`MAX_ROW_NAME_WORDS` words, each of
    them (after a leading article, a plural ending aside) a word of one of ``titles``, as in "A stoneware
    butter dish." beside "Stoneware Butter Dish". A name is not a reason, not even the item's own; "For the
    puzzles" is one (it says "for")."""
    words = [w for w in (letters_and_digits(w) for w in said.split()) if w]
    if words and words[0] in _ARTICLES:
        words = words[1:]
    if not words or len(words) > MAX_ROW_NAME_WORDS:
        return False
    for title in titles:
        named = {letters_and_digits(w) for w in (title or "").split()}
        if all(_singulars(w) & named for w in words):
            return True
    return False


def _singulars(word: str) -> set[str]:
    """``word`` and what it would be without a plural ending ("dishes": dishes, dishe, dish)."""
    if not word.endswith("s"):
        return {word}
    return {word, word[:-1], word[:-2]} if word.endswith("es") else {word, word[:-1]}


#: One line of a list as the check reads it: ``(reason, item title, item category)``.
Line = tuple[str | None, str | None, str | None]
#: What the check says of one reason.
Verdict = Literal["grounded", "copy", "off_topic"]


def line_verdicts(lines: Sequence[Line], history: Iterable[str | None], candidates: Iterable[str | None]) -> list[Verdict]:
    """For each line: ``grounded`` (what the reason says, after any product line, is about its item or a
    title in ``history``, the shopper's earlier purchases), ``copy`` (it is not, and the reason begins with
    a product line, copied or not, :func:`after_product_line`; or what it says is only a product's name,
    :func:`is_only_a_name`: a name is not a reason) or ``off_topic``. ``candidates`` are the titles of the
    context's candidates, the lines the prompt showed. The one place that says what a line is checked against."""
    past = list(history)
    titles = [t for t in candidates if t]
    out: list[Verdict] = []
    for reason, title, category in lines:
        reason = reason or ""
        said = after_product_line(reason, [*titles, *([title] if title else [])])
        if is_only_a_name(said, [title, *titles, *past]):
            out.append("copy")
        elif reason_is_grounded(said, [title, category, *past]):
            out.append("grounded")
        else:
            out.append("copy" if said != reason else "off_topic")
    return out


def grounded_lines(lines: Sequence[Line], history: Iterable[str | None], candidates: Iterable[str | None]) -> list[bool]:
    """For each line, whether its reason is grounded (:func:`line_verdicts`)."""
    return [v == "grounded" for v in line_verdicts(lines, history, candidates)]


def off_topic_share(lines: Sequence[Line], history: Iterable[str | None], candidates: Iterable[str | None]) -> float:
    """The share of a list's lines whose reason is not grounded (off-topic, or only a copied candidate line);
    0.0 for an empty list. What a reader of the reasons notices first: the simulated crowd uses it when it
    reads reasons (``simulation.reason_penalty``), and the reasons benchmark when it asks whether a reward
    model learns it."""
    flags = grounded_lines(lines, history, candidates)
    return (len(flags) - sum(flags)) / len(flags) if flags else 0.0
