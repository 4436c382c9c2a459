"""normalize_text must equal the original punc_norm character for character."""


import numpy as np
import pytest

from tests.paths import FIXTURE_REF
from vllm_chatterbox.text import EMPTY_TEXT_REPLACEMENT, normalize_text

TEXT_FIXTURE = FIXTURE_REF / "text.npz"


def _fixture_cases() -> list[tuple[str, str]]:
    data = np.load(TEXT_FIXTURE)
    return [(str(raw), str(norm)) for raw, norm in zip(data["input"], data["normalized"])]


@pytest.mark.parametrize("raw,expected", _fixture_cases())
def test_matches_original_on_fixture(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_fixture_has_all_cases() -> None:
    assert len(_fixture_cases()) == 17


def test_empty_string_becomes_the_original_filler_sentence() -> None:
    assert normalize_text("") == EMPTY_TEXT_REPLACEMENT == "You need to add some text for me to talk."


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("hi", "Hi."),
        ("  hi", "hi."),  # capital check runs before whitespace is collapsed
        ("\thi there", "hi there."),
        ("école", "École."),  # any lower-case letter, not just ASCII
        ("1 cat", "1 cat."),
        ("   ", "."),  # whitespace only: collapses to "" and gets a full stop
    ],
)
def test_capitalisation_quirk(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        # "..." -> ", " runs before " ," -> ",", so the space before it is eaten.
        ("a ... b", "A,  b."),
        ("Wait…", "Wait,"),  # trailing ", " loses its space, and "," is an ender
        ("A: b", "A, b."),
        ("a - b", "A, b."),
        # Dashes become "-" only after " - " was handled, so spaced dashes stay spaced.
        ("a — b", "A - b."),
        ("a – b", "A - b."),
        ("x;y", "X, y."),
        ("x;", "X,"),
        ("one , two", "One, two."),
        ("“Hi” ‘there’", "\"Hi\" 'there'."),
        ("Really?", "Really?"),
        ("Stop!", "Stop!"),
        ("Cut-", "Cut-"),
        ("a\n\nb\r\nc", "A b c."),
    ],
)
def test_replacements_in_order(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("ender", ["、", "，", "。", "？", "！"])
def test_multilingual_enders(ender: str) -> None:
    text = f"你好{ender}"
    assert normalize_text(text, multilingual=True) == text
    assert normalize_text(text) == text + "."  # not an ender for the English model


def test_multilingual_shares_the_rest() -> None:
    assert normalize_text("hola... ¿qué tal", multilingual=True) == "Hola,  ¿qué tal."


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a"]])
def test_non_str_is_rejected(bad) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        normalize_text(bad)
