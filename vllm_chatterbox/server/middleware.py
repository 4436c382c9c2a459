"""ASGI middleware: request body limits per route, and the count of responses by route and status."""

from __future__ import annotations

from collections.abc import Callable

from vllm_chatterbox.server.errors import APIError, error_response
from vllm_chatterbox.server.metrics import ServerMetrics


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
    """Counts responses by route template and status code."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

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
