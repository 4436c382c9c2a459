"""Punctuation clean-up applied to every input text before tokenisation.

This reproduces the original Chatterbox ``punc_norm`` character for character, quirks
included, because the model was trained on text cleaned this way.
"""

from __future__ import annotations

# What the original speaks when handed an empty string.
EMPTY_TEXT_REPLACEMENT = "You need to add some text for me to talk."

# Applied one after another in this order; later rules see the output of earlier ones
# (e.g. "..." becomes ", " before " ," is collapsed, so "a ... b" keeps a double space).
_PUNCTUATION_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("...", ", "),
    ("\u2026", ", "),  # horizontal ellipsis
    (":", ","),
    (" - ", ", "),
    (";", ", "),
    ("\u2014", "-"),  # em dash
    ("\u2013", "-"),  # en dash
    (" ,", ","),
    ("\u201c", '"'),  # left double quotation mark
    ("\u201d", '"'),  # right double quotation mark
    ("\u2018", "'"),  # left single quotation mark
    ("\u2019", "'"),  # right single quotation mark
)

# Turbo's own copy of the rules drops "...", " - " and ";" (they reach its GPT-2 tokenizer as is).
_TURBO_DROPPED_RULES = {"...", " - ", ";"}
_TURBO_PUNCTUATION_REPLACEMENTS: tuple[tuple[str, str], ...] = tuple(
    rule for rule in _PUNCTUATION_REPLACEMENTS if rule[0] not in _TURBO_DROPPED_RULES
)

_SENTENCE_ENDERS: tuple[str, ...] = (".", "!", "?", "-", ",")
# The multilingual model also accepts CJK full-width enders.
_MULTILINGUAL_SENTENCE_ENDERS: tuple[str, ...] = _SENTENCE_ENDERS + (
    "\u3001",  # 、
    "\uff0c",  # ，
    "\u3002",  # 。
    "\uff1f",  # ？
    "\uff01",  # ！
)


def normalize_text(text: str, *, multilingual: bool = False, turbo: bool = False) -> str:
    """Clean punctuation and whitespace exactly like the original ``punc_norm``
    (``turbo``: the Turbo/Nano variant of it in ``tts_turbo.py``)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if len(text) == 0:
        return EMPTY_TEXT_REPLACEMENT

    # The capital check looks at the raw first character, before whitespace is
    # collapsed, so text with leading whitespace is never capitalised.
    if text[0].islower():
        text = text[0].upper() + text[1:]

    text = " ".join(text.split())

    for old, new in _TURBO_PUNCTUATION_REPLACEMENTS if turbo else _PUNCTUATION_REPLACEMENTS:
        text = text.replace(old, new)

    text = text.rstrip(" ")
    enders = _MULTILINGUAL_SENTENCE_ENDERS if multilingual else _SENTENCE_ENDERS
    if not text.endswith(enders):
        text += "."
    return text
