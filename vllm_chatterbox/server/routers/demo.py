"""The demo page at ``/`` and its icon (open: a browser cannot send the API key when opening a
page; the page asks for the key and sends it with each call), and ``/demo/info`` (behind the
key): what the page shows about the served model."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from vllm_chatterbox.server.dependencies import State, require_api_key

router = APIRouter()


def _static(name: str) -> str:
    return resources.files("vllm_chatterbox.server").joinpath(f"static/{name}").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def demo_page():
    return _static("index.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return Response(_static("favicon.svg"), media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/demo/info", include_in_schema=False, dependencies=[Depends(require_api_key)])
async def demo_info(state: State):
    """The served model's name (what requests send as ``model``), variant, languages, whether it
    has random weights (the demo model: noise, not speech) and Turbo's paralinguistic tags."""
    return {"model": state.settings.model_name, **state.require_backend().model_info()}
