"""ASGI middleware: request body limits per route, the count of responses by route and status,
the access log, and the register of requests in flight that a shutdown drains."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from vllm_chatterbox.server.errors import APIError, error_response, shutting_down_error
from vllm_chatterbox.server.logs import ACCESS_LOGGER, ACCESS_SCOPE_KEY, AccessRecord, access_message
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.server.state import InFlightRequest, ServerState


_access_log = logging.getLogger(ACCESS_LOGGER)


def _client_address(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


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
            fields = record.fields(client=_client_address(scope), method=scope["method"],
                                   route=label if route is not None else _raw_path(scope), status=status["code"])
            # 503 is expected while the engine loads (and says so in the body): a warning, not an error.
            code = status["code"]
            level = logging.INFO if code < 500 else logging.WARNING if code == 503 else logging.ERROR
            _access_log.log(level, "%s", access_message(fields), extra={"access": fields})


class InFlightMiddleware:
    """Registers every request until its response has ended (what a drain waits for). Once the
    server drains, responses say ``Connection: close``, so keep-alive clients reconnect (to
    another server) for their next request. A request the drain cuts before its response has
    begun gets the 503 of new requests; one cut mid-response ends without its last chunk (the
    client sees an incomplete transfer)."""

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = InFlightRequest(scope["method"], _raw_path(scope), _client_address(scope), time.monotonic(),
                                  asyncio.current_task())
        key = self.state.in_flight.add(request)
        started = False

        async def closing_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.state.draining:
                    headers = [(name, value) for name, value in message.get("headers", [])
                               if name.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, closing_send)
        except asyncio.CancelledError:
            if not request.cut or started:
                raise
            await error_response(shutting_down_error())(scope, receive, closing_send)
        finally:
            self.state.in_flight.remove(key)
