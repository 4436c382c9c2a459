"""Stored voices: ``/v1/audio/voices`` clones a voice from uploaded reference audio once and keeps
it by name (see :mod:`vllm_chatterbox.server.voices`); list, get and delete them by name."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from vllm_chatterbox.params import check_number
from vllm_chatterbox.server.dependencies import OPENAI_VOICES, State
from vllm_chatterbox.server.errors import APIError, shown, voice_storage_error
from vllm_chatterbox.server.state import ServerState
from vllm_chatterbox.server.voices import BUILTIN_VOICE, VoiceExists, check_voice_name

router = APIRouter()


def _builtin_voice(state: ServerState) -> dict:
    return {"id": BUILTIN_VOICE, "object": "audio.voice", "name": BUILTIN_VOICE, "created_at": state.started_at,
            "type": "builtin", "exaggeration": None, "builtin": True}


def _stored_voice_name(name: str) -> str:
    try:
        return check_voice_name(name)
    except ValueError as exc:
        raise APIError(400, str(exc), param="name", code="invalid_voice_name") from None


def _voice_exists(name: str) -> APIError:
    return APIError(409, f"voice {name!r} already exists; DELETE it first", param="name", code="voice_exists")


@router.get("/v1/audio/voices")
async def list_voices(state: State):
    infos = [state.voices.info(name) for name in state.voices.names()]
    return {"object": "list", "data": [_builtin_voice(state), *(i.to_json() for i in infos if i is not None)]}


@router.get("/v1/audio/voices/{name}")
async def get_voice(name: str, state: State):
    if name == BUILTIN_VOICE:
        return _builtin_voice(state)
    info = state.voices.info(_stored_voice_name(name))
    if info is None:
        raise APIError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return info.to_json()


@router.delete("/v1/audio/voices/{name}")
async def delete_voice(name: str, state: State):
    if name == BUILTIN_VOICE:
        raise APIError(400, "the built-in voice cannot be deleted", param="name", code="builtin_voice")
    try:
        deleted = state.voices.delete(_stored_voice_name(name))
    except OSError as exc:
        raise voice_storage_error(exc, f"delete voice {name!r}") from None
    if not deleted:
        raise APIError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return {"id": name, "object": "audio.voice.deleted", "deleted": True}


@router.post("/v1/audio/voices", status_code=201)
async def create_voice(
    state: State,
    name: Annotated[str, Form(description="1-64 letters, digits, '-' or '_'")],
    file: Annotated[UploadFile | None, File(description="reference audio (wav, flac, mp3, ogg)")] = None,
    audio_sample: Annotated[UploadFile | None, File(description="same as file (OpenAI's field name)")] = None,
    exaggeration: Annotated[float, Form(description="emotion intensity stored with the voice, 0-2")] = 0.5,
    voice_type: Annotated[str, Form(alias="type", description="OpenAI's field: only 'audio_sample' (the "
                                                              "default)")] = "audio_sample",
):
    settings = state.settings
    name = _stored_voice_name(name)
    if name == BUILTIN_VOICE:
        raise APIError(400, f"{BUILTIN_VOICE!r} is the built-in voice; choose another name", param="name",
                       code="invalid_voice_name")
    if name in OPENAI_VOICES:
        # A stored voice of that name would silently replace the built-in voice for every client
        # that hard-codes OpenAI's voice names.
        raise APIError(400, f"{name!r} is one of OpenAI's voice names, which mean the built-in voice on this server; "
                            "choose another name", param="name", code="reserved_voice_name")
    if voice_type != "audio_sample":
        raise APIError(400, "type must be 'audio_sample' (a voice cloned from reference audio), got "
                            f"{shown(voice_type)}",
                       param="type", code="invalid_value")
    if (file is None) == (audio_sample is None):
        raise APIError(400, "send the reference audio as one multipart file field, 'file' (or 'audio_sample')",
                       param="file")
    try:
        exaggeration = check_number("exaggeration", exaggeration)
    except ValueError as exc:
        raise APIError(400, str(exc), param="exaggeration") from None
    backend = state.require_backend()
    if state.voices.exists(name):
        raise _voice_exists(name)
    upload = file or audio_sample
    data = await upload.read(settings.max_voice_bytes + 1)
    if len(data) > settings.max_voice_bytes:
        raise APIError(413, f"reference audio is larger than {settings.max_voice_bytes} bytes", param="file",
                       code="file_too_large")
    try:
        samples, rate = await asyncio.to_thread(backend.decode_reference, data)
    except ValueError as exc:
        raise APIError(400, f"reference audio: {exc}", param="file", code="invalid_audio") from None
    if samples.size / rate > settings.max_voice_seconds:
        raise APIError(400, f"reference audio is {samples.size / rate:.1f} s long; the limit is "
                            f"{settings.max_voice_seconds:g} s", param="file", code="audio_too_long")
    try:
        voice = await backend.build_voice(samples, rate, exaggeration)
    except ValueError as exc:
        raise APIError(400, f"reference audio: {exc}", param="file", code="invalid_audio") from None
    try:
        info = await asyncio.to_thread(state.voices.save, name, voice)
    except VoiceExists:
        raise _voice_exists(name) from None
    except OSError as exc:
        raise voice_storage_error(exc, f"store voice {name!r}") from None
    backend.warm_voice_soon(voice, name)
    return info.to_json()
