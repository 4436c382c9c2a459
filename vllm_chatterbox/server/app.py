"""``vllm-chatterbox serve``: an OpenAI-compatible speech server.

One process, one engine (see :mod:`vllm_chatterbox.server.backend`). Every error is OpenAI's
``{"error": {"message", "type", "param", "code"}}``; a traceback never reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from vllm_chatterbox.params import check_number
from vllm_chatterbox.server.backend import SpeechBackend
from vllm_chatterbox.server.errors import APIError, add_error_handlers, engine_dead_error, library_error
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.server.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import ServerState
from vllm_chatterbox.server.streaming import ClientDisconnected, audio_response, close_stream, first_chunk
from vllm_chatterbox.server.voices import BUILTIN_VOICE, VoiceExists, check_voice_name

logger = logging.getLogger(__name__)

# Model ids OpenAI clients send; all mean the served model.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI's voice names, which clients often hard-code: a stored voice of that name if there is
# one, else the built-in voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")
MAX_JSON_BODY_BYTES = 1 << 20


# --- request models ------------------------------------------------------------------------

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
_SPEECH_PARAMS = (*GENERATION_FIELDS, "language", "input", "voice")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    async with app.state.chatterbox.running():
        yield


# --- the app -------------------------------------------------------------------------------

def create_app(settings: ServerSettings, load_backend: Callable[[ServerMetrics], SpeechBackend]) -> FastAPI:
    """The ASGI app; ``load_backend`` runs in a background thread at start-up (``/health`` is 503
    until it returns)."""
    state = ServerState(settings, load_backend)
    metrics = state.metrics

    app = FastAPI(title="vllm-chatterbox", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.chatterbox = state

    voice_limit = settings.max_voice_bytes + (64 << 10)  # the file plus the multipart envelope
    app.add_middleware(BodyLimitMiddleware,
                       limit_for=lambda path: voice_limit if path == "/v1/audio/voices" else MAX_JSON_BODY_BYTES)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    add_error_handlers(app)

    def require_api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    open_routes = APIRouter()
    api = APIRouter(dependencies=[Depends(require_api_key)])

    @open_routes.get("/health", include_in_schema=False)
    async def health():
        if state.backend is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        if state.backend.engine_dead:
            return JSONResponse({"status": "failed", "error": "the engine has died"}, status_code=503)
        return {"status": "ok"}

    @open_routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo_page():
        return resources.files("vllm_chatterbox.server").joinpath("static/index.html").read_text(encoding="utf-8")

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi():
        return app.openapi()

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        return {"id": settings.model_name, "object": "model", "created": state.started_at,
                "owned_by": "vllm-chatterbox"}

    @api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @api.get("/v1/models/{model}")
    async def get_model(model: str):
        _check_model(model)
        return model_card()

    def _check_model(model: str | None) -> None:
        if model is not None and model != settings.model_name and model not in OPENAI_MODEL_ALIASES:
            raise APIError(404, f"the model {model!r} does not exist; this server serves {settings.model_name!r}",
                           param="model", code="model_not_found")

    def _resolve_voice(voice: str | VoiceId):
        name = voice.id if isinstance(voice, VoiceId) else voice
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
            raise APIError(404, f"voice {name!r} not found; see GET /v1/audio/voices", param="voice",
                           code="voice_not_found")
        return stored

    @api.post("/v1/audio/speech", response_class=Response,
              responses={200: {"description": "the audio, streamed as it is produced (or SSE events)",
                               "content": {"audio/mpeg": {}, "text/event-stream": {}}}})
    async def create_speech(body: SpeechRequest, request: Request):
        backend = state.require_backend()
        _check_model(body.model)
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
        voice = _resolve_voice(body.voice)
        params = {name: getattr(body, name) for name in GENERATION_FIELDS}
        try:
            job = await asyncio.to_thread(backend.prepare, body.input, voice, language=body.language, **params)
        except ValueError as exc:
            raise library_error(exc, _SPEECH_PARAMS) from None
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
            raise library_error(exc, _SPEECH_PARAMS) from None
        except BaseException:
            if backend.engine_dead:
                raise engine_dead_error() from None
            raise
        return audio_response(first, job.chunks, slot, metrics, response_format=body.response_format,
                              stream_format=body.stream_format, input_tokens=job.input_tokens)

    # --- voices --------------------------------------------------------------------------

    @api.get("/v1/audio/voices")
    async def list_voices():
        backend_voice = {"id": BUILTIN_VOICE, "object": "audio.voice", "name": BUILTIN_VOICE,
                         "created_at": state.started_at, "exaggeration": None, "builtin": True}
        infos = [state.voices.info(name) for name in state.voices.names()]
        return {"object": "list", "data": [backend_voice, *(i.to_json() for i in infos if i is not None)]}

    def _stored_voice_name(name: str) -> str:
        try:
            return check_voice_name(name)
        except ValueError as exc:
            raise APIError(400, str(exc), param="name", code="invalid_voice_name") from None

    @api.get("/v1/audio/voices/{name}")
    async def get_voice(name: str):
        if name == BUILTIN_VOICE:
            return {"id": BUILTIN_VOICE, "object": "audio.voice", "name": BUILTIN_VOICE,
                    "created_at": state.started_at, "exaggeration": None, "builtin": True}
        info = state.voices.info(_stored_voice_name(name))
        if info is None:
            raise APIError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
        return info.to_json()

    @api.delete("/v1/audio/voices/{name}")
    async def delete_voice(name: str):
        if name == BUILTIN_VOICE:
            raise APIError(400, "the built-in voice cannot be deleted", param="name", code="builtin_voice")
        if not state.voices.delete(_stored_voice_name(name)):
            raise APIError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
        return {"id": name, "object": "audio.voice.deleted", "deleted": True}

    @api.post("/v1/audio/voices", status_code=201)
    async def create_voice(
        name: Annotated[str, Form(description="1-64 letters, digits, '-' or '_'")],
        file: Annotated[UploadFile | None, File(description="reference audio (wav, flac, mp3, ogg)")] = None,
        audio_sample: Annotated[UploadFile | None, File(description="same as file (OpenAI's field name)")] = None,
        exaggeration: Annotated[float, Form(description="emotion intensity stored with the voice, 0-2")] = 0.5,
    ):
        name = _stored_voice_name(name)
        if name == BUILTIN_VOICE:
            raise APIError(400, f"{BUILTIN_VOICE!r} is the built-in voice; choose another name", param="name",
                           code="invalid_voice_name")
        if (file is None) == (audio_sample is None):
            raise APIError(400, "send the reference audio as one multipart file field, 'file' (or 'audio_sample')",
                           param="file")
        try:
            exaggeration = check_number("exaggeration", exaggeration)
        except ValueError as exc:
            raise APIError(400, str(exc), param="exaggeration") from None
        backend = state.require_backend()
        if state.voices.exists(name):
            raise APIError(409, f"voice {name!r} already exists; DELETE it first", param="name",
                           code="voice_exists")
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
            raise APIError(409, f"voice {name!r} already exists; DELETE it first", param="name",
                           code="voice_exists") from None
        return info.to_json()

    app.include_router(open_routes)
    app.include_router(api)
    return app


def run_server(settings: ServerSettings, load_backend: Callable[[ServerMetrics], SpeechBackend], *, host: str,
               port: int) -> None:
    """Serve until stopped (Ctrl-C / SIGTERM); RuntimeError if the engine failed to load."""
    import uvicorn

    app = create_app(settings, load_backend)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)

    state: ServerState = app.state.chatterbox

    async def serve() -> None:
        async def stop_on_load_failure() -> None:
            while state.load_error is None:
                await asyncio.sleep(0.5)
            server.should_exit = True

        watcher = asyncio.create_task(stop_on_load_failure())
        try:
            await server.serve()
        finally:
            watcher.cancel()

    asyncio.run(serve())
    if state.load_error:
        raise RuntimeError(f"the engine failed to load: {state.load_error}")
