"""OpenAI's ``POST /v1/audio/speech``: text to audio, streamed as it is made (encoded audio or SSE
events), with Chatterbox's generation parameters as extensions."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from vllm_chatterbox.server.dependencies import State, check_model, resolve_voice, watermark_headers
from vllm_chatterbox.server.errors import APIError, engine_dead_error, library_error
from vllm_chatterbox.server.streaming import ClientDisconnected, audio_response, close_stream, first_chunk
from vllm_chatterbox.server.voices import BUILTIN_VOICE


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
    speed: float = Field(1.0, description="only 1.0 is supported (other values are refused with 400)")
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = Field(None, description="not supported: refused with 400 unless empty")
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
    if not math.isfinite(body.speed) or not 0.25 <= body.speed <= 4.0:
        raise APIError(400, f"speed must be in [0.25, 4.0], got {body.speed}", param="speed")
    if body.speed != 1.0:
        raise APIError(400, "speed other than 1.0 is not supported by this server (Chatterbox has no speed "
                            "control; changing the playback rate would change the voice)", param="speed",
                       code="unsupported_parameter")
    if body.instructions:
        raise APIError(400, "instructions are not supported by Chatterbox; use exaggeration and cfg_weight",
                       param="instructions", code="unsupported_parameter")
    voice = resolve_voice(state, body.voice.id if isinstance(body.voice, VoiceId) else body.voice)
    params = {name: getattr(body, name) for name in GENERATION_FIELDS}
    try:
        job = await asyncio.to_thread(backend.prepare, body.input, voice, language=body.language, **params)
    except ValueError as exc:
        raise library_error(exc, SPEECH_PARAMS) from None
    try:
        slot = state.admission.admit()
    except APIError:
        await close_stream(job.chunks)
        raise
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
    return audio_response(first, job.chunks, slot, state.metrics, response_format=body.response_format,
                          stream_format=body.stream_format, input_tokens=job.input_tokens,
                          headers=watermark_headers(state))
