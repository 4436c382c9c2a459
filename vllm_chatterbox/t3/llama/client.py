"""T3's front door: text, voice and parameters in, vLLM requests out; finished tokens back.

Everything that builds T3 work (the public API in ``tts.py``, the streaming layer, the server)
comes through :class:`T3Client`; the engine that runs the requests is ``t3/engine.py``, the
packed layout they use is ``t3/layout.py``.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.params import T3Params, t3_params
from vllm_chatterbox.t3.engine import T3Request, T3Result
from vllm_chatterbox.t3.prefix import T3PromptBuilder
from vllm_chatterbox.t3.tokens import clean_speech_tokens
from vllm_chatterbox.text import text_to_token_ids, warn_unknown_characters
from vllm_chatterbox.voice.voice import Voice

# Distinct (voice, exaggeration) conditionings kept; computing one runs the perceiver.
CONDITIONING_CACHE_SIZE = 64


class ConditioningCache:
    """A voice's conditioning rows, computed once per (voice, exaggeration): the last
    :data:`CONDITIONING_CACHE_SIZE` used are kept (both T3 clients use one)."""

    def __init__(self, compute: Callable[[Voice], torch.Tensor], size: int = CONDITIONING_CACHE_SIZE):
        self.compute = compute
        self.size = size
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, voice: Voice) -> torch.Tensor:
        key = voice.t3_key
        cached = self._rows.get(key)
        if cached is None:
            cached = self.compute(voice)
            self._rows[key] = cached
            if len(self._rows) > self.size:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(key)
        return cached


class T3Client:
    """Builds :class:`T3Request` objects exactly as the original builds T3's input."""

    def __init__(self, prompt_builder: T3PromptBuilder, tokenizer, cfg: T3Config):
        self.prompt_builder = prompt_builder
        self.tokenizer = tokenizer
        self.cfg = cfg
        self._conditioning_cache = ConditioningCache(prompt_builder.conditioning)

    @classmethod
    def from_file(cls, t3_weights: str | Path, tokenizer, cfg: T3Config) -> "T3Client":
        return cls(T3PromptBuilder.from_file(t3_weights, cfg), tokenizer, cfg)

    @staticmethod
    def params(count: int, parameters: dict) -> list[T3Params]:
        """Validated sampling parameters for ``count`` texts (see :func:`t3_params`)."""
        return t3_params(count, parameters)

    def text_token_ids(self, text: str, language: str | None = None, unknown: set[str] | None = None) -> list[int]:
        """``[start] + ids + [stop]``; the multilingual model needs ``language``, the English
        one takes only None or "en". Characters that become [UNK] are added to ``unknown``, or
        named in a warning when it is not given."""
        collected: set[str] = set() if unknown is None else unknown
        ids = text_to_token_ids(text, self.tokenizer, language=language, max_text_tokens=self.cfg.max_text_len,
                                unknown=collected)
        if unknown is None:
            warn_unknown_characters(collected)
        return ids

    def count_text_tokens(self, text: str, language: str | None = None) -> int:
        """Tokens of ``text`` as :meth:`text_token_ids` counts them, without start/stop or length limit."""
        return len(text_to_token_ids(text, self.tokenizer, language=language, max_text_tokens=sys.maxsize)) - 2

    def conditioning(self, voice: Voice) -> torch.Tensor:
        """The voice's conditioning rows, computed once per (voice, exaggeration)."""
        return self._conditioning_cache.get(voice)

    def request(self, text_ids: list[int], voice: Voice, params: T3Params) -> T3Request:
        """One request; ``params.exaggeration``, when not None, overrides the voice's own."""
        if params.exaggeration is not None:
            voice = voice.with_exaggeration(params.exaggeration)
        embeds = self.prompt_builder.prompt_embeds(self.conditioning(voice), text_ids)
        # Prefix caching hashes the embeddings; the salt keeps requests whose rows are equal
        # but whose RoPE shift differs (another prompt length) from sharing KV blocks.
        return T3Request(prompt_embeds=embeds, cache_salt=f"t3-len{embeds.shape[0]}", params=params)

    def requests(self, texts: Sequence[str], voices: Sequence[Voice], languages: Sequence[str | None],
                 params: Sequence[T3Params]) -> list[T3Request]:
        """One request per text (all lists of equal length); errors name the text's index."""
        requests = []
        unknown: set[str] = set()
        for i, (text, voice, language, p) in enumerate(zip(texts, voices, languages, params, strict=True)):
            try:
                text_ids = self.text_token_ids(text, language, unknown)
            except ValueError as exc:
                raise ValueError(f"text {i}: {exc}" if len(texts) > 1 else str(exc)) from None
            requests.append(self.request(text_ids, voice, p))
        warn_unknown_characters(unknown)  # once per call, however many texts
        return requests

    def speech_tokens(self, result: T3Result) -> list[int]:
        """The finished request's tokens, cleaned as the original cleans them for S3Gen."""
        return clean_speech_tokens(result.token_ids, self.cfg)
