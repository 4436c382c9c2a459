"""The service itself: ``/health`` (open, for load balancers and supervisors), and behind the API
key the served models (OpenAI's ``/v1/models``), the Prometheus metrics and the OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vllm_chatterbox.server.dependencies import State, check_model
from vllm_chatterbox.server.state import ServerState

health_router = APIRouter()
router = APIRouter()


@health_router.get("/health", include_in_schema=False)
async def health(state: State):
    """200 ``ok`` while the server takes requests; 503 with its ``status`` (``loading``, ``failed``,
    ``restarting`` the dead engine, ``draining`` before it stops) otherwise, so a load balancer
    sends no more."""
    if state.draining:
        return JSONResponse({"status": "draining", "error": "the server is shutting down"}, status_code=503)
    if state.restarting is not None:
        return JSONResponse({"status": "restarting", "error": state.restarting}, status_code=503)
    if state.backend is None:
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
    if state.backend.engine_dead:
        return JSONResponse({"status": "failed", "error": "the engine has died"}, status_code=503)
    return {"status": "ok"}


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request):
    return request.app.openapi()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(state: State):
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _model_card(state: ServerState) -> dict:
    return {"id": state.settings.model_name, "object": "model", "created": state.started_at,
            "owned_by": "vllm-chatterbox"}


@router.get("/v1/models")
async def list_models(state: State):
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/v1/models/{model}")
async def get_model(model: str, state: State):
    check_model(state, model)
    return _model_card(state)
