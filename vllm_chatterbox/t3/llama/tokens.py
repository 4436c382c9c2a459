"""The original's clean-up of the tokens the Llama T3 returns, before they reach S3Gen: one-shot
and streaming (the architecture's part of ``t3/contract.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vllm_chatterbox.config import SPEECH_VOCAB_SIZE, T3Config

logger = logging.getLogger(__name__)


def clean_speech_tokens(tokens: Sequence[int], cfg: T3Config) -> list[int]:
    """Keep what follows the first start-of-speech, cut at the first stop, drop control ids.

    Multilingual (at git HEAD) skips the final ``< 6561`` filter; we keep it for every model,
    since S3Gen cannot embed larger ids and would fail on them.
    """
    tokens = list(tokens)
    if cfg.start_speech_token in tokens:
        tokens = tokens[tokens.index(cfg.start_speech_token) + 1:]
    if cfg.stop_speech_token in tokens:
        tokens = tokens[: tokens.index(cfg.stop_speech_token)]
    return [t for t in tokens if t < SPEECH_VOCAB_SIZE]


class LlamaStreamingTokenCleaner:
    """:func:`clean_speech_tokens` for tokens that arrive a few at a time (streaming).

    The concatenated output equals the one-shot clean-up of the whole sequence, with one
    exception: a first start-of-speech token that comes after speech tokens were already handed
    on. The one-shot clean-up drops what came before it; a stream may already have played it,
    so those tokens stay (logged once). Tokens of the same delivery are still dropped.
    """

    def __init__(self, cfg: T3Config):
        self.cfg = cfg
        self.seen_start = False
        self.stopped = False
        self.handed_on = 0

    def feed(self, new_ids: Sequence[int]) -> list[int]:
        """The speech tokens among ``new_ids`` to hand on; nothing once the stop token came."""
        tokens: list[int] = []
        for token in new_ids:
            if self.stopped or token == self.cfg.stop_speech_token:
                self.stopped = True
                break
            if token == self.cfg.start_speech_token and not self.seen_start:
                self.seen_start = True
                tokens.clear()
                if self.handed_on:
                    logger.warning("T3 sampled a start-of-speech token after %d speech tokens were streamed; the "
                                   "one-shot clean-up drops those tokens, this stream has already vocoded them",
                                   self.handed_on)
                continue
            if token < SPEECH_VOCAB_SIZE:
                tokens.append(token)
        self.handed_on += len(tokens)
        return tokens

    def finish(self) -> list[int]:
        """Nothing follows the last speech token."""
        return []
