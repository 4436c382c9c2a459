"""Text to T3 ids for Chatterbox Turbo / Nano: Turbo's ``punc_norm``, then the GPT-2 tokenizer.

The checkpoint ships GPT-2 tokenizer files (``vocab.json``, ``merges.txt``, ``added_tokens.json``,
``special_tokens_map.json``, ``tokenizer_config.json``); the original loads them with
``AutoTokenizer.from_pretrained`` and calls it with ``truncation=True``, so we do the same.
Paralinguistic tags (``[laugh]``, ``[sigh]``, ...) are added tokens: matched (case-sensitively)
before byte-level BPE, each one id; the space in front of a tag stays its own id. No start/stop
ids are added around the text.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vllm_chatterbox.text.normalize import normalize_text

logger = logging.getLogger(__name__)

# Files of the GPT-2 tokenizer in the official Turbo / Nano layout.
TURBO_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


class TurboTokenizer:
    def __init__(self, tokenizer, text_vocab_size: int):
        self._tokenizer = tokenizer
        self.text_vocab_size = text_vocab_size
        self.max_length: int = tokenizer.model_max_length
        if len(tokenizer) > text_vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} ids but the T3 text embedding only {text_vocab_size} rows")
        if len(tokenizer) != text_vocab_size:
            # The original prints the same warning and carries on (the tiny test models do this).
            logger.warning("tokenizer has %d ids, the T3 text embedding %d rows", len(tokenizer), text_vocab_size)

    @classmethod
    def from_dir(cls, model_dir: str | Path, text_vocab_size: int) -> "TurboTokenizer":
        from transformers import AutoTokenizer  # deferred: importing transformers is slow

        model_dir = Path(model_dir)
        missing = [name for name in TURBO_TOKENIZER_FILES if not (model_dir / name).is_file()]
        if missing:
            raise ValueError(f"{model_dir}: Turbo tokenizer files missing: {missing}")
        return cls(AutoTokenizer.from_pretrained(str(model_dir)), text_vocab_size)

    @property
    def added_tags(self) -> list[str]:
        """The paralinguistic tags the tokenizer knows (its non-special added tokens)."""
        return [t.content for t in self._tokenizer.added_tokens_decoder.values() if not t.special]

    def encode(self, text: str) -> list[int]:
        """Ids of ``punc_norm(text)``, cut to the tokenizer's ``model_max_length`` as the original."""
        normalized = normalize_text(text, turbo=True)
        ids = list(self._tokenizer(normalized, truncation=True)["input_ids"])
        if len(ids) == self.max_length:
            full = len(self._tokenizer(normalized)["input_ids"])
            if full > self.max_length:
                logger.warning("text of %d tokens cut to the tokenizer's limit of %d, as the original does",
                               full, self.max_length)
        return ids
