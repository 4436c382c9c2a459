"""``POST /v1/audio/watermark/detect``: does an audio file carry Perth's watermark (the mark this
server puts on all its audio unless started with ``--no-watermark``)? An extension; OpenAI has
none. The file comes as the multipart field ``file`` or as the raw request body."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel, Field

from vllm_chatterbox.server.dependencies import State
from vllm_chatterbox.server.errors import APIError
from vllm_chatterbox.watermark import DETECTION_THRESHOLD, detect_file

router = APIRouter()

DETECT_PATH = "/v1/audio/watermark/detect"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class WatermarkDetection(BaseModel):
    confidence: float = Field(description="the detector's confidence that the audio is marked, 0-1")
    marked: bool = Field(description=f"confidence > {DETECTION_THRESHOLD}, the original's verdict")
    threshold: float = DETECTION_THRESHOLD
    seconds: float = Field(description="the audio's duration")
    sample_rate: int = Field(description="the file's sample rate")
    watermark: str = Field("perth", description="the watermark looked for: Resemble AI's Perth implicit watermark")


class _Detections:
    """Detections running at once, at most ``max_queue`` (each holds a decoded file in memory)."""

    def __init__(self) -> None:
        self.running = 0


_detections = _Detections()


async def read_upload(upload: UploadFile | None, request: Request, limit: int, what: str, param: str) -> bytes:
    """The bytes of a multipart upload (or, without one, of a raw body); 413 above ``limit``,
    400 when there is nothing."""
    content_type = request.headers.get("content-type", "")
    if upload is not None:
        data = await upload.read(limit + 1)
    elif content_type.startswith(_FORM_TYPES):  # a form (already read) without the file
        data = b""
    else:
        data = await request.body()
    if len(data) > limit:
        raise APIError(413, f"{what} is larger than {limit} bytes ({limit / (1 << 20):g} MiB, the server's "
                            "--max-convert-mb)", param=param, code="file_too_large")
    if not data:
        raise APIError(400, f"{what} is missing: send it as the multipart field {param!r}", param=param,
                       code="missing_file")
    return data


@router.post(DETECT_PATH, response_model=WatermarkDetection)
async def detect_watermark(
    request: Request,
    state: State,
    file: Annotated[UploadFile | None, File(description="the audio file (wav, flac, ogg/opus, mp3, aac, m4a, ...); "
                                                        "or send the file as the raw request body")] = None,
):
    settings = state.settings
    data = await read_upload(file, request, settings.max_convert_bytes, "the audio file", "file")
    if _detections.running >= settings.max_queue:
        raise APIError(429, f"the server is busy ({_detections.running} watermark detections running); retry "
                            "after 1 s", code="queue_full", headers={"Retry-After": "1"})
    _detections.running += 1
    try:
        detection = await asyncio.to_thread(detect_file, data, max_seconds=settings.max_convert_seconds)
    except ValueError as exc:
        message = str(exc).removeprefix("audio bytes: ")
        raise APIError(400, f"file: {message}", param="file", code="invalid_audio") from None
    finally:
        _detections.running -= 1
    return WatermarkDetection(confidence=detection.confidence, marked=detection.marked,
                              seconds=detection.seconds, sample_rate=detection.sample_rate)

