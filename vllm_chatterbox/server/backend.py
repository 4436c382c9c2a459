"""The server's one door to the engine: validate a request, stream its audio, clone a voice.

Speech comes from ``ChatterboxTTS.astream``: T3 on vLLM's async engine, S3Gen vocoding the
pieces of all open streams together, long text chunk by chunk with ``generate_long``'s pauses.
Closing a stream early aborts its vLLM requests and drops its queued vocoder work.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vllm_chatterbox.config import S3GEN_SAMPLE_RATE
from vllm_chatterbox.demo_model import is_random_weight_model
from vllm_chatterbox.params import T3_PARAMETERS, reject_unknown
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.voice.audio import load_audio
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

SAMPLE_RATE = S3GEN_SAMPLE_RATE
SPEECH_TOKENS_PER_SECOND = 25
# Generation parameters a request may set (besides text, voice and language).
GENERATION_PARAMETERS = (*T3_PARAMETERS, "seed", "n_timesteps")
_RATE_WINDOW_S = 10.0


@dataclass
class SpeechJob:
    """A validated request: its audio stream (not started yet) and its text tokens."""

    chunks: AsyncIterator[np.ndarray]
    input_tokens: int


class SpeechBackend:
    """Requests to audio on a loaded ``ChatterboxTTS``."""

    def __init__(self, tts, metrics: ServerMetrics, *, max_new_tokens: int | None = None, watermark: bool = True):
        """``max_new_tokens``: the operator's cap on speech tokens per text chunk, also the
        default of requests that do not set it (None: the library's default and range).
        ``watermark``: mark all speech with Perth's watermark (the operator's choice, not a
        request's)."""
        self.tts = tts
        self.metrics = metrics
        self.max_new_tokens = max_new_tokens
        self.watermark = watermark
        self.multilingual = bool(tts.files.multilingual)
        # Building a stream's requests touches caches shared with other callers: one at a time.
        self._prepare_lock = threading.Lock()
        self._voice_lock = threading.Lock()
        self._converter = None
        self._warming: set[asyncio.Task] = set()  # voices being warmed (kept: the loop holds tasks weakly)
        self._recent_tokens: collections.deque[tuple[float, int]] = collections.deque()
        engine = tts.t3_engine
        metrics.t3_requests_unfinished.set_function(lambda: engine.engine.get_num_unfinished_requests())
        metrics.t3_requests_submitted.set_function(lambda: engine.requests_submitted)
        self._observe_vocoder(tts._stream_vocoder)

    def _observe_vocoder(self, vocoder) -> None:
        """Count each batched S3Gen streaming call: its size and the T3 tokens it consumes.
        (The engine has no statistics hook; this wraps the call its vocoder thread makes.)"""
        vocode = vocoder._vocode

        def observed(s3gen, items, **options):
            tokens = sum(len(new_tokens) for _, new_tokens, _ in items)
            self.metrics.s3gen_batch_size.observe(len(items))
            self._count_tokens(tokens)
            return vocode(s3gen, items, **options)

        vocoder._vocode = observed

    def _count_tokens(self, tokens: int) -> None:
        now = time.monotonic()
        self.metrics.t3_tokens.inc(tokens)
        window = self._recent_tokens
        window.append((now, tokens))
        while window and window[0][0] < now - _RATE_WINDOW_S:
            window.popleft()
        span = max(1.0, now - window[0][0])
        self.metrics.t3_tokens_per_second.set(sum(n for _, n in window) / span)

    def model_info(self) -> dict:
        """What the served model is: its variant, languages, whether its weights are random (the
        demo model: noise, not speech) and, for Turbo and Nano, the paralinguistic tags its
        tokenizer knows."""
        files = self.tts.files
        return {"variant": files.variant, "multilingual": bool(files.multilingual),
                "random_weights": is_random_weight_model(files.directory),
                "paralinguistic_tags": list(self.tts.t3.tokenizer.added_tags) if files.is_turbo else []}

    @property
    def engine_dead(self) -> bool:
        """vLLM's engine core has died: nothing more can be served (restart the server)."""
        return bool(self.tts.t3_engine.engine.errored)

    # --- validation (in a worker thread; nothing runs yet) -----------------------------------

    def prepare(self, text: str, voice: Voice | None, *, language: str | None = None, watermark: bool = True,
                **params: Any) -> SpeechJob:
        """Check a request with the library's own checks (ValueError names the problem) and
        build its stream (``watermark=False``: unmarked, for a caller that marks it later)."""
        reject_unknown({k: v for k, v in params.items() if k not in GENERATION_PARAMETERS}, GENERATION_PARAMETERS)
        params = {k: v for k, v in params.items() if v is not None}
        if self.max_new_tokens is not None:
            requested = params.setdefault("max_new_tokens", self.max_new_tokens)
            if isinstance(requested, int) and requested > self.max_new_tokens:
                raise ValueError(f"max_new_tokens must be at most {self.max_new_tokens} on this server, "
                                 f"got {requested}")
        with self._prepare_lock:
            chunks = self.tts.astream(text, voice, language=language, watermark=watermark and self.watermark, **params)
        return SpeechJob(chunks, self.tts.t3.count_text_tokens(text, language))

    # --- voices -----------------------------------------------------------------------------

    def decode_reference(self, data: bytes) -> tuple[np.ndarray, int]:
        """Reference audio bytes -> (mono samples, rate), checked by the library's loader."""
        return load_audio(data)

    async def build_voice(self, samples: np.ndarray, sample_rate: int, exaggeration: float) -> Voice:
        def build() -> Voice:
            with self._voice_lock:  # the voice networks load on first use
                return self.tts.voice_from_audio(samples, sample_rate, exaggeration=exaggeration)

        return await asyncio.to_thread(build)

    def warm_voice_soon(self, voice: Voice, name: str) -> None:
        """Put a stored voice's T3 conditioning into vLLM's prefix cache in the background
        (``ChatterboxTTS.warm_voice``), so its first speech request skips that prefill."""
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._warm_voice, voice, name))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    def _warm_voice(self, voice: Voice, name: str) -> None:
        try:
            rows = self.tts.warm_voice(voice)
        except Exception as exc:  # noqa: BLE001 - the voice works without it, only its first request is slower
            logger.warning("voice %r: its T3 conditioning was not pre-computed (%s: %s)", name, type(exc).__name__, exc)
            return
        if rows:
            logger.info("voice %r: %d T3 prompt rows pre-computed in the prefix cache", name, rows)

    @property
    def converter(self):
        """Voice conversion on this model's S3Gen and voice networks (:mod:`vllm_chatterbox.conversion`;
        built on first use)."""
        with self._voice_lock:
            if self._converter is None:
                self._converter = self.tts.converter
                self._observe_converter(self._converter)
            return self._converter

    def _observe_converter(self, converter) -> None:
        """Count the pieces a conversion stream's worker converts (the converter has no statistics
        hook; this wraps the call its worker makes)."""
        convert_piece = converter._convert_piece

        def observed(*args, **kwargs):
            wav = convert_piece(*args, **kwargs)
            self.metrics.conversion_pieces.inc()
            return wav

        converter._convert_piece = observed

    def close(self) -> None:
        self.tts.close()
