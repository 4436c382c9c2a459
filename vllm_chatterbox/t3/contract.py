"""What a T3 architecture provides, and what travels between its client and the shared engine.

T3 comes in two architectures: the Llama backbone with packed classifier-free guidance of the
original, English and multilingual models (``t3/llama/``), and the GPT-2 backbone of Turbo and
Nano (``t3/gpt2/``). Each one provides, in its own sub-package:

- a vLLM model (``model.py``, registered by ``t3/plugin.py``) and its own logits processors;
- a :class:`T3EngineSpec`: what the shared :class:`~vllm_chatterbox.t3.engine.T3Engine` needs to
  start vLLM on it and to turn a request's parameters into vLLM sampling parameters;
- a :class:`TextEncoder` (tokenizer and limits) and a :class:`T3Client`: text, voice and
  parameters in, :class:`T3Request` out; a finished :class:`T3Result` back to the speech tokens
  S3Gen takes, and a :class:`StreamingTokenCleaner` that does the same clean-up for tokens
  arriving a few at a time.

Which architecture, tokenizer and options a released model uses is the table in
``vllm_chatterbox/variants.py``. Nothing here imports vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from vllm_chatterbox.voice.voice import Voice


@dataclass(frozen=True)
class T3Request:
    """One text's T3 job: its prompt rows as embeddings and its parameters (the architecture's
    own parameter type, e.g. :class:`~vllm_chatterbox.params.T3Params`)."""

    prompt_embeds: torch.Tensor  # (L, width the architecture's model takes)
    cache_salt: str
    params: Any


@dataclass
class T3Result:
    """What vLLM sampled for one request (stop token included; the client cleans it)."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    num_cached_tokens: int = 0


class T3EngineSpec(Protocol):
    """What the shared engine needs to know about an architecture."""

    cfg: Any  # the architecture's configuration (``T3Config``, ``TurboT3Config``)
    # vLLM logits processors of the architecture, as "module:Class" names, in the order they run.
    logits_processors: tuple[str, ...]

    def vllm_model_dir(self, t3_weights: Path) -> Path:
        """A directory vLLM can load: ``config.json`` naming the architecture and the T3 weights."""

    def default_max_model_len(self) -> int:
        """The longest sequence (prompt + generated tokens) a request can need."""

    def sampling_params(self, params: Any) -> dict[str, Any]:
        """The ``vllm.SamplingParams`` fields that depend on the architecture, for one request's
        parameters: the filters vLLM's sampler applies, stop ids and ``extra_args`` for the
        architecture's processors (the engine adds the token budget, seed and output kind)."""


class StreamingTokenCleaner(Protocol):
    """The one-shot clean-up of :meth:`T3Client.speech_tokens`, for tokens that arrive a few at a
    time. Concatenating everything ``feed`` returned and then ``finish`` gives the one-shot result
    (an architecture's cleaner documents any exception)."""

    stopped: bool  # the request's end was seen; later tokens are ignored

    def feed(self, new_ids: Sequence[int]) -> list[int]:
        """The speech tokens among ``new_ids`` to hand on to S3Gen now."""

    def finish(self) -> list[int]:
        """Speech tokens to append after the request's last one."""


class TextEncoder(Protocol):
    """Text -> the ids an architecture's prompt takes, with its tokenizer and limits; needs no
    weights, so the CLI checks text with it before anything loads."""

    cfg: Any

    def text_token_ids(self, text: str, language: str | None = None, unknown: set[str] | None = None) -> list[int]:
        """The text's ids (ValueError for bad text or language). Characters the vocabulary lacks
        are added to ``unknown``, or named in a warning when it is not given."""

    def count_text_tokens(self, text: str, language: str | None = None) -> int:
        """Text tokens of ``text``, without any length limit (for cutting long text into chunks)."""


class T3Client(TextEncoder, Protocol):
    """An architecture's front door: everything that builds T3 work (``tts.py``, the pipelines,
    the server) goes through one."""

    def params(self, count: int, parameters: dict[str, Any]) -> list[Any]:
        """Validated per-text parameters from scalar-or-per-text values (ValueError naming the bad one)."""

    def requests(self, texts: Sequence[str], voices: Sequence[Voice], languages: Sequence[str | None],
                 params: Sequence[Any]) -> list[T3Request]:
        """One request per text; errors name the text's index."""

    def speech_tokens(self, result: T3Result) -> list[int]:
        """A finished request's tokens, cleaned as the original cleans them for S3Gen."""

    def streaming_cleaner(self) -> StreamingTokenCleaner:
        """A fresh cleaner for one request's tokens as they arrive."""

    def voice_prefix_request(self, voice: Voice) -> tuple[T3Request, int] | None:
        """A one-token request whose prompt begins with ``voice``'s conditioning, and how many of
        its first rows are that conditioning: run, it leaves those rows in vLLM's prefix cache for
        the voice's later requests. None where later requests could not share them."""
