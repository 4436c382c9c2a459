"""Splitting long text (a chapter, an article) into chunks T3 can speak comfortably.

The text is cut into units at the best boundaries available: sentences (paragraph ends
marked); a sentence longer than the budget into clauses (, ; : and dashes), a clause still too
long into words, a word into characters. A small dynamic programme then groups consecutive
units into chunks of at most ``max_tokens`` tokens, choosing the cut points that give few,
full and even chunks and that prefer paragraph ends to sentence ends to clause ends to words.

Only whitespace changes: runs of whitespace become one space, and joining the chunks back
gives every other character of the input in order.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

TokenCounter = Callable[[str], int]

_CLOSERS = "\"'\u201d\u2019)]}\u00bb\u300d\u300f"  # " ' ” ’ ) ] } » 」 』
_OPENERS = "\"'\u201c\u2018([{\u00ab\u300c\u300e"  # " ' “ ‘ ( [ { « 「 『
_C = "[" + re.escape(_CLOSERS) + "]*"
# Latin enders need a following space to count (so 3.5 and U.S.A stay whole); CJK ones do not.
_SENTENCE_END = re.compile(r"[.!?\u2026]+" + _C + r"(?= )|[\u3002\uff01\uff1f]+" + _C)
_CJK_ENDERS = "\u3002\uff01\uff1f"  # 。！？
# Clause ends: , ; : (followed by a space), CJK ，、；：, dashes, and a spaced hyphen.
_CLAUSE_END = re.compile(r"[,;:]" + _C + r"(?= )|[\uff0c\u3001\uff1b\uff1a]" + _C + r"|[\u2014\u2013]" + _C
                         + r"| -(?= )")
# A paragraph that ends without punctuation (a heading) is never run into the next one.
_PUNCTUATION = ".!?\u2026,;:-\u2014\u2013\u3002\uff01\uff1f\uff0c\u3001\uff1b\uff1a"
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

# A period after these never ends a sentence (titles, and abbreviations that introduce more).
_NEVER_FINAL = frozenset(
    "mr mrs ms mx dr prof rev hon st mt ft gen col capt lt sgt maj adm gov sen rep pres messrs mme mlle "
    "e.g i.e cf vs viz approx ca".split()
)
# ... nor after these when a number follows ("No. 5", "p. 12", "Fig. 3").
_BEFORE_NUMBER = frozenset("no nos vol fig figs p pp ch sec art op nr".split())

# Cost of a chunk ending at each kind of boundary; a chunk itself costs 1 + (its empty fraction)^2.
_PARAGRAPH, _SENTENCE, _CLAUSE, _WORD, _CHARACTER = 0.0, 0.05, 0.3, 0.6, 1.0


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int  # counted alone
    space_before: bool  # joined to the previous unit with a space (else directly, as in CJK)
    end_cost: float  # cost of a chunk ending after this unit
    hard_end: bool = False  # a chunk must end after this unit (a heading)


def split_text(text: str, max_tokens: int, count_tokens: TokenCounter) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens each, in order.

    ``count_tokens`` counts a chunk's tokens the way the model will see them (the model's
    normaliser and tokeniser, no start/stop tokens).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not callable(count_tokens):
        raise ValueError("count_tokens must be callable")

    units: list[_Unit] = []
    for paragraph in _paragraphs(text):
        sentences = _split_at(paragraph, _SENTENCE_END, _is_sentence_end)
        for k, (space_before, sentence) in enumerate(sentences):
            last = k == len(sentences) - 1
            heading = last and not sentence.rstrip(_CLOSERS).endswith(tuple(_PUNCTUATION))
            # A paragraph's first sentence follows the previous paragraph after a space.
            units += _units(sentence, space_before or k == 0, _PARAGRAPH if last else _SENTENCE, heading,
                            max_tokens, count_tokens)
    return _pack(units, max_tokens, count_tokens)


def _paragraphs(text: str) -> list[str]:
    """Paragraphs (split at blank lines) with all whitespace runs collapsed to one space."""
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text))
    return [p for p in paragraphs if p]


def _split_at(text: str, pattern: re.Pattern, accept=None) -> list[tuple[bool, str]]:
    """Cut ``text`` after each match of ``pattern`` (that ``accept`` approves); returns
    ``(preceded by a space, piece)`` pairs. ``text`` has single spaces only."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        end = match.end()
        if end >= len(text) or end <= start or (accept is not None and not accept(text, match)):
            continue
        pieces.append((start > 0 and text[start - 1] == " ", text[start:end]))
        start = end + 1 if text[end] == " " else end
    pieces.append((start > 0 and text[start - 1] == " ", text[start:]))
    return [(space, piece) for space, piece in pieces if piece]


def _is_sentence_end(text: str, match: re.Match) -> bool:
    if match.group()[0] in _CJK_ENDERS:
        return True
    following = text[match.end() + 1:].lstrip(_OPENERS)
    if following[:1].islower():  # '"Really?" she asked', "e.g. this", "... and then"
        return False
    if match.group().rstrip(_CLOSERS) != ".":
        return True
    word = text[:match.start()].rsplit(" ", 1)[-1].lstrip(_OPENERS).lower()
    if word in _NEVER_FINAL or (len(word) == 1 and word.isalpha() and word != "i"):  # titles, initials (not "I.")
        return False
    return not (word in _BEFORE_NUMBER and following[:1].isdigit())


def _units(text: str, space_before: bool, end_cost: float, hard_end: bool, max_tokens: int,
           count: TokenCounter) -> list[_Unit]:
    """``text`` as one unit if it fits, else as its clauses, words or characters (recursively).
    The first part keeps ``space_before``, the last ``end_cost`` and ``hard_end``."""
    tokens = count(text)
    if tokens <= max_tokens:
        return [_Unit(text, tokens, space_before, end_cost, hard_end)]
    clauses = _split_at(text, _CLAUSE_END)
    if len(clauses) > 1:
        parts = [(space, clause, _CLAUSE) for space, clause in clauses]
    elif " " in text:
        parts = [(True, word, _WORD) for word in text.split(" ")]
    elif len(text) > 1:
        parts = [(False, char, _CHARACTER) for char in text]
    else:
        raise ValueError(f"max_tokens={max_tokens} is too small: {text!r} alone is {tokens} tokens")
    units = [unit for space, part, cost in parts for unit in _units(part, space, cost, False, max_tokens, count)]
    units[0] = replace(units[0], space_before=space_before)
    units[-1] = replace(units[-1], end_cost=end_cost, hard_end=hard_end)
    return units


def _pack(units: list[_Unit], max_tokens: int, count: TokenCounter) -> list[str]:
    """Group the units into chunks of at most ``max_tokens`` at the cheapest cut points.

    ``reach[i]``: units[i:reach[i]] is the longest run from i that fits (two pointers, so about
    two exact counts per unit). Runs are ranked by the sum of their units' own counts; a chosen
    run is counted again, and if it does not fit after all (a tokenizer can merge across a
    joint, so a shorter run may count more) it is excluded and the cuts are chosen again.
    """
    n = len(units)
    reach, end = [], 0
    for i in range(n):
        end = max(end, i + 1)
        while end < n and not units[end - 1].hard_end and count(_join(units[i:end + 1])) <= max_tokens:
            end += 1
        reach.append(end)
    prefix = list(itertools.accumulate((u.tokens for u in units), initial=0))
    excluded: set[tuple[int, int]] = set()
    while True:
        chunks = _cheapest_cuts(units, reach, prefix, max_tokens, excluded)
        too_long = {(i, j) for i, j in chunks if j > i + 1 and count(_join(units[i:j])) > max_tokens}
        if not too_long:
            return [_join(units[i:j]) for i, j in chunks]
        excluded |= too_long


def _cheapest_cuts(units: list[_Unit], reach: list[int], prefix: list[int], max_tokens: int,
                   excluded: set[tuple[int, int]]) -> list[tuple[int, int]]:
    n = len(units)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the cheapest chunking of units[:j]
    previous = [0] * (n + 1)
    for i in range(n):
        for j in range(i + 1, reach[i] + 1):
            if (i, j) in excluded:
                continue
            empty = max(0.0, 1.0 - (prefix[j] - prefix[i]) / max_tokens)
            cost = best[i] + 1.0 + empty * empty + (0.0 if j == n else units[j - 1].end_cost)
            if cost < best[j]:
                best[j], previous[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append((previous[j], j))
        j = previous[j]
    return chunks[::-1]


def _join(units: list[_Unit]) -> str:
    return "".join((" " if u.space_before and k else "") + u.text for k, u in enumerate(units))
