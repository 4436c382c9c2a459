"""What the routers share: the server's state (kept on ``app.state``, handed to routes by FastAPI's
dependency injection), the API key check, and the look-ups of the served model and of a voice."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from vllm_chatterbox.server.errors import APIError, shown
from vllm_chatterbox.server.state import ServerState
from vllm_chatterbox.server.voices import BUILTIN_VOICE, check_voice_name
from vllm_chatterbox.voice.voice import Voice

# Model ids OpenAI clients send; all mean the served model.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI's voice names, which clients often hard-code: they mean the built-in voice, and no new
# voice may be stored under them (a voice stored so by an earlier version still takes precedence).
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")


# Says on every audio response whether it carries Perth's watermark ("perth") or not ("none").
WATERMARK_HEADER = "X-Chatterbox-Watermark"


def watermark_headers(state: ServerState) -> dict[str, str]:
    return {WATERMARK_HEADER: "perth" if state.settings.watermark else "none"}


async def get_state(request: Request) -> ServerState:
    return request.app.state.chatterbox


State = Annotated[ServerState, Depends(get_state)]


async def require_api_key(request: Request, state: State) -> None:
    api_key = state.settings.api_key
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def check_model(state: ServerState, model: str | None) -> None:
    """404 unless ``model`` (None: not given) names the served model or one of OpenAI's aliases."""
    served = state.settings.model_name
    if model is not None and model != served and model not in OPENAI_MODEL_ALIASES:
        raise APIError(404, f"the model {shown(model)} does not exist; this server serves {served!r}",
                       param="model", code="model_not_found")


def resolve_voice(state: ServerState, name: str) -> Voice | None:
    """The stored voice of that name, or None for the built-in voice (400 for a bad name or a name
    that is neither stored nor one of OpenAI's)."""
    if name == BUILTIN_VOICE:
        return None
    try:
        check_voice_name(name)
        stored = state.voices.load(name)
    except ValueError as exc:
        raise APIError(400, str(exc), param="voice", code="invalid_voice") from None
    if stored is None:
        if name in OPENAI_VOICES:
            return None
        # 400 as OpenAI answers an unknown voice (a 404 would read as a wrong URL).
        raise APIError(400, f"voice {shown(name)} not found: use a stored voice (GET /v1/audio/voices), "
                            f"{BUILTIN_VOICE!r} or one of OpenAI's voice names for the built-in voice", param="voice",
                       code="voice_not_found")
    return stored
