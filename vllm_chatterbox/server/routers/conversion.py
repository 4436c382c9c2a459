"""Voice conversion, as ElevenLabs' speech-to-speech API lays it out (OpenAI has no such API):
``POST /v1/speech-to-speech/{voice_id}`` answers the whole converted file,
``POST /v1/speech-to-speech/{voice_id}/stream`` streams it as each piece is converted (encoded
audio, or SSE events as the speech endpoint sends them). Multipart form: ``audio`` (the source
recording), optional ``voice_file`` (a reference clip to convert to instead of ``voice_id``),
``response_format``, ``seed``, ``n_timesteps``, ``max_piece_seconds``.

``voice_id`` is what the speech endpoint's ``voice`` takes: a stored voice, ``default`` (the
model's built-in voice) or one of OpenAI's names (the built-in voice unless stored). The
conversion is the library's (:class:`vllm_chatterbox.conversion.VoiceConverter`, S3Gen only, on
its worker thread): a source over ``max_piece_seconds`` is cut at pauses and converted piece by
piece. Requests pass the same admission as speech (``--max-queue``, 429 + Retry-After); a client
that leaves stops the work after the piece being converted. Audio is watermarked unless the server
runs with ``--no-watermark``: the whole file exactly as ``VoiceConverter.convert`` marks it, the
stream as ``aconvert_stream`` does.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import numpy as np
import soundfile
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from vllm_chatterbox.conversion.source import (MAX_PIECE_SECONDS, SOURCE_SAMPLE_RATE, TOKEN_SAMPLES,
                                               check_max_piece_seconds, load_source)
from vllm_chatterbox.params import check_seed, check_timesteps
from vllm_chatterbox.server.backend import SAMPLE_RATE
from vllm_chatterbox.server.dependencies import State, resolve_voice, watermark_headers
from vllm_chatterbox.server.encoding import CONTENT_TYPES, AudioEncoder
from vllm_chatterbox.server.errors import APIError
from vllm_chatterbox.server.routers.watermark import read_upload
from vllm_chatterbox.server.state import ServerState
from vllm_chatterbox.server.streaming import ClientDisconnected, audio_response, close_stream, first_chunk
from vllm_chatterbox.voice.audio import load_audio

router = APIRouter()

CONVERSION_PREFIX = "/v1/speech-to-speech/"

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
_AUDIO_RESPONSES = {200: {"description": "the converted audio (24 kHz mono)",
                          "content": {media: {} for media in CONTENT_TYPES.values()}}}


class _Conversion:
    """A validated conversion: its audio stream (not started) and the source's S3 tokens."""

    def __init__(self, chunks: AsyncIterator[np.ndarray], input_tokens: int):
        self.chunks = chunks
        self.input_tokens = input_tokens


def _stored_or_builtin(state: ServerState, voice_id: str):
    """The speech endpoint's voice look-up, its errors naming ``voice_id``."""
    try:
        return resolve_voice(state, voice_id)
    except APIError as exc:
        raise APIError(exc.status_code, exc.message, param="voice_id", code=exc.code) from None


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


async def _prepare(state: ServerState, request: Request, voice_id: str, audio: UploadFile,
                   voice_file: UploadFile | None, *, seed: int | None, n_timesteps: int | None,
                   max_piece_seconds: float, watermark: bool) -> _Conversion:
    """Everything checked (400 naming the field, 404 voice, 413 size), the source decoded and the
    target voice resolved; nothing converted yet."""
    settings = state.settings
    backend = state.require_backend()
    options = {}
    for name, check, value in (("seed", check_seed, seed), ("n_timesteps", check_timesteps, n_timesteps),
                               ("max_piece_seconds", check_max_piece_seconds, max_piece_seconds)):
        if value is not None:
            try:
                options[name] = check(value)
            except ValueError as exc:
                raise _bad(str(exc), name) from None
    voice = None if voice_file is not None else _stored_or_builtin(state, voice_id)
    source = await read_upload(audio, request, settings.max_convert_bytes, "the source audio", "audio")
    reference = None
    if voice_file is not None:
        reference = await voice_file.read(settings.max_voice_bytes + 1)
        if len(reference) > settings.max_voice_bytes:
            raise APIError(413, f"voice_file is larger than {settings.max_voice_bytes} bytes (the server's "
                                "--max-voice-mb)", param="voice_file", code="file_too_large")
    converter = await asyncio.to_thread(lambda: backend.converter)

    def build() -> _Conversion:
        try:
            wav16 = load_source(source, max_seconds=settings.max_convert_seconds)
        except ValueError as exc:
            raise _bad(f"audio: {str(exc).removeprefix('audio bytes: ')}", "audio", "invalid_audio") from None
        target = voice
        if reference is not None:
            try:
                samples, rate = load_audio(reference)
                if samples.size / rate > settings.max_voice_seconds:
                    raise ValueError(f"{samples.size / rate:.1f} s long; the limit is "
                                     f"{settings.max_voice_seconds:g} s (the server's --max-voice-seconds)")
                target = converter.voice_from_audio(samples, rate)
            except ValueError as exc:
                raise _bad(f"voice_file: {str(exc).removeprefix('audio bytes: ')}", "voice_file",
                           "invalid_audio") from None
        try:
            chunks = converter.aconvert_stream(wav16, target, sample_rate=SOURCE_SAMPLE_RATE, watermark=watermark,
                                               **options)
        except ValueError as exc:
            message = str(exc)
            param = "audio" if message.startswith("source") else "voice_file" if reference else "voice_id"
            raise _bad(message, param) from None
        return _Conversion(chunks, math.ceil(wav16.size / TOKEN_SAMPLES))

    return await asyncio.to_thread(build)


AudioUpload = Annotated[UploadFile, File(description="the source recording (wav, flac, mp3, ogg)")]
VoiceUpload = Annotated[UploadFile | None, File(description="reference audio of the target voice, instead of "
                                                            "voice_id (its first 10 s are used)")]
SeedField = Annotated[int | None, Form(description="same seed, same audio; a long source's piece j uses seed + j")]
StepsField = Annotated[int | None, Form(description="S3Gen flow-matching steps, 1-100 (the model's: 10; "
                                                    "Turbo/Nano 2)")]
PieceField = Annotated[float, Form(description="sources longer than this are cut at pauses into pieces of at most "
                                               "this many seconds, 5-30")]


@router.post(CONVERSION_PREFIX + "{voice_id}", response_class=Response, responses=_AUDIO_RESPONSES)
async def convert_voice(
    voice_id: str,
    request: Request,
    state: State,
    audio: AudioUpload,
    voice_file: VoiceUpload = None,
    response_format: Annotated[ResponseFormat, Form(description="pcm is raw 24 kHz mono s16le")] = "mp3",
    seed: SeedField = None,
    n_timesteps: StepsField = None,
    max_piece_seconds: PieceField = MAX_PIECE_SECONDS,
):
    """The source speech in the target voice, as one file once all of it is converted."""
    conversion = await _prepare(state, request, voice_id, audio, voice_file, seed=seed, n_timesteps=n_timesteps,
                                max_piece_seconds=max_piece_seconds, watermark=False)
    try:
        slot = state.admission.admit()
    except APIError:
        await close_stream(conversion.chunks)
        raise
    pieces = []
    try:
        # first_chunk races each next piece against the client leaving.
        while (piece := await first_chunk(request, conversion.chunks, slot)) is not None:
            pieces.append(piece)
    except ClientDisconnected:
        return Response(status_code=499)
    except ValueError as exc:
        raise _bad(str(exc), "audio") from None
    completed = False
    try:
        wav = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        content = await asyncio.to_thread(_finish_file, wav, response_format, state.settings.watermark)
        state.metrics.audio_seconds.inc(wav.size / SAMPLE_RATE)
        completed = True
    finally:
        slot.release(completed)
    return Response(content, media_type=CONTENT_TYPES[response_format], headers=watermark_headers(state))


@router.post(CONVERSION_PREFIX + "{voice_id}/stream", response_class=Response, responses=_AUDIO_RESPONSES)
async def convert_voice_stream(
    voice_id: str,
    request: Request,
    state: State,
    audio: AudioUpload,
    voice_file: VoiceUpload = None,
    response_format: Annotated[ResponseFormat, Form(description="pcm is raw 24 kHz mono s16le; flac is sent "
                                                                "once complete")] = "mp3",
    stream_format: Annotated[Literal["audio", "sse"], Form(description="the encoded audio, or SSE events "
                                                                       "as the speech endpoint sends")] = "audio",
    seed: SeedField = None,
    n_timesteps: StepsField = None,
    max_piece_seconds: PieceField = MAX_PIECE_SECONDS,
):
    """The source speech in the target voice, streamed as each piece is converted."""
    conversion = await _prepare(state, request, voice_id, audio, voice_file, seed=seed, n_timesteps=n_timesteps,
                                max_piece_seconds=max_piece_seconds, watermark=state.settings.watermark)
    try:
        slot = state.admission.admit()
    except APIError:
        await close_stream(conversion.chunks)
        raise
    try:
        first = await first_chunk(request, conversion.chunks, slot)
    except ClientDisconnected:
        return Response(status_code=499)
    except ValueError as exc:
        raise _bad(str(exc), "audio") from None
    return audio_response(first, conversion.chunks, slot, state.metrics, response_format=response_format,
                          stream_format=stream_format, input_tokens=conversion.input_tokens,
                          headers=watermark_headers(state))


def _finish_file(wav: np.ndarray, response_format: str, watermark: bool) -> bytes:
    """The whole converted audio, marked as ``VoiceConverter.convert`` marks it, as one file
    (a wav with its real length, unlike a streamed one)."""
    if watermark:
        from vllm_chatterbox.watermark import load_watermarker

        wav = load_watermarker().mark(wav, SAMPLE_RATE)
    if response_format == "wav":
        buffer = io.BytesIO()
        soundfile.write(buffer, wav, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()
    encoder = AudioEncoder(response_format)
    try:
        return encoder.encode(wav) + encoder.finish()
    finally:
        encoder.close()
