"""The Llama T3's front door: text, voice and parameters in, vLLM requests out; finished tokens back.

The English and multilingual models' T3 (:class:`~vllm_chatterbox.t3.contract.T3Client`); the
engine that runs the requests is ``t3/engine.py`` with ``t3/llama/engine_spec.py``, the packed
layout they use is ``t3/llama/layout.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.params import T3Params, t3_params
from vllm_chatterbox.t3.client import PromptClient
from vllm_chatterbox.t3.contract import T3Request, T3Result
from vllm_chatterbox.t3.llama.prefix import LlamaPromptBuilder
from vllm_chatterbox.t3.llama.tokens import LlamaStreamingTokenCleaner, clean_speech_tokens
from vllm_chatterbox.text import EnglishTokenizer, MultilingualTokenizer, text_to_token_ids, warn_unknown_characters
from vllm_chatterbox.voice.voice import Voice


class LlamaTextEncoder:
    """Text -> ``[start] + ids + [stop]`` with the English or the multilingual tokenizer, at most
    ``cfg.max_text_len`` ids between start and stop."""

    def __init__(self, tokenizer: EnglishTokenizer | MultilingualTokenizer, cfg: T3Config):
        self.tokenizer = tokenizer
        self.cfg = cfg

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


class LlamaT3Client(PromptClient):
    """Builds :class:`T3Request` objects exactly as the original builds T3's input."""

    prompt_builder: LlamaPromptBuilder
    text: LlamaTextEncoder
    cfg: T3Config

    @classmethod
    def from_file(cls, t3_weights: str | Path, text: LlamaTextEncoder) -> "LlamaT3Client":
        return cls(LlamaPromptBuilder.from_file(t3_weights, text.cfg), text)

    @staticmethod
    def params(count: int, parameters: dict) -> list[T3Params]:
        """Validated sampling parameters for ``count`` texts (see :func:`t3_params`)."""
        return t3_params(count, parameters)

    def request(self, text_ids: list[int], voice: Voice, params: T3Params) -> T3Request:
        """One request; ``params.exaggeration``, when not None, overrides the voice's own."""
        if params.exaggeration is not None:
            voice = voice.with_exaggeration(params.exaggeration)
        embeds = self.prompt_builder.prompt_embeds(self.conditioning(voice), text_ids)
        # Prefix caching hashes the embeddings; the salt keeps requests whose rows are equal
        # but whose RoPE shift differs (another prompt length) from sharing KV blocks.
        return T3Request(prompt_embeds=embeds, cache_salt=f"t3-len{embeds.shape[0]}", params=params)

    def speech_tokens(self, result: T3Result) -> list[int]:
        """The finished request's tokens, cleaned as the original cleans them for S3Gen."""
        return clean_speech_tokens(result.token_ids, self.cfg)

    def voice_prefix_request(self, voice: Voice) -> None:
        """None: a request shares cached rows only with prompts of its own length (the salt
        above), and the conditioning is about one KV block (speaker, perceiver, emotion rows)."""
        return None

    def streaming_cleaner(self) -> LlamaStreamingTokenCleaner:
        return LlamaStreamingTokenCleaner(self.cfg)
