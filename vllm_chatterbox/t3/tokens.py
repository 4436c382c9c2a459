"""The original's clean-up of the tokens T3 returns, before they reach S3Gen."""

from __future__ import annotations

from collections.abc import Sequence

from vllm_chatterbox.config import SPEECH_VOCAB_SIZE, T3Config


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
