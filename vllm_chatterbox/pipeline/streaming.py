"""Streaming speech: audio pieces while T3 is still decoding, many streams vocoded together.

A stream is one text cut into chunks (sentences), each a T3 request. Chunk i's speech tokens
go to S3Gen's streaming vocoder (``s3gen/streaming.py``) as vLLM samples them; its audio pieces
come back in order and are joined across chunks exactly as :func:`join_with_crossfade` joins
the one-shot chunks. One :class:`StreamVocoder` thread serves every open stream: whatever
tokens arrived from all streams while it worked go into its next batched call.

The joined audio is watermarked as it leaves (:class:`vllm_chatterbox.watermark.StreamMarker`),
unless the job carries no watermarker, in worker threads of one torch thread each: the event
loop stays free, and the small windows of a stream do not pay for starting a team of threads
on cores that S3Gen keeps busy (on the 2-core VM under load, a 0.6 s window took a median 35 ms
on one thread against 231 ms on two).

The orchestration is an async generator, so a server awaits it in its own event loop; the
synchronous API drives the same generator on the T3 engine's loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from vllm_chatterbox.pipeline.batch import s3gen_seed
from vllm_chatterbox.pipeline.long_text import StreamJoiner
from vllm_chatterbox.t3.contract import T3Client, T3Request
from vllm_chatterbox.t3.engine import T3Engine
from vllm_chatterbox.voice.voice import Voice
from vllm_chatterbox.watermark import PerthWatermarker, StreamMarker

if TYPE_CHECKING:
    from vllm_chatterbox.s3gen.model import S3Gen
    from vllm_chatterbox.s3gen.streaming import StreamSchedule, StreamState

logger = logging.getLogger(__name__)

# T3 requests in flight per stream: the chunk being played and the next one.
CHUNKS_IN_FLIGHT = 2

# Vocoder events for a stream's sink: (audio piece, is it the last) or an exception.
PieceSink = Callable[[tuple[np.ndarray, bool] | BaseException], None]


class StreamVocoder:
    """One thread that vocodes the pending speech tokens of all open streams together.

    A stream's pieces are cut at its schedule's token counts whatever the timing: however many
    tokens have piled up while the vocoder was busy, each call hands a stream at most the
    tokens of its next piece. With noise a function of (seed, position), a stream's audio is
    then the same alone, in any batch, and at any speed of T3.
    """

    def __init__(self, s3gen: S3Gen):
        from vllm_chatterbox.s3gen.streaming import vocode_stream_chunks

        self._s3gen = s3gen
        self._vocode = vocode_stream_chunks
        self._wake = threading.Condition()
        self._pending: dict[int, _Pending] = {}  # by id(state)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="s3gen-stream-vocoder", daemon=True)
        self._thread.start()

    def push(self, state, tokens: Sequence[int], final: bool, sink: PieceSink) -> None:
        """Queue a stream's new tokens (``final``: no more will come); pieces go to ``sink``
        from the vocoder thread, the last one flagged."""
        with self._wake:
            entry = self._pending.setdefault(id(state), _Pending(state, sink))
            entry.tokens.extend(tokens)
            entry.final = entry.final or final
            self._wake.notify()

    def discard(self, state) -> None:
        """Forget a stream's queued work (its consumer is gone)."""
        with self._wake:
            self._pending.pop(id(state), None)

    def close(self) -> None:
        """Stop the vocoder thread after the call in progress; queued work is dropped."""
        with self._wake:
            self._closed = True
            self._pending.clear()
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    @property
    def queued_streams(self) -> int:
        """Streams with tokens (or their end) waiting for the vocoder."""
        with self._wake:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._wake:
                work = [(entry, *entry.next_piece()) for entry in self._pending.values()]
                work = [(entry, tokens, last) for entry, tokens, last, ready in work if ready]
                while not work:
                    if self._closed:
                        return
                    self._wake.wait()
                    work = [(entry, *entry.next_piece()) for entry in self._pending.values()]
                    work = [(entry, tokens, last) for entry, tokens, last, ready in work if ready]
                for entry, tokens, last in work:
                    del entry.tokens[:len(tokens)]
                    if last or not (entry.tokens or entry.final):
                        del self._pending[id(entry.state)]
            try:
                pieces = self._vocode(self._s3gen, [(entry.state, tokens, last) for entry, tokens, last in work])
            except Exception as exc:  # noqa: BLE001 - every stream in the batch learns of it
                logger.exception("streaming vocoder failed")
                for entry, _, _ in work:
                    self.discard(entry.state)
                    entry.sink(exc)
                continue
            for (entry, _, last), piece in zip(work, pieces):
                if piece.size or last:
                    entry.sink((piece, last))


@dataclass
class _Pending:
    state: StreamState
    sink: PieceSink
    tokens: list[int] = field(default_factory=list)
    final: bool = False

    def next_piece(self) -> tuple[list[int], bool, bool]:
        """(tokens to hand over now, whether that makes the last piece, whether a piece is due)."""
        state = self.state
        room = state.tokens_at_last_piece + state.schedule.chunk_size(state.pieces) - len(state.tokens)
        tokens = self.tokens[:room]
        last = self.final and len(tokens) == len(self.tokens) and len(tokens) < room
        return tokens, last, last or len(tokens) == room


@dataclass(frozen=True)
class StreamJob:
    """A validated stream: one T3 request per chunk of the text, in order."""

    requests: list[T3Request]
    voice: Voice
    n_timesteps: int
    schedule: StreamSchedule  # when each chunk's audio pieces are made (the model's, or the caller's)
    seeds: list[int | None]
    crossfade_ms: float
    pause_ms: float
    trim_last_token: bool  # the multilingual model drops the last token's audio
    watermarker: PerthWatermarker | None = None  # None: the stream leaves unmarked


async def stream_audio(job: StreamJob, t3_engine: T3Engine, t3_client: T3Client, s3gen: S3Gen,
                       vocoder: StreamVocoder) -> AsyncIterator[np.ndarray]:
    """24 kHz float32 pieces of the job's speech, in order. Closing the iterator early aborts
    the T3 requests and drops the queued vocoder work."""
    from vllm_chatterbox.s3gen.streaming import new_stream

    loop = asyncio.get_running_loop()
    sample_rate = s3gen.config.hift.sampling_rate
    samples_per_token = sample_rate // s3gen.config.s3_tokenizer.token_rate
    joiner = StreamJoiner(sample_rate, job.crossfade_ms, job.pause_ms)
    marker = None if job.watermarker is None else StreamMarker(job.watermarker, sample_rate)
    chunks = [_Chunk(loop) for _ in job.requests]
    feeders: dict[int, asyncio.Task] = {}

    def start(index: int) -> None:
        if index < len(chunks) and index not in feeders:
            state = new_stream(s3gen, job.voice, n_timesteps=job.n_timesteps, seed=s3gen_seed(job.seeds[index]),
                               schedule=job.schedule)
            chunks[index].state = state
            feeders[index] = asyncio.ensure_future(
                _feed(t3_engine, t3_client, job.requests[index], state, vocoder, chunks[index], index))

    try:
        for index, chunk in enumerate(chunks):
            for ahead in range(index, index + CHUNKS_IN_FLIGHT):
                start(ahead)
            while True:
                event = await chunk.pieces.get()
                if isinstance(event, BaseException):
                    raise event
                piece, last = event
                if last and job.trim_last_token and chunk.tokens > 1:
                    piece = piece[: max(0, piece.size - samples_per_token)]
                out = await _marked(marker, joiner.feed(piece))
                if out.size:
                    yield out
                if last:
                    break
            out = await _marked(marker, joiner.end_chunk())
            if out.size:
                yield out
        out = await _marked(marker, joiner.finish(), final=True)
        if out.size:
            yield out
    finally:
        for task in feeders.values():
            task.cancel()
        for chunk in chunks:
            if chunk.state is not None:
                vocoder.discard(chunk.state)


@functools.cache
def _marking_threads() -> ThreadPoolExecutor:
    # torch's thread count is per thread with its OpenMP backend: set once in each of these.
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="stream-watermark",
                              initializer=torch.set_num_threads, initargs=(1,))


async def _marked(marker: StreamMarker | None, samples: np.ndarray, final: bool = False) -> np.ndarray:
    """The watermarked samples that are final (all of ``samples`` when there is no marker)."""
    if marker is None or not (samples.size or final):
        return samples
    return await asyncio.get_running_loop().run_in_executor(_marking_threads(), marker.feed, samples, final)


class _Chunk:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pieces: asyncio.Queue = asyncio.Queue()
        self.state = None
        self.tokens = 0  # speech tokens sent to the vocoder

    def sink(self, event) -> None:
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, event)


async def _feed(t3_engine: T3Engine, t3_client: T3Client, request: T3Request, state, vocoder: StreamVocoder,
                chunk: _Chunk, index: int) -> None:
    """T3's tokens for one chunk, cleaned as they come (the architecture's streaming cleaner), into
    the vocoder."""
    cleaner = t3_client.streaming_cleaner()
    try:
        async for new_ids in t3_engine.stream(request):
            tokens = cleaner.feed(new_ids)
            if tokens:
                chunk.tokens += len(tokens)
                vocoder.push(state, tokens, False, chunk.sink)
            if cleaner.stopped:
                break
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - the consumer raises it in order
        chunk.sink(exc)
        return
    tail = cleaner.finish()
    chunk.tokens += len(tail)
    if chunk.tokens == 0:
        logger.warning("text chunk %d produced no speech tokens; it stays silent", index)
        chunk.sink((np.zeros(0, dtype=np.float32), True))
        return
    vocoder.push(state, tail, True, chunk.sink)
