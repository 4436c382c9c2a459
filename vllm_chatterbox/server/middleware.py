"""ASGI middleware: request body limits per route, the count of responses by route and status,
and the access log."""

from __future__ import annotations

import logging
from collections.abc import Callable

from vllm_chatterbox.server.errors import APIError, error_response
from vllm_chatterbox.server.logs import ACCESS_LOGGER, ACCESS_SCOPE_KEY, AccessRecord, access_message
from vllm_chatterbox.server.metrics import ServerMetrics


_access_log = logging.getLogger(ACCESS_LOGGER)


def _raw_path(scope) -> str:
    """An unmatched request's path as sent, percent-encoded (a decoded one could carry a line
    break into the log), cut to 200 characters."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
    return raw.decode("ascii", "replace")[:200]


class _BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body too large (limit {limit} bytes)", code="request_too_large")


class BodyLimitMiddleware:
    """Refuses request bodies over a per-route limit, by Content-Length or while reading."""

    def __init__(self, app, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(_BodyTooLarge(limit))
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class RequestMetricsMiddleware:
    """Counts responses by route template and status code, and logs one access line per request
    once its response has ended (a streamed one when its last byte has left, or its client left):
    method, route, status, total seconds and, for speech, what the route recorded in its
    :class:`~vllm_chatterbox.server.logs.AccessRecord` (voice, characters, audio seconds, time
    to first audio, aborted)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}
        record = scope[ACCESS_SCOPE_KEY] = AccessRecord()

        async def record_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=label, status=str(status["code"])).inc()
            client = scope.get("client")
            fields = record.fields(client=f"{client[0]}:{client[1]}" if client else "-", method=scope["method"],
                                   route=label if route is not None else _raw_path(scope), status=status["code"])
            # 503 is expected while the engine loads (and says so in the body): a warning, not an error.
            code = status["code"]
            level = logging.INFO if code < 500 else logging.WARNING if code == 503 else logging.ERROR
            _access_log.log(level, "%s", access_message(fields), extra={"access": fields})
