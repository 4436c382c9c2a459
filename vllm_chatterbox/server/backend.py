"""The server's one door to the engine: validate a request, stream its audio, clone a voice.

Today's ``ChatterboxTTS`` is not thread-safe, so every engine call runs in ONE worker thread, in
arrival order. A text is cut into chunks exactly as ``generate_long`` cuts it; each chunk is
synthesised on its own (chunk i with ``seed + i``) and joined to the previous one with
``join_with_crossfade``, holding back only the samples the next join may still fade. The audio is
therefore ``generate_long``'s and streams sentence by sentence. A stream that is closed early
(client gone) submits none of its remaining chunks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vllm_chatterbox.engine.long_text import (DEFAULT_CROSSFADE_MS, DEFAULT_MAX_CHUNK_TOKENS, DEFAULT_PAUSE_MS,
                                              join_with_crossfade)
from vllm_chatterbox.params import T3_PARAMETERS, check_seed, check_timesteps, reject_unknown, t3_params
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.text import text_to_token_ids
from vllm_chatterbox.text.chunking import split_text
from vllm_chatterbox.voice.audio import load_audio
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
SPEECH_TOKENS_PER_SECOND = 25
# Generation parameters a request may set (besides text, voice and language).
GENERATION_PARAMETERS = (*T3_PARAMETERS, "seed", "n_timesteps")


@dataclass(frozen=True)
class SpeechJob:
    """A validated request: everything the engine needs, nothing left to check."""

    text: str
    text_chunks: list[str]
    voice: Voice | None
    language: str | None
    params: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 0


class _StreamJoiner:
    """``join_with_crossfade`` over chunks that arrive one by one: yields every sample that no
    later join can change, so the concatenated output equals the joined whole."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, crossfade_ms: float = DEFAULT_CROSSFADE_MS,
                 pause_ms: float = DEFAULT_PAUSE_MS):
        self.sample_rate, self.crossfade_ms, self.pause_ms = sample_rate, crossfade_ms, pause_ms
        self._fade = round(crossfade_ms * sample_rate / 1000)
        self._held: np.ndarray | None = None  # the output's last samples, which the next join fades

    def add(self, wav: np.ndarray) -> np.ndarray:
        if wav.size == 0:
            return wav
        joined = wav if self._held is None else join_with_crossfade(
            [self._held, wav], self.sample_rate, self.crossfade_ms, self.pause_ms)
        hold = min(self._fade, wav.size)
        self._held = joined[joined.size - hold:]
        return joined[:joined.size - hold]

    def finish(self) -> np.ndarray:
        held, self._held = self._held, None
        return np.zeros(0, dtype=np.float32) if held is None else held


class SpeechBackend:
    """Requests to audio on a loaded ``ChatterboxTTS``."""

    def __init__(self, tts, metrics: ServerMetrics, *, max_new_tokens: int | None = None):
        """``max_new_tokens``: the operator's cap on speech tokens per text chunk, also the
        default of requests that do not set it (None: the library's default and range)."""
        self.tts = tts
        self.metrics = metrics
        self.max_new_tokens = max_new_tokens
        self.multilingual = bool(tts.files.multilingual)
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatterbox-engine")
        self._voice_lock = threading.Lock()

    # --- validation (cheap, no engine work) -----------------------------------------------

    def prepare(self, text: str, voice: Voice | None, *, language: str | None = None,
                **params: Any) -> SpeechJob:
        """Check a request with the library's own checks; ValueError names the problem."""
        reject_unknown({k: v for k, v in params.items() if k not in GENERATION_PARAMETERS}, GENERATION_PARAMETERS)
        params = {k: v for k, v in params.items() if v is not None}
        if self.max_new_tokens is not None:
            requested = params.setdefault("max_new_tokens", self.max_new_tokens)
            if isinstance(requested, int) and requested > self.max_new_tokens:
                raise ValueError(f"max_new_tokens must be at most {self.max_new_tokens} on this server, "
                                 f"got {requested}")
        values = {name: params.get(name, T3_PARAMETERS[name][0]) for name in T3_PARAMETERS}
        values["seed"] = check_seed(params.get("seed"))
        t3_params(1, values)
        params["n_timesteps"] = check_timesteps(params.get("n_timesteps", 10))
        if not isinstance(text, str) or not text.strip():
            raise ValueError("input must be a non-empty string")

        def count(piece: str) -> int:
            ids = text_to_token_ids(piece, self.tts.tokenizer, language=language, max_text_tokens=sys.maxsize)
            return len(ids) - 2

        chunks = split_text(text, DEFAULT_MAX_CHUNK_TOKENS, count)
        if not chunks:
            raise ValueError("input has nothing to speak")
        input_tokens = sum(count(chunk) for chunk in chunks)
        return SpeechJob(text, chunks, voice, language, params, input_tokens)

    # --- synthesis --------------------------------------------------------------------------

    async def stream(self, job: SpeechJob) -> AsyncIterator[np.ndarray]:
        """24 kHz float32 chunks of the job's audio, in order."""
        loop = asyncio.get_running_loop()
        joiner = _StreamJoiner()
        for index in range(len(job.text_chunks)):
            wav = await loop.run_in_executor(self._engine, self._synthesize_chunk, job, index)
            audio = joiner.add(wav)
            if audio.size:
                yield audio
        tail = joiner.finish()
        if tail.size:
            yield tail

    def _synthesize_chunk(self, job: SpeechJob, index: int) -> np.ndarray:
        params = dict(job.params)
        n_timesteps = params.pop("n_timesteps")
        if params.get("seed") is not None:
            params["seed"] += index  # generate_long's seeds
        started = time.perf_counter()
        tokens = self.tts.generate_speech_tokens(job.text_chunks[index], job.voice, language=job.language,
                                                 **params)[0]
        self.metrics.observe_t3(len(tokens), time.perf_counter() - started)
        if not tokens:
            logger.warning("a chunk produced no speech tokens; it is silent")
            return np.zeros(0, dtype=np.float32)
        self.metrics.s3gen_batch_size.observe(1)
        return self.tts.speech_tokens_to_audio([tokens], job.voice, n_timesteps=n_timesteps,
                                               seed=params.get("seed"))[0]

    # --- voices -----------------------------------------------------------------------------

    def decode_reference(self, data: bytes) -> tuple[np.ndarray, int]:
        """Reference audio bytes -> (mono samples, rate), checked by the library's loader."""
        return load_audio(data)

    async def build_voice(self, samples: np.ndarray, sample_rate: int, exaggeration: float) -> Voice:
        def build() -> Voice:
            with self._voice_lock:  # the voice networks load on first use
                return self.tts.voice_from_audio(samples, sample_rate, exaggeration=exaggeration)

        return await asyncio.to_thread(build)

    def close(self) -> None:
        self._engine.shutdown(wait=True, cancel_futures=True)
        self.tts.t3_engine.shutdown()
