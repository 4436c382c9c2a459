"""The Turbo / Nano T3 front door (:class:`~vllm_chatterbox.t3.contract.T3Client` of the GPT-2 T3).

Text goes through Turbo's ``punc_norm`` and the GPT-2 tokenizer, the prompt is built by
:class:`GPT2PromptBuilder`, parameters are Turbo's (``cfg_weight``, ``exaggeration`` and
``min_p`` are accepted and ignored with a warning when > 0, as the original does), and the
finished tokens are cleaned as ``tts_turbo.generate`` cleans them (``t3/gpt2/tokens.py``): ids
< 6561 plus three silence tokens (4299), which give the audio its last 120 ms.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.params import check_number, check_seed, per_text, reject_unknown
from vllm_chatterbox.t3.client import PromptClient
from vllm_chatterbox.t3.contract import T3Request, T3Result
from vllm_chatterbox.t3.gpt2.params import TurboParams
from vllm_chatterbox.t3.gpt2.prefix import GPT2PromptBuilder
from vllm_chatterbox.t3.gpt2.tokens import GPT2StreamingTokenCleaner, tokens_for_s3gen
from vllm_chatterbox.text.turbo import TurboTokenizer
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

# The original generate()'s defaults; its loop samples one token from the prefill plus up to 1000.
TURBO_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8, "top_k": 1000, "top_p": 0.95, "repetition_penalty": 1.2, "max_new_tokens": 1001,
}
# Accepted for API compatibility; the original ignores them (warning when > 0).
IGNORED_PARAMETERS = ("cfg_weight", "exaggeration", "min_p")
# GPT-2 positions are absolute: equal rows at equal places give equal KV, whatever the length, so
# every Turbo request shares one prefix-cache namespace.
CACHE_SALT = "t3-turbo"
# The text of a voice's warm-up request; any text does, only the conditioning before it is kept.
WARM_UP_TEXT = "Hello."


class GPT2TextEncoder:
    """Text -> GPT-2 ids of ``punc_norm(text)`` (no start/stop ids); English only. ``label``
    ("turbo", "nano") names the model in errors."""

    def __init__(self, tokenizer: TurboTokenizer, cfg: TurboT3Config, label: str = "turbo"):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.label = label

    def text_token_ids(self, text: str, language: str | None = None, unknown: set[str] | None = None) -> list[int]:
        """The ids; ``unknown`` is accepted for the common interface and stays empty (byte-level
        BPE spells every character)."""
        if language not in (None, "en"):
            raise ValueError(f"the {self.label} model speaks English only; got language={language!r}")
        return self.tokenizer.encode(text)

    def count_text_tokens(self, text: str, language: str | None = None) -> int:
        return len(self.text_token_ids(text, language))


class GPT2T3Client(PromptClient):
    """Builds :class:`T3Request` objects as ``T3.inference_turbo`` builds its input."""

    prompt_builder: GPT2PromptBuilder
    text: GPT2TextEncoder
    cfg: TurboT3Config

    @property
    def label(self) -> str:
        return self.text.label

    @classmethod
    def from_file(cls, t3_weights: str | Path, text: GPT2TextEncoder) -> "GPT2T3Client":
        return cls(GPT2PromptBuilder.from_file(t3_weights, text.cfg), text)

    def params(self, count: int, parameters: dict[str, Any]) -> list[TurboParams]:
        """Validated Turbo parameters for ``count`` texts (scalar or one value per text)."""
        known = (*TURBO_DEFAULTS, "seed", *IGNORED_PARAMETERS)
        reject_unknown({k: v for k, v in parameters.items() if k not in known}, known)
        for name in IGNORED_PARAMETERS:
            if any(check_number(name, v) > 0 for v in per_text(name, parameters.get(name, 0.0), count)):
                logger.warning("%s is not supported by the %s model and is ignored (as the original does)",
                               name, self.label)
        columns = {name: per_text(name, parameters.get(name, default), count) for name, default in TURBO_DEFAULTS.items()}
        seeds = per_text("seed", parameters.get("seed"), count)
        result = []
        for i in range(count):
            where = f" (text {i})" if count > 1 else ""
            top_k = columns["top_k"][i]
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
                raise ValueError(f"top_k{where} must be an integer >= 0 (0 = off), got {top_k!r}")
            result.append(TurboParams(
                temperature=check_number("temperature", columns["temperature"][i], where),
                top_k=top_k,
                top_p=check_number("top_p", columns["top_p"][i], where),
                repetition_penalty=check_number("repetition_penalty", columns["repetition_penalty"][i], where),
                max_new_tokens=check_number("max_new_tokens", columns["max_new_tokens"][i], where),
                seed=check_seed(seeds[i], where),
            ))
        return result

    def request(self, text_ids: list[int], voice: Voice, params: TurboParams) -> T3Request:
        embeds = self.prompt_builder.prompt_embeds(self.conditioning(voice), text_ids)
        return T3Request(prompt_embeds=embeds, cache_salt=CACHE_SALT, params=params)

    def voice_prefix_request(self, voice: Voice) -> tuple[T3Request, int]:
        """One greedy token after the voice's conditioning and a short text: the voice's later
        requests, whatever their text, find its conditioning rows in vLLM's prefix cache."""
        conditioning = self.conditioning(voice)
        params, = self.params(1, {"max_new_tokens": 1, "temperature": 0})
        return self.request(self.text_token_ids(WARM_UP_TEXT), voice, params), conditioning.shape[0]

    def speech_tokens(self, result: T3Result) -> list[int]:
        """What ``tts_turbo.generate`` hands S3Gen: ids < 6561, then three silence tokens."""
        return tokens_for_s3gen(result.token_ids, self.cfg)

    def streaming_cleaner(self) -> GPT2StreamingTokenCleaner:
        return GPT2StreamingTokenCleaner(self.cfg)
