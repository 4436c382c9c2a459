"""Text to T3 text-token ids, for the English and the multilingual vocabularies.

Both vocabularies are HF ``tokenizers`` BPE files over graphemes with no normaliser, a
``Whitespace`` pre-tokeniser and no post-processor. The vocabulary has no plain space:
every space is spelled as the ``[SPACE]`` token. The multilingual tokeniser additionally
lower-cases, NFKD-decomposes, runs a language-specific step and prefixes a ``[xx]``
language tag. The optional language tools (pykakasi, spacy_pkuseg, dicta_onnx,
russian_text_stresser) are imported only when their language is used.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path
from typing import Callable

from tokenizers import Tokenizer

from vllm_chatterbox.text.normalize import normalize_text

logger = logging.getLogger(__name__)

ENGLISH_TOKENIZER_FILE = "tokenizer.json"
MULTILINGUAL_TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
# Chinese glyph -> Cangjie code table; ships next to the multilingual tokenizer.
CANGJIE_FILE = "Cangjie5_TC.json"

SPACE_TOKEN = "[SPACE]"
START_TOKEN = "[START]"
STOP_TOKEN = "[STOP]"
UNKNOWN_TOKEN = "[UNK]"

SUPPORTED_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tr": "Turkish",
    "zh": "Chinese",
}


def _supported_languages_text() -> str:
    return ", ".join(f"{code} ({name})" for code, name in SUPPORTED_LANGUAGES.items())


def check_language(language: str) -> str:
    """Return the lower-cased language id, or raise ValueError listing the supported ones."""
    if not isinstance(language, str):
        raise ValueError(f"language must be a str, got {type(language).__name__}")
    language_id = language.lower()
    if language_id not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"unsupported language {language!r}; supported languages: {_supported_languages_text()}"
        )
    return language_id


def _load_hf_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises its own exception type
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: not a valid tokenizer file, damaged or incomplete ({detail})") from None


def describe_characters(characters) -> str:
    """``'😀' (U+1F600), U+0007``: printable characters shown, all with their code point."""
    return ", ".join(f"{c!r} (U+{ord(c):04X})" if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}"
                     for c in sorted(characters))


def warn_unknown_characters(characters) -> None:
    """One warning naming the characters that the vocabulary lacks (they became [UNK])."""
    if characters:
        logger.warning("%d character(s) not in the model's text vocabulary became [UNK] and will not be spoken "
                       "as written: %s", len(characters), describe_characters(characters))


class _GraphemeTokenizer:
    """What both vocabularies share: the HF BPE model, [SPACE] spelling, start/stop ids."""

    def __init__(self, tokenizer: Tokenizer):
        vocab = tokenizer.get_vocab()
        missing = [token for token in (START_TOKEN, STOP_TOKEN, SPACE_TOKEN) if token not in vocab]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special tokens {missing}")
        self._tokenizer = tokenizer
        self.start_token_id: int = vocab[START_TOKEN]
        self.stop_token_id: int = vocab[STOP_TOKEN]
        self.unknown_token_id: int | None = vocab.get(UNKNOWN_TOKEN)

    def _encode_graphemes(self, text: str, unknown: set[str] | None = None) -> list[int]:
        """Ids of ``text``; characters that became [UNK] are added to ``unknown``."""
        text = text.replace(" ", SPACE_TOKEN)
        encoding = self._tokenizer.encode(text)
        if unknown is not None and self.unknown_token_id is not None:
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
                if token_id == self.unknown_token_id:
                    unknown.update(text[start:end])
        return encoding.ids


class EnglishTokenizer(_GraphemeTokenizer):
    """The English model's tokeniser (case-sensitive, no language tag)."""

    @classmethod
    def from_file(cls, path: str | Path) -> EnglishTokenizer:
        return cls(_load_hf_tokenizer(path))

    def encode(self, normalized_text: str, unknown: set[str] | None = None) -> list[int]:
        """Ids of already normalised text, without start/stop tokens (see ``_encode_graphemes``)."""
        return self._encode_graphemes(normalized_text, unknown)


# ---------------------------------------------------------------- language-specific steps


def _hangul_to_jamo(text: str) -> str:
    """Split precomposed Hangul syllables into conjoining jamo, then strip the ends.

    NFKD has already done the split for real syllables; the range up to U+D7AF (12 code
    points past the last syllable) is the original's and kept for identical output.
    """
    out = []
    for char in text:
        if "\uac00" <= char <= "\ud7af":
            index = ord(char) - 0xAC00
            lead, vowel, tail = index // (21 * 28), (index % (21 * 28)) // 28, index % 28
            out.append(chr(0x1100 + lead) + chr(0x1161 + vowel) + (chr(0x11A7 + tail) if tail else ""))
        else:
            out.append(char)
    return "".join(out).strip()


def _is_kanji(char: str) -> bool:
    return 0x4E00 <= ord(char) <= 0x9FFF


class _KanjiToHiragana:
    """Japanese: replace every kanji-bearing segment by its hiragana reading (pykakasi)."""

    def __init__(self):
        try:
            import pykakasi
        except ImportError as exc:
            raise ImportError(
                "Japanese text needs the optional package 'pykakasi' (pip install pykakasi)"
            ) from exc
        self._kakasi = pykakasi.kakasi()

    def __call__(self, text: str) -> str:
        parts = []
        for segment in self._kakasi.convert(text):
            original, reading = segment["orig"], segment["hira"]
            if any(_is_kanji(char) for char in original):
                # The original sets readings that start with は or へ apart with a space.
                parts.append(" " + reading if reading[:1] in ("は", "へ") else reading)
            else:
                parts.append(original)  # kana, latin and punctuation stay as written
        # Readings bring back precomposed kana (e.g. voiced marks), so decompose again.
        return unicodedata.normalize("NFKD", "".join(parts))


class _ChineseToCangjie:
    """Chinese: segment into words, then spell each known glyph as Cangjie code tokens.

    A glyph becomes ``[cj_c1]...[cj_cn][cj_.]`` over the characters of its code plus a
    decimal suffix: the glyph's position among the glyphs sharing that code (none for 0).
    """

    def __init__(self, table_path: Path):
        if not table_path.is_file():
            raise FileNotFoundError(
                f"Chinese text needs the Cangjie table {CANGJIE_FILE} (shipped with the "
                f"multilingual model, ResembleAI/chatterbox); not found at {table_path}"
            )
        try:
            from spacy_pkuseg import pkuseg
        except ImportError as exc:
            raise ImportError(
                "Chinese text needs the optional package 'spacy_pkuseg' (pip install spacy-pkuseg)"
            ) from exc
        self._spelling = self._read_table(table_path)
        self._segmenter = pkuseg()

    @staticmethod
    def _read_table(table_path: Path) -> dict[str, str]:
        entries = json.loads(table_path.read_text(encoding="utf-8"))
        code_of: dict[str, str] = {}
        glyphs_of: dict[str, list[str]] = {}
        for entry in entries:
            glyph, code = entry.split("\t")[:2]
            code_of[glyph] = code  # a glyph listed twice keeps its last code
            glyphs_of.setdefault(code, []).append(glyph)
        spelling = {}
        for glyph, code in code_of.items():
            position = glyphs_of[code].index(glyph)
            suffixed = code + (str(position) if position > 0 else "")
            spelling[glyph] = "".join(f"[cj_{char}]" for char in suffixed) + "[cj_.]"
        return spelling

    def __call__(self, text: str) -> str:
        text = " ".join(self._segmenter.cut(text))
        return "".join(
            self._spelling.get(char, char) if unicodedata.category(char) == "Lo" else char
            for char in text
        )


class _OptionalPassThrough:
    """A transform from an optional package that, like the original, leaves the text
    unchanged (with a warning) when the package is missing or the transform fails."""

    def __init__(self, package: str, purpose: str, build: Callable[[], Callable[[str], str]]):
        self._package = package
        self._purpose = purpose
        self._build = build
        self._transform: Callable[[str], str] | None = None
        self._missing = False

    def __call__(self, text: str) -> str:
        if self._missing:
            return text
        try:
            if self._transform is None:
                self._transform = self._build()
            return self._transform(text)
        except ImportError:
            # Warn once per tokenizer rather than on every request.
            self._missing = True
            logger.warning(
                "optional package %r is not installed: %s skipped (pip install %s)",
                self._package, self._purpose, self._package.replace("_", "-"),
            )
        except Exception as exc:  # the original passes the text through on any failure
            logger.warning("%s failed, text left unchanged: %s", self._purpose, exc)
        return text


def _build_hebrew_diacritizer() -> Callable[[str], str]:
    from dicta_onnx import Dicta

    return Dicta().add_diacritics


def _build_russian_stresser() -> Callable[[str], str]:
    from russian_text_stresser.text_stresser import RussianTextStresser

    return RussianTextStresser().stress_text


class MultilingualTokenizer(_GraphemeTokenizer):
    """The multilingual model's tokeniser (23 languages)."""

    def __init__(self, tokenizer: Tokenizer, cangjie_path: Path):
        super().__init__(tokenizer)
        vocab = tokenizer.get_vocab()
        missing = [code for code in SUPPORTED_LANGUAGES if f"[{code}]" not in vocab]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the language tags of {missing}")
        self._cangjie_path = cangjie_path
        self._chinese: _ChineseToCangjie | None = None
        self._japanese: _KanjiToHiragana | None = None
        self._hebrew = _OptionalPassThrough("dicta_onnx", "Hebrew diacritization", _build_hebrew_diacritizer)
        self._russian = _OptionalPassThrough(
            "russian_text_stresser", "Russian stress marking", _build_russian_stresser
        )

    @classmethod
    def from_file(cls, path: str | Path, *, cangjie_path: str | Path | None = None) -> MultilingualTokenizer:
        """Load the tokenizer; the Cangjie table defaults to ``Cangjie5_TC.json`` beside it."""
        path = Path(path)
        cangjie = Path(cangjie_path) if cangjie_path is not None else path.parent / CANGJIE_FILE
        return cls(_load_hf_tokenizer(path), cangjie)

    def encode(self, normalized_text: str, language: str, unknown: set[str] | None = None) -> list[int]:
        """Ids of already normalised text, starting with the language tag, without start/stop."""
        language_id = check_language(language)
        text = unicodedata.normalize("NFKD", normalized_text.lower())
        text = self._language_step(text, language_id)
        return self._encode_graphemes(f"[{language_id}]{text}", unknown)

    def _language_step(self, text: str, language_id: str) -> str:
        if language_id == "zh":
            if self._chinese is None:
                self._chinese = _ChineseToCangjie(self._cangjie_path)
            return self._chinese(text)
        if language_id == "ja":
            if self._japanese is None:
                self._japanese = _KanjiToHiragana()
            return self._japanese(text)
        if language_id == "he":
            return self._hebrew(text)
        if language_id == "ko":
            return _hangul_to_jamo(text)
        if language_id == "ru":
            return self._russian(text)
        return text


# ---------------------------------------------------------------- public entry point


def check_text(text: str) -> str:
    """A non-empty str of valid Unicode (no lone surrogates, which undecodable UTF-8 bytes in
    a command-line argument turn into)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid UTF-8/Unicode: undecodable character at position {exc.start} "
                         f"(U+{ord(text[exc.start]):04X}); save or pass the text as UTF-8") from None
    if not text.strip():
        raise ValueError("text is empty")
    return text


def text_to_token_ids(
    text: str,
    tokenizer: EnglishTokenizer | MultilingualTokenizer,
    *,
    language: str | None = None,
    max_text_tokens: int,
    unknown: set[str] | None = None,
) -> list[int]:
    """Normalise and tokenise ``text`` and wrap it as ``[start] + ids + [stop]`` for T3.

    Unlike the original, empty (or whitespace-only) text is rejected instead of being
    replaced by a filler sentence. ``max_text_tokens`` bounds the ids between start and
    stop (the learned text position table has ``max_text_tokens + 2`` rows). Characters the
    vocabulary lacks (they become [UNK]) are added to ``unknown`` when given.
    """
    check_text(text)

    if isinstance(tokenizer, MultilingualTokenizer):
        if language is None:
            raise ValueError(
                f"the multilingual model needs a language; supported languages: {_supported_languages_text()}"
            )
        ids = tokenizer.encode(normalize_text(text, multilingual=True), language, unknown)
    elif isinstance(tokenizer, EnglishTokenizer):
        if language is not None and check_language(language) != "en":
            raise ValueError(f"the English model cannot speak language {language!r}; use the multilingual model")
        ids = tokenizer.encode(normalize_text(text), unknown)
    else:
        raise ValueError(f"unsupported tokenizer type {type(tokenizer).__name__}")

    if len(ids) > max_text_tokens:
        raise ValueError(f"text is {len(ids)} tokens long; the limit is {max_text_tokens} tokens")
    return [tokenizer.start_token_id, *ids, tokenizer.stop_token_id]
