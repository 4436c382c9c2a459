"""Every error the server answers, in OpenAI's ``{"error": {"message", "type", "param", "code"}}``
schema, and the exception handlers that turn anything raised into one (never a traceback)."""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Collection

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_SHOWN_CHARS = 64

_ERROR_TYPES = {401: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(StarletteHTTPException):
    """An error answered in OpenAI's schema (a Starlette HTTPException, so FastAPI passes it on
    unchanged even from inside body parsing)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.message, self.param, self.code = message, param, code
        self.error_type = error_type or _ERROR_TYPES.get(status, "invalid_request_error")


def shown(value: object, limit: int = _SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters (a client's 5000-character
    value is not echoed back whole)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{size}"


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.error_type, error.param, error.code),
                        status_code=error.status_code, headers=error.headers)


def library_error(exc: ValueError, params: Collection[str]) -> APIError:
    """A 400 for the library's ValueError; its message starts with the parameter's name, one of
    ``params`` (the request's fields)."""
    message = str(exc)
    head = message.split(" ", 1)[0].rstrip(":")
    param = head if head in params else ("language" if "language" in message else None)
    return APIError(400, message, param=param, code="invalid_value")


def voice_storage_error(exc: OSError, action: str) -> APIError:
    """The answer when the voices directory refuses a write. A full disk or quota is 507
    Insufficient Storage (RFC 4918: the server cannot store what the request needs; a 5xx, so
    clients retry later, once the operator has made room); a read-only or forbidden directory is
    a misconfiguration the client cannot fix or wait out: 500, saying so. Other I/O errors are
    500 too. The message names the cause, not the server's paths (they are logged)."""
    logger.error("voices directory: cannot %s: %s", action, exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return APIError(507, f"cannot {action}: the server's voice storage is full", code="insufficient_storage",
                        error_type="server_error")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return APIError(500, f"cannot {action}: the server's voice storage is read-only",
                        code="voice_storage_read_only")
    cause = f" ({os.strerror(exc.errno)})" if exc.errno else ""
    return APIError(500, f"cannot {action}: the server's voice storage failed{cause}", code="voice_storage_error")


# Seconds a client is asked to wait before retrying a 503 (the engine loading or restarting, or
# this server draining: a load balancer has another server by then).
RETRY_AFTER_S = 5


def engine_dead_error() -> APIError:
    return APIError(503, "the engine has died; retry shortly (the server restarts it, see its log)",
                    code="engine_dead", headers={"Retry-After": str(RETRY_AFTER_S)})


def shutting_down_error() -> APIError:
    return APIError(503, "the server is shutting down and takes no new requests; retry (another server, or "
                         "this one once restarted)", code="shutting_down",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


# What to send instead, by route, when a body has the wrong shape or content type.
_SPEECH_BODY = ('send a JSON object with Content-Type: application/json, e.g. {"model": "chatterbox", '
                '"input": "Hello.", "voice": "default"}')
_VOICE_UPLOAD = ("send multipart/form-data with a 'name' field and the reference audio as a 'file' field "
                 "(curl -F name=narrator -F file=@reference.wav)")
# Fields that take one of several shapes: one sentence instead of pydantic's one per shape.
_FIELD_SHAPES = {"voice": 'must be a voice name (a string such as "default") or {"id": "<name>"}'}


def validation_api_error(request: Request, errors: list[dict]) -> APIError:
    """A 400 that says what to send instead, for FastAPI's validation errors of a request."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.url.path == "/v1/audio/voices" and request.method == "POST" and content_type not in (
            "multipart/form-data", "application/x-www-form-urlencoded"):
        return APIError(400, f"the voices endpoint takes a form, not {content_type or 'this body'}: {_VOICE_UPLOAD}",
                        code="invalid_content_type")
    if first.get("type") == "json_invalid":
        message = f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')}); {_SPEECH_BODY}"
        return APIError(400, message, code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    if not loc and first.get("loc", ())[:1] == ("body",):
        shape = f"the body is not a JSON object ({content_type or 'no Content-Type'})"
        return APIError(400, f"{shape}: {_SPEECH_BODY}", code="invalid_body")
    field = loc[0] if loc else None
    if field in _FIELD_SHAPES:
        got = json.dumps(first.get("input"), default=str)
        got = got if len(got) <= _SHOWN_CHARS else f"{got[:_SHOWN_CHARS]}..."
        return APIError(400, f"{field} {_FIELD_SHAPES[field]}; got {got}", param=field, code="invalid_type")
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    if request.url.path == "/v1/audio/voices":
        message += f"; {_VOICE_UPLOAD}"
    return APIError(400, message, param=param, code=first.get("type"))


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, APIError):
            return error_response(exc)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(APIError(exc.status_code, str(exc.detail), code=codes.get(exc.status_code),
                                       headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(validation_api_error(request, exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "internal server error (see the server log)", code="internal_error"))
