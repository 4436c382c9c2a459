"""The original's clean-up of the tokens the GPT-2 T3 returns, before they reach S3Gen: one-shot
and streaming (the architecture's part of ``t3/contract.py``).

``tts_turbo.generate`` keeps the ids below the start-of-speech token (the stop id 6562 may be
sampled at the first step, where it does not stop, and is dropped like any control id) and
appends three silence tokens, which give the audio its last 120 ms (nothing is trimmed at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

from vllm_chatterbox.config import TurboT3Config

SILENCE_TOKEN = 4299
SILENCE_TOKENS_AFTER_SPEECH = 3


def stop_marker(cfg: TurboT3Config) -> int:
    """The token id that ends a request: the logits column after the speech vocabulary
    (``t3/gpt2/sampling.py``)."""
    return cfg.speech_vocab_size


def returned_tokens(token_ids: Sequence[int], cfg: TurboT3Config) -> list[int]:
    """What ``inference_turbo`` returns: the generated ids without the final stop."""
    tokens = list(token_ids)
    if tokens and tokens[-1] == stop_marker(cfg):
        tokens = tokens[:-1]
    return tokens


def tokens_for_s3gen(token_ids: Sequence[int], cfg: TurboT3Config, silence_token: int = SILENCE_TOKEN,
                     n_silence: int = SILENCE_TOKENS_AFTER_SPEECH) -> list[int]:
    """``generate()``'s clean-up: keep ids < start token (drops 6561/6562 anywhere), then append
    three silence tokens, which give the audio its last 120 ms (nothing is trimmed at the end)."""
    return [t for t in returned_tokens(token_ids, cfg) if t < cfg.start_speech_token] + [silence_token] * n_silence


class GPT2StreamingTokenCleaner:
    """:func:`tokens_for_s3gen` for tokens that arrive a few at a time: everything ``feed``
    returns followed by :meth:`finish` equals the one-shot clean-up exactly (the stop marker can
    only be a request's last token, since the engine stops on it)."""

    def __init__(self, cfg: TurboT3Config):
        self.cfg = cfg
        self.stopped = False

    def feed(self, new_ids: Sequence[int]) -> list[int]:
        """The speech tokens among ``new_ids`` to hand on; nothing once the stop marker came."""
        tokens: list[int] = []
        for token in new_ids:
            if self.stopped or token == stop_marker(self.cfg):
                self.stopped = True
                break
            if token < self.cfg.start_speech_token:
                tokens.append(token)
        return tokens

    def finish(self) -> list[int]:
        """The three silence tokens the original appends after the last speech token."""
        return [SILENCE_TOKEN] * SILENCE_TOKENS_AFTER_SPEECH
