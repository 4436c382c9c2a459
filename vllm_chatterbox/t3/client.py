"""What both architectures' T3 clients share: the text encoder, a voice's conditioning rows kept per
(voice, exaggeration), and one request per text (``t3/contract.py`` has the whole interface)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vllm_chatterbox.t3.contract import T3Request
from vllm_chatterbox.text import warn_unknown_characters
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


class PromptClient:
    """The shared part of a :class:`~vllm_chatterbox.t3.contract.T3Client`: an architecture's
    client adds its parameters (``params``), one request's prompt (``request``) and its clean-up
    (``speech_tokens``, ``streaming_cleaner``).

    ``text`` is the architecture's text encoder (``text_token_ids`` / ``count_text_tokens``);
    ``prompt_builder`` computes a voice's conditioning rows and a request's prompt embeddings.
    """

    def __init__(self, prompt_builder, text):
        self.prompt_builder = prompt_builder
        self.text = text
        self.cfg = text.cfg
        self._conditioning_cache = ConditioningCache(prompt_builder.conditioning)

    @property
    def tokenizer(self):
        """The text encoder's tokenizer."""
        return self.text.tokenizer

    def text_token_ids(self, text: str, language: str | None = None, unknown: set[str] | None = None) -> list[int]:
        """The text's ids as the prompt takes them. Characters the vocabulary lacks (they become
        [UNK]) are added to ``unknown``, or named in a warning when it is not given."""
        return self.text.text_token_ids(text, language, unknown)

    def count_text_tokens(self, text: str, language: str | None = None) -> int:
        """Text tokens of ``text``, without start/stop or length limit."""
        return self.text.count_text_tokens(text, language)

    def conditioning(self, voice: Voice) -> torch.Tensor:
        """The voice's conditioning rows, computed once per (voice, exaggeration)."""
        return self._conditioning_cache.get(voice)

    def request(self, text_ids: list[int], voice: Voice, params: Any) -> T3Request:
        raise NotImplementedError

    def requests(self, texts: Sequence[str], voices: Sequence[Voice], languages: Sequence[str | None],
                 params: Sequence[Any]) -> list[T3Request]:
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
