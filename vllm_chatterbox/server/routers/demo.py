"""The demo page at ``/`` (open: a browser cannot send the API key when opening a page; the page
asks for the key and sends it with each call)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def demo_page():
    return resources.files("vllm_chatterbox.server").joinpath("static/index.html").read_text(encoding="utf-8")
