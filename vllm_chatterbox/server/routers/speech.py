"""OpenAI's ``POST /v1/audio/speech``: text to audio, streamed as it is made (encoded audio or SSE
events), with Chatterbox's generation parameters as extensions."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Literal

import numpy as np

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from vllm_chatterbox.server.dependencies import State, check_model, resolve_voice, watermark_headers
from vllm_chatterbox.server.encoding import SAMPLE_RATE
from vllm_chatterbox.server.errors import APIError, engine_dead_error, library_error
from vllm_chatterbox.server.logs import ACCESS_SCOPE_KEY, AccessRecord
from vllm_chatterbox.server.speed import MAX_SPEED, MIN_SPEED, change_speed
from vllm_chatterbox.server.streaming import ClientDisconnected, audio_response, close_stream, first_chunk
from vllm_chatterbox.server.voices import BUILTIN_VOICE
from vllm_chatterbox.watermark import load_watermarker


class VoiceId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class SpeechRequest(BaseModel):
    """OpenAI's ``/v1/audio/speech`` body plus Chatterbox's generation parameters."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="the served model id (see /v1/models) or tts-1, tts-1-hd, "
                                                "gpt-4o-mini-tts; default: the served model")
    input: str = Field(description="text to speak; long text is cut into sentences and streamed in order")
    voice: str | VoiceId = Field(BUILTIN_VOICE, description="a stored voice name, 'default' (the model's "
                                                            "built-in voice), or {'id': name}")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="pcm is raw 24 kHz mono s16le; flac is sent once complete")
    speed: float = Field(1.0, description="0.25-4.0: faster or slower speech at the same pitch (time stretching)")
    stream_format: Literal["audio", "sse"] | None = Field(None, description="audio (default) or sse events")
    stream: bool | None = Field(None, description="false: send the whole file once complete (a wav then carries its "
                                                  "real length in its header); true: send the audio as it is made. "
                                                  "Default: true, but a wav asked for without stream_format comes "
                                                  "whole (file players need its sizes)")

    def streams(self) -> bool:
        """Whether the audio leaves as it is made. A plain wav request is a file download (curl -o,
        sox, editors need its real sizes); a client that streams wav says stream_format or stream."""
        if self.stream is not None:
            return self.stream
        return self.stream_format is not None or self.response_format != "wav"
    instructions: str | None = Field(None, description="accepted and ignored (Chatterbox takes no instructions; "
                                                       "see exaggeration and cfg_weight); the response says so in "
                                                       "its X-Chatterbox-Ignored header")
    exaggeration: float | None = Field(None, description="emotion intensity, 0-2 (0.5)")
    cfg_weight: float | None = Field(None, description="classifier-free guidance, 0-2 (0.5); 0 disables it")
    temperature: float | None = Field(None, description="0-2 (0.8); 0 is greedy")
    top_p: float | None = Field(None, description="(0, 1] (1.0)")
    min_p: float | None = Field(None, description="0-1 (0.05)")
    repetition_penalty: float | None = Field(None, description="(0, 10] (1.2)")
    seed: int | None = Field(None, description="same seed, same audio")
    language: str | None = Field(None, description="language id, required by the multilingual model")
    max_new_tokens: int | None = Field(None, description="speech tokens per text chunk (25 per second)")
    n_timesteps: int | None = Field(None, description="S3Gen flow-matching steps, 1-100 (10)")


GENERATION_FIELDS = ("exaggeration", "cfg_weight", "temperature", "top_p", "min_p", "repetition_penalty", "seed",
                     "max_new_tokens", "n_timesteps")
# The fields a library error may name (its message starts with the name).
SPEECH_PARAMS = (*GENERATION_FIELDS, "language", "input", "voice")


router = APIRouter()


async def _recorded(chunks: AsyncIterator[np.ndarray], record: AccessRecord) -> AsyncIterator[np.ndarray]:
    """``chunks``, noting in the access record when audio starts, how much there is, and whether
    it ended early."""
    completed = False
    try:
        async for chunk in chunks:
            record.audio_started()
            record.audio_samples += len(chunk)
            yield chunk
        completed = True
    finally:
        record.aborted = not completed
        await close_stream(chunks)


@router.post("/v1/audio/speech", response_class=Response,
             responses={200: {"description": "the audio, streamed as it is produced (or SSE events)",
                              "content": {"audio/mpeg": {}, "text/event-stream": {}}}})
async def create_speech(body: SpeechRequest, request: Request, state: State):
    settings = state.settings
    backend = state.require_backend()
    check_model(state, body.model)
    if len(body.input) > settings.max_input_chars:
        raise APIError(400, f"input is {len(body.input)} characters; the limit is {settings.max_input_chars}",
                       param="input", code="string_above_max_length")
    if not body.input.strip():
        raise APIError(400, "input is empty", param="input", code="empty_input")
    if not math.isfinite(body.speed) or not MIN_SPEED <= body.speed <= MAX_SPEED:
        raise APIError(400, f"speed must be in [{MIN_SPEED}, {MAX_SPEED}], got {body.speed}", param="speed")
    voice_name = body.voice.id if isinstance(body.voice, VoiceId) else body.voice
    voice = resolve_voice(state, voice_name)
    record: AccessRecord | None = request.scope.get(ACCESS_SCOPE_KEY)
    params = {name: getattr(body, name) for name in GENERATION_FIELDS}
    changed = body.speed != 1.0
    try:
        # A changed speed removes the watermark: such a stream is marked after the change.
        job = await asyncio.to_thread(backend.prepare, body.input, voice, language=body.language,
                                      watermark=not changed, **params)
    except ValueError as exc:
        raise library_error(exc, SPEECH_PARAMS) from None
    if changed:
        job.chunks = change_speed(job.chunks, body.speed, load_watermarker() if settings.watermark else None)
    try:
        slot = state.admission.admit()
    except APIError:
        await close_stream(job.chunks)
        raise
    if record is not None:
        record.voice, record.characters, record.sample_rate = voice_name, len(body.input), SAMPLE_RATE
        record.aborted = True  # until its audio has ended
        job.chunks = _recorded(job.chunks, record)
    try:
        first = await first_chunk(request, job.chunks, slot)
    except ClientDisconnected:
        return Response(status_code=499)
    except ValueError as exc:
        raise library_error(exc, SPEECH_PARAMS) from None
    except BaseException:
        if backend.engine_dead:
            raise engine_dead_error() from None
        raise
    # OpenAI's fields that these models cannot follow are accepted (clients send them by default), and named.
    ignored = {"X-Chatterbox-Ignored": "instructions"} if body.instructions else None
    return audio_response(first, job.chunks, slot, state.metrics, response_format=body.response_format,
                          stream_format=body.stream_format or "audio", input_tokens=job.input_tokens,
                          stream=body.streams(),
                          headers={**watermark_headers(state), **(ignored or {})})
