"""Tokenisation must give the original's ids.

English: the fixture's ids recorded from the original. Multilingual: no recording exists,
so expected ids are rebuilt here from the JSON file itself (vocab, merges, added tokens)
and the documented rules (lower, NFKD, language tag, [SPACE]), with a small reference BPE
that is itself checked against the English fixture.
"""

import json
import re
import sys
import types
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from tests.paths import FIXTURE_REF, FIXTURE_CKPT, SHARED_DATA
from vllm_chatterbox.text import (
    SUPPORTED_LANGUAGES,
    EnglishTokenizer,
    MultilingualTokenizer,
    normalize_text,
    text_to_token_ids,
)

TEXT_FIXTURE = FIXTURE_REF / "text.npz"
FIXTURE_TOKENIZER = FIXTURE_CKPT / "tokenizer.json"
MTL_TOKENIZER = SHARED_DATA / "grapheme_mtl_merged_expanded_v1.json"

MTL_JSON = json.loads(MTL_TOKENIZER.read_text(encoding="utf-8"))
MTL_VOCAB: dict[str, int] = MTL_JSON["model"]["vocab"]

LANGUAGE_IDS = tuple("ar da de el en es fi fr he hi it ja ko ms nl no pl pt ru sv sw tr zh".split())


@pytest.fixture(scope="module")
def english() -> EnglishTokenizer:
    return EnglishTokenizer.from_file(FIXTURE_TOKENIZER)


@pytest.fixture()
def multilingual() -> MultilingualTokenizer:
    # Fresh per test: language tools are cached on the instance.
    return MultilingualTokenizer.from_file(MTL_TOKENIZER)


def reference_bpe(text: str, tokenizer_json: dict) -> list[int]:
    """Plain BPE as the JSON describes it: added tokens first, whitespace pre-split,
    lowest-rank merge first, unknown single symbols -> [UNK]."""
    vocab = tokenizer_json["model"]["vocab"]
    ranks = {tuple(m.split(" ")): rank for rank, m in enumerate(tokenizer_json["model"]["merges"])}
    added = sorted((t["content"] for t in tokenizer_json["added_tokens"]), key=len, reverse=True)
    ids = []
    for piece in re.split("(" + "|".join(map(re.escape, added)) + ")", text):
        if piece in added:
            ids.append(vocab[piece])
            continue
        for word in re.findall(r"\w+|[^\w\s]+", piece):
            symbols = list(word)
            while True:
                candidates = [
                    (ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks
                ]
                if not candidates:
                    break
                _, i = min(candidates)
                symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
            ids.extend(vocab.get(symbol, vocab["[UNK]"]) for symbol in symbols)
    return ids


def expected_multilingual_ids(normalized: str, language: str) -> list[int]:
    """The documented rules for languages without a language-specific step."""
    text = unicodedata.normalize("NFKD", normalized.lower())
    return reference_bpe(f"[{language}]" + text.replace(" ", "[SPACE]"), MTL_JSON)


def _fixture_cases() -> list[tuple[str, str, list[int]]]:
    data = np.load(TEXT_FIXTURE)
    offsets = data["offsets"]
    return [
        (str(raw), str(norm), data["ids_concat"][offsets[k] : offsets[k + 1]].tolist())
        for k, (raw, norm) in enumerate(zip(data["input"], data["normalized"]))
    ]


# ---------------------------------------------------------------- English


@pytest.mark.parametrize("raw,normalized,ids", _fixture_cases())
def test_english_fixture_ids(english: EnglishTokenizer, raw: str, normalized: str, ids: list[int]) -> None:
    assert english.encode(normalized) == ids
    wrapped = text_to_token_ids(raw, english, max_text_tokens=2048)
    assert wrapped == [255, *ids, 0]


def test_hello_world(english: EnglishTokenizer) -> None:
    assert english.encode("Hello world.") == [284, 18, 84, 28, 2, 179, 79, 9]
    assert text_to_token_ids("Hello world.", english, max_text_tokens=2048) == [
        255, 284, 18, 84, 28, 2, 179, 79, 9, 0
    ]


@pytest.mark.parametrize("raw,normalized,ids", _fixture_cases())
def test_reference_bpe_reproduces_english_fixture(raw: str, normalized: str, ids: list[int]) -> None:
    # Validates the helper the multilingual tests rely on.
    english_json = json.loads(FIXTURE_TOKENIZER.read_text(encoding="utf-8"))
    assert reference_bpe(normalized.replace(" ", "[SPACE]"), english_json) == ids


def test_english_accepts_only_english(english: EnglishTokenizer) -> None:
    assert text_to_token_ids("Hi.", english, language="EN", max_text_tokens=2048) == text_to_token_ids(
        "Hi.", english, max_text_tokens=2048
    )
    with pytest.raises(ValueError, match="English model"):
        text_to_token_ids("Bonjour.", english, language="fr", max_text_tokens=2048)


# ---------------------------------------------------------------- multilingual


def test_supported_languages() -> None:
    assert tuple(SUPPORTED_LANGUAGES) == LANGUAGE_IDS
    assert SUPPORTED_LANGUAGES["es"] == "Spanish" and SUPPORTED_LANGUAGES["zh"] == "Chinese"
    for code in LANGUAGE_IDS:
        assert f"[{code}]" in MTL_VOCAB


def test_spanish_hand_built(multilingual: MultilingualTokenizer) -> None:
    # "¡Sí!" -> "¡sí!" -> NFKD "¡si" + U+0301 + "!"; "s i" is a merge.
    expected = [MTL_VOCAB[s] for s in ("[es]", "¡", "si", "\u0301", "!")]
    assert expected == [635, 330, MTL_VOCAB["si"], 764, 3]
    assert multilingual.encode(normalize_text("¡Sí!", multilingual=True), "es") == expected
    # ñ is decomposed too: the precomposed "ñ" (410) never appears.
    assert multilingual.encode("ñ", "es") == [635, MTL_VOCAB["n"], MTL_VOCAB["\u0303"]]


@pytest.mark.parametrize(
    "language,raw,normalized",
    [
        ("es", "¿Dónde está el niño? ¡Hola! Tengo 25 años", "¿Dónde está el niño? ¡Hola! Tengo 25 años."),
        ("es", "el pingüino comió 3,5 kilos… ¿verdad?", "El pingüino comió 3,5 kilos,  ¿verdad?"),
        ("en", "Café crème: 12 euros — naïve, isn't it?", "Café crème, 12 euros - naïve, isn't it?"),
        ("en", "THE Quick brown fox", "THE Quick brown fox."),
        ("fr", "Où est la bibliothèque ? C'est à côté", "Où est la bibliothèque ? C'est à côté."),
        ("de", "Größe und Übermut; 100 Äpfel", "Größe und Übermut,  100 Äpfel."),
        ("it", "perché è così difficile", "Perché è così difficile."),
        ("pt", "Não sei, coração", "Não sei, coração."),
        ("ar", "مرحبا بالعالم", "مرحبا بالعالم."),
        ("el", "Καλημέρα κόσμε", "Καλημέρα κόσμε."),
        ("hi", "नमस्ते दुनिया", "नमस्ते दुनिया."),
        ("pl", "Zażółć gęślą jaźń", "Zażółć gęślą jaźń."),
        ("tr", "İstanbul'da ılık hava", "İstanbul'da ılık hava."),
    ],
)
def test_multilingual_ids(multilingual: MultilingualTokenizer, language: str, raw: str, normalized: str) -> None:
    assert normalize_text(raw, multilingual=True) == normalized
    expected = expected_multilingual_ids(normalized, language)
    assert expected[0] == MTL_VOCAB[f"[{language}]"]
    assert multilingual.encode(normalized, language) == expected
    assert text_to_token_ids(raw, multilingual, language=language, max_text_tokens=2048) == [255, *expected, 0]


def test_language_id_is_case_insensitive(multilingual: MultilingualTokenizer) -> None:
    assert multilingual.encode("Hola.", "ES") == multilingual.encode("Hola.", "es")


def test_korean_jamo(multilingual: MultilingualTokenizer) -> None:
    # Hangul syllables split into conjoining jamo (lead U+1100+, vowel U+1161+, tail U+11A7+).
    normalized = normalize_text("안녕하세요, 세계!", multilingual=True)
    jamo = "\u110b\u1161\u11ab\u1102\u1167\u11bc\u1112\u1161\u1109\u1166\u110b\u116d"
    jamo_world = "\u1109\u1166\u1100\u1168"
    expected = [MTL_VOCAB["[ko]"], *[MTL_VOCAB[c] for c in jamo], MTL_VOCAB[","], 2,
                *[MTL_VOCAB[c] for c in jamo_world], MTL_VOCAB["!"]]
    assert multilingual.encode(normalized, "ko") == expected


def test_korean_step_decomposes_and_strips(multilingual: MultilingualTokenizer) -> None:
    from vllm_chatterbox.text.tokenizers import _hangul_to_jamo

    # NFKD already splits real syllables; the step's own formula must agree with it.
    assert _hangul_to_jamo(" 한글 ") == unicodedata.normalize("NFKD", "한글") == "\u1112\u1161\u11ab\u1100\u1173\u11af"
    # The strip happens after the language tag is known but before it is prefixed.
    assert multilingual.encode(" 한", "ko") == [MTL_VOCAB[c] for c in ("[ko]", "\u1112", "\u1161", "\u11ab")]


def test_unknown_language_lists_supported(multilingual: MultilingualTokenizer, english: EnglishTokenizer) -> None:
    with pytest.raises(ValueError, match="unsupported language 'xx'") as info:
        multilingual.encode("Hello.", "xx")
    for code, name in SUPPORTED_LANGUAGES.items():
        assert f"{code} ({name})" in str(info.value)
    with pytest.raises(ValueError, match="unsupported language"):
        text_to_token_ids("Hello.", multilingual, language="klingon", max_text_tokens=2048)
    with pytest.raises(ValueError, match="must be a str"):
        multilingual.encode("Hello.", 7)
    with pytest.raises(ValueError, match="needs a language"):
        text_to_token_ids("Hello.", multilingual, max_text_tokens=2048)


# ---------------------------------------------------------------- optional language tools


def test_japanese_needs_pykakasi(multilingual: MultilingualTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pykakasi", None)  # import fails whether or not installed
    with pytest.raises(ImportError, match="pykakasi"):
        multilingual.encode("東京です。", "ja")


def test_japanese_uses_readings_of_kanji_segments(
    multilingual: MultilingualTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments = {
        "東京は": [{"orig": "東京", "hira": "とうきょう"}, {"orig": "は", "hira": "は"}],
        "橋": [{"orig": "橋", "hira": "はし"}],
        "銀": [{"orig": "銀", "hira": "ぎん"}],
    }

    class FakeKakasi:
        def convert(self, text: str) -> list[dict[str, str]]:
            return segments[text]

    monkeypatch.setitem(sys.modules, "pykakasi", types.SimpleNamespace(kakasi=FakeKakasi))
    # Kanji segments become readings; kana stays; a reading starting with は gets a space.
    assert multilingual.encode("東京は", "ja") == expected_multilingual_ids("とうきょうは", "ja")
    assert multilingual.encode("橋", "ja") == expected_multilingual_ids(" はし", "ja")
    # Readings are NFKD-ed again, so the voiced ぎ arrives as き + U+3099.
    assert multilingual.encode("銀", "ja") == [MTL_VOCAB[c] for c in ("[ja]", "き", "\u3099", "ん")]


def test_chinese_needs_cangjie_table(tmp_path: Path) -> None:
    tokenizer = MultilingualTokenizer.from_file(MTL_TOKENIZER, cangjie_path=tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="Cangjie5_TC.json"):
        tokenizer.encode("你好。", "zh")


def _write_cangjie_table(tmp_path: Path) -> Path:
    # 好 is listed twice: it keeps its last code "vnd", where it is first (no suffix).
    table = ["你\tonf", "好\tonf", "們\toan", "好\tvnd"]
    path = tmp_path / "Cangjie5_TC.json"
    path.write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
    return path


def test_chinese_needs_pkuseg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cangjie_table(tmp_path)
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)
    tokenizer = MultilingualTokenizer.from_file(MTL_TOKENIZER, cangjie_path=tmp_path / "Cangjie5_TC.json")
    with pytest.raises(ImportError, match="spacy_pkuseg"):
        tokenizer.encode("你好。", "zh")


def test_chinese_cangjie_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _write_cangjie_table(tmp_path)

    class FakeSegmenter:
        def cut(self, text: str) -> list[str]:
            return [part for part in (text[:2], text[2:]) if part]

    monkeypatch.setitem(sys.modules, "spacy_pkuseg", types.SimpleNamespace(pkuseg=FakeSegmenter))
    # Default location: beside the tokenizer file.
    local_tokenizer = tmp_path / "grapheme_mtl_merged_expanded_v1.json"
    local_tokenizer.write_bytes(MTL_TOKENIZER.read_bytes())
    tokenizer = MultilingualTokenizer.from_file(local_tokenizer)
    assert table.parent == local_tokenizer.parent

    cj = {c: MTL_VOCAB[f"[cj_{c}]"] for c in "onfvda."}
    # "你好們x" -> segmented "你好 們x" -> 你=onf, 好=vnd, 們=oan; "x" is not Lo and passes.
    ids = tokenizer.encode("你好們x", "zh")
    expected = [
        MTL_VOCAB["[zh]"],
        cj["o"], cj["n"], cj["f"], cj["."],
        cj["v"], cj["n"], cj["d"], cj["."],
        MTL_VOCAB["[SPACE]"],
        cj["o"], cj["a"], cj["n"], cj["."],
        MTL_VOCAB["x"],
    ]
    assert ids == expected
    # A glyph without a code passes through as itself (here -> [UNK]).
    assert tokenizer.encode("中", "zh") == [MTL_VOCAB["[zh]"], MTL_VOCAB["[UNK]"]]


def test_chinese_code_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "Cangjie5_TC.json"
    table.write_text(json.dumps(["日\ta", "曰\ta\textra"], ensure_ascii=False), encoding="utf-8")
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", types.SimpleNamespace(
        pkuseg=lambda: types.SimpleNamespace(cut=lambda text: [text])))
    tokenizer = MultilingualTokenizer.from_file(MTL_TOKENIZER, cangjie_path=table)
    a, one, stop = MTL_VOCAB["[cj_a]"], MTL_VOCAB["[cj_1]"], MTL_VOCAB["[cj_.]"]
    assert tokenizer.encode("日曰", "zh") == [MTL_VOCAB["[zh]"], a, stop, a, one, stop]


@pytest.mark.parametrize(
    "language,module,attribute,text",
    [
        ("he", "dicta_onnx", "Dicta", "שלום עולם."),
        ("ru", "russian_text_stresser.text_stresser", "RussianTextStresser", "привет мир."),
    ],
)
def test_hebrew_russian_pass_through_with_warning_when_missing(
    multilingual: MultilingualTokenizer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    language: str,
    module: str,
    attribute: str,
    text: str,
) -> None:
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    monkeypatch.setitem(sys.modules, module, None)
    with caplog.at_level("WARNING"):
        assert multilingual.encode(text, language) == expected_multilingual_ids(text, language)
    assert module.split(".")[0] in caplog.text


def test_hebrew_russian_tools_are_applied(
    multilingual: MultilingualTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeDicta:
        def add_diacritics(self, text: str) -> str:
            return text.replace("ש", "שׁ")

    class FakeStresser:
        def stress_text(self, text: str) -> str:
            return text.replace("и", "и\u0301", 1)

    monkeypatch.setitem(sys.modules, "dicta_onnx", types.SimpleNamespace(Dicta=FakeDicta))
    package = types.ModuleType("russian_text_stresser")
    monkeypatch.setitem(sys.modules, "russian_text_stresser", package)
    monkeypatch.setitem(
        sys.modules,
        "russian_text_stresser.text_stresser",
        types.SimpleNamespace(RussianTextStresser=FakeStresser),
    )
    assert multilingual.encode("שלום.", "he") == expected_multilingual_ids("שׁלום.", "he")
    assert multilingual.encode("привет.", "ru") == expected_multilingual_ids("при\u0301вет.", "ru")


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(english: EnglishTokenizer, multilingual: MultilingualTokenizer, text: str) -> None:
    with pytest.raises(ValueError, match="text is empty"):
        text_to_token_ids(text, english, max_text_tokens=2048)
    with pytest.raises(ValueError, match="text is empty"):
        text_to_token_ids(text, multilingual, language="es", max_text_tokens=2048)


@pytest.mark.parametrize("text", [None, 42, b"Hello", ["Hello"]])
def test_non_str_text_is_rejected(english: EnglishTokenizer, text) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        text_to_token_ids(text, english, max_text_tokens=2048)


def test_too_long_text_is_rejected(english: EnglishTokenizer, multilingual: MultilingualTokenizer) -> None:
    # "Hello world." is 8 ids; the multilingual ids add the language tag.
    assert len(text_to_token_ids("Hello world.", english, max_text_tokens=8)) == 10
    with pytest.raises(ValueError, match="8 tokens long; the limit is 7"):
        text_to_token_ids("Hello world.", english, max_text_tokens=7)
    n_ids = len(multilingual.encode("Hello world.", "en"))
    with pytest.raises(ValueError, match=f"{n_ids} tokens long; the limit is {n_ids - 1}"):
        text_to_token_ids("Hello world.", multilingual, language="en", max_text_tokens=n_ids - 1)
    # Full-size limit: the text position table has 2050 rows, so 2048 ids between start and stop.
    with pytest.raises(ValueError, match="the limit is 2048"):
        text_to_token_ids("a " * 1100, english, max_text_tokens=2048)


def test_undecodable_text_is_a_clear_error(english: EnglishTokenizer) -> None:
    """Invalid UTF-8 in a command-line argument arrives as lone surrogates."""
    text = b"caf\xe9 au lait".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match=r"text is not valid UTF-8/Unicode: undecodable character at position 3"):
        text_to_token_ids(text, english, max_text_tokens=100)


def test_unknown_characters_are_collected(english: EnglishTokenizer, multilingual: MultilingualTokenizer) -> None:
    unknown: set[str] = set()
    known = text_to_token_ids("Hello there.", english, max_text_tokens=100, unknown=unknown)
    assert not unknown
    ids = text_to_token_ids("Hi 😀 there\x07.", english, max_text_tokens=100, unknown=unknown)
    assert unknown == {"😀", "\x07"} and ids.count(english.unknown_token_id) == 2
    assert known[0] == ids[0]
    unknown.clear()
    text_to_token_ids("¿Qué tal? ☃", multilingual, language="es", max_text_tokens=100, unknown=unknown)
    assert unknown == {"☃"}


def test_broken_tokenizer_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer file"):
        EnglishTokenizer.from_file(path)
