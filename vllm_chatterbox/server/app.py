"""The server as one FastAPI app, built from settings and a backend loader: middleware, error
handlers and one router per resource. Building the app is separate from running it
(:mod:`vllm_chatterbox.server.run` serves it with uvicorn), so any ASGI runner can serve it.

Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}``; a traceback never
reaches a client. The API key guards every route but ``/health`` and the demo page.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from vllm_chatterbox.server.dependencies import require_api_key
from vllm_chatterbox.server.errors import add_error_handlers
from vllm_chatterbox.server.middleware import BodyLimitMiddleware, InFlightMiddleware, RequestMetricsMiddleware
from vllm_chatterbox.server.routers import conversion, demo, service, speech, voices, watermark
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import BackendLoader, ServerState

MAX_JSON_BODY_BYTES = 1 << 20
_MULTIPART_ENVELOPE_BYTES = 64 << 10


@asynccontextmanager
async def _lifespan(app: FastAPI):
    async with app.state.chatterbox.running():
        yield


def create_app(settings: ServerSettings, load_backend: BackendLoader) -> FastAPI:
    """The ASGI app; ``load_backend`` runs in a background thread at start-up (``/health`` is 503
    until it returns). Its :class:`ServerState` is ``app.state.chatterbox``."""
    app = FastAPI(title="vllm-chatterbox", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    state = app.state.chatterbox = ServerState(settings, load_backend)

    voice_limit = settings.max_voice_bytes + _MULTIPART_ENVELOPE_BYTES
    detect_limit = settings.max_convert_bytes + _MULTIPART_ENVELOPE_BYTES
    # A conversion may carry a reference clip beside its source.
    convert_limit = detect_limit + settings.max_voice_bytes

    def limit_for(path: str) -> int:
        if path == "/v1/audio/voices":
            return voice_limit
        if path == watermark.DETECT_PATH:
            return detect_limit
        if path.startswith(conversion.CONVERSION_PREFIX):
            return convert_limit
        return MAX_JSON_BODY_BYTES

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    app.add_middleware(InFlightMiddleware, state=state)  # outermost: a request counts until its last byte
    add_error_handlers(app)

    keyed = [Depends(require_api_key)]
    app.include_router(service.health_router)
    app.include_router(demo.router)
    app.include_router(service.router, dependencies=keyed)
    app.include_router(speech.router, dependencies=keyed)
    app.include_router(voices.router, dependencies=keyed)
    app.include_router(conversion.router, dependencies=keyed)
    app.include_router(watermark.router, dependencies=keyed)
    return app
