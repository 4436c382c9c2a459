"""Text front end: punctuation normalisation and T3 text tokenisation."""

from vllm_chatterbox.text.normalize import EMPTY_TEXT_REPLACEMENT, normalize_text
from vllm_chatterbox.text.tokenizers import (
    CANGJIE_FILE,
    ENGLISH_TOKENIZER_FILE,
    MULTILINGUAL_TOKENIZER_FILE,
    SUPPORTED_LANGUAGES,
    EnglishTokenizer,
    MultilingualTokenizer,
    check_language,
    check_text,
    text_to_token_ids,
    warn_unknown_characters,
)

__all__ = [
    "CANGJIE_FILE",
    "EMPTY_TEXT_REPLACEMENT",
    "ENGLISH_TOKENIZER_FILE",
    "MULTILINGUAL_TOKENIZER_FILE",
    "SUPPORTED_LANGUAGES",
    "EnglishTokenizer",
    "MultilingualTokenizer",
    "check_language",
    "check_text",
    "normalize_text",
    "text_to_token_ids",
    "warn_unknown_characters",
]
