"""Streaming an admitted request's audio to its client: the first chunk raced against the client
leaving, then the encoded audio as it is made, or as SSE events (``speech.audio.delta`` with
base64 audio, then ``speech.audio.done`` with the usage). However a response ends, its audio
stream is closed (which cancels the remaining work) and its admission slot released."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import AsyncIterator

import anyio
import numpy as np
from fastapi import Request
from fastapi.responses import StreamingResponse

from vllm_chatterbox.server.admission import Slot
from vllm_chatterbox.server.backend import SAMPLE_RATE, SPEECH_TOKENS_PER_SECOND
from vllm_chatterbox.server.encoding import AudioEncoder
from vllm_chatterbox.server.errors import error_body
from vllm_chatterbox.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)


class ClientDisconnected(Exception):
    pass


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next_or_disconnect(request: Request, chunks: AsyncIterator):
    """The next chunk, unless the client goes away first (then ClientDisconnected)."""
    step = asyncio.ensure_future(chunks.__anext__())
    gone = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not step.done():
            step.cancel()
            # The generator must leave its step before anyone closes it, also when this task is
            # cancelled (a drain cutting the request): aclose() of a running generator fails.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(step, return_exceptions=True)
    if step.cancelled():
        raise ClientDisconnected
    return step.result()


async def close_stream(chunks) -> None:
    """Close an async generator, even from a cancelled task."""
    with anyio.CancelScope(shield=True):
        await chunks.aclose()


async def first_chunk(request: Request, chunks: AsyncIterator[np.ndarray], slot: Slot) -> np.ndarray | None:
    """The stream's first audio chunk (None if it has none). If the client leaves first
    (ClientDisconnected) or the stream fails, the slot is released, the stream closed and the
    exception raised."""
    try:
        first = await _next_or_disconnect(request, chunks)
    except StopAsyncIteration:
        first = None
    except BaseException:
        slot.release(completed=False)
        await close_stream(chunks)
        raise
    slot.first_audio()
    return first


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends (a client that leaves cancels it)."""

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_stream(self.body_iterator)


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def audio_response(first: np.ndarray | None, chunks: AsyncIterator[np.ndarray], slot: Slot, metrics: ServerMetrics,
                   *, response_format: str, stream_format: str, input_tokens: int, stream: bool = True,
                   headers: dict[str, str] | None = None) -> StreamingResponse:
    """The response that streams ``first`` and then the rest of ``chunks``, encoded as
    ``response_format``, as audio or (``stream_format="sse"``) as SSE events; with
    ``stream=False`` the audio leaves as one whole file once complete."""
    encoder = AudioEncoder(response_format, stream=stream)
    produced = _AudioCount()
    audio = _audio_chunks(first, chunks, slot, produced, metrics)
    if stream_format == "sse":
        return _ClosingStreamingResponse(_sse_events(audio, encoder, produced, input_tokens),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", **(headers or {})})
    return _ClosingStreamingResponse(_audio_bytes(audio, encoder), media_type=encoder.content_type, headers=headers)


class _AudioCount:
    def __init__(self) -> None:
        self.samples = 0

    def add(self, chunk) -> None:
        self.samples += len(chunk)


async def _audio_chunks(first, chunks, slot: Slot, produced: _AudioCount, metrics: ServerMetrics):
    """The request's audio chunks; releases its slot when done, however it ends."""
    completed = False
    try:
        if first is not None:
            produced.add(first)
            yield first
        async for chunk in chunks:
            produced.add(chunk)
            yield chunk
        completed = True
    finally:
        await close_stream(chunks)
        metrics.audio_seconds.inc(produced.samples / SAMPLE_RATE)
        slot.release(completed)


async def _audio_bytes(audio, encoder: AudioEncoder):
    try:
        async for chunk in audio:
            data = encoder.encode(chunk)
            if data:
                yield data
        yield encoder.finish()
    except ValueError:
        logger.exception("speech request failed after its audio had started; the stream ends early")
    finally:
        encoder.close()
        await close_stream(audio)


async def _sse_events(audio, encoder: AudioEncoder, produced: _AudioCount, input_tokens: int):
    try:
        async for chunk in audio:
            data = encoder.encode(chunk)
            if data:
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        data = encoder.finish()
        if data:
            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        output_tokens = math.ceil(produced.samples * SPEECH_TOKENS_PER_SECOND / SAMPLE_RATE)
        yield sse({"type": "speech.audio.done", "usage": {
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}})
    except ValueError as exc:
        logger.exception("speech request failed after its audio had started")
        yield sse({"type": "error", **error_body(str(exc), "invalid_request_error")})
    finally:
        encoder.close()
        await close_stream(audio)
