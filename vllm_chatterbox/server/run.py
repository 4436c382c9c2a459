"""``vllm-chatterbox serve``: the app of :mod:`vllm_chatterbox.server.app` under uvicorn, one
process, one engine (see :mod:`vllm_chatterbox.server.backend`), and the life of that process:

- SIGTERM or SIGINT (Ctrl-C) starts a drain: ``/health`` answers 503 ``draining`` (a load
  balancer stops sending), new work gets 503 ``shutting_down`` with Retry-After, and the requests
  in flight (streams too) finish, for up to ``shutdown_timeout`` seconds; then the server stops,
  cutting and logging what is left. A second signal stops at once. uvicorn's own handling would
  close the listener at once (no 503 to read), cut streams after its graceful timeout, and die
  of the signal again at exit (a non-zero status after a clean stop).
- An engine that dies is restarted in this process with the loader it was started with, after
  1, 2, 4 ... s (at most 30 s); meanwhile ``/health`` says ``restarting`` and new work gets 503
  ``engine_not_ready``. Beyond ``max_engine_restarts`` restarts within 10 minutes the server
  exits non-zero, for its supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import threading
import time

import uvicorn

from vllm_chatterbox.server.app import create_app
from vllm_chatterbox.server.logs import log_config
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import BackendLoader, ServerState

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
DEFAULT_MAX_ENGINE_RESTARTS = 3
ENGINE_RESTART_WINDOW_S = 600.0
MAX_RESTART_DELAY_S = 30.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_S = 0.1
_ENGINE_POLL_S = 0.5
# What uvicorn still waits for after the drain (a request that came in during it) before cancelling.
_AFTER_DRAIN_S = 2.0


class _DrainingServer(uvicorn.Server):
    """uvicorn's server with the signal handling above: the signals are only recorded here (the
    drain task acts on them); none is raised again at exit. (uvicorn's own forced exit is not
    used: it skips the app's shutdown, which closes the engine.)"""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.signals: list[int] = []

    @property
    def forced(self) -> bool:
        """A second signal came: stop now."""
        return len(self.signals) > 1

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        self.signals.append(sig)


class _CutRequestTracebacks(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" for a request cancelled while stopping."""

    def __init__(self, state: ServerState):
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        return not (cancelled and self.state.draining)


def run_server(settings: ServerSettings, load_backend: BackendLoader, *, host: str, port: int,
               log_format: str = "text", shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
               max_engine_restarts: int = DEFAULT_MAX_ENGINE_RESTARTS) -> int:
    """Serve until stopped; returns the exit status: 0 after a drain, 128 + the signal's number
    when a second signal cut it short. RuntimeError if the engine failed to load, or died more
    often than ``max_engine_restarts`` allows. ``log_format``: ``text`` (uvicorn's) or ``json``
    (one object per line), for every log line."""
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must not be negative, got {shutdown_timeout}")
    if max_engine_restarts < 0:
        raise ValueError(f"max_engine_restarts must not be negative, got {max_engine_restarts}")
    app = create_app(settings, load_backend)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            log_config=log_config(log_format), timeout_graceful_shutdown=_AFTER_DRAIN_S)
    server = _DrainingServer(config)
    state: ServerState = app.state.chatterbox
    # The drain names the requests it cuts; uvicorn's traceback of each adds nothing.
    logging.getLogger("uvicorn.error").addFilter(_CutRequestTracebacks(state))
    url = f"http://{host}:{port}"
    failure: list[str] = []

    async def stop_on_load_failure() -> None:
        while state.load_error is None:
            if state.backend is not None and server.started:
                # /health answers 200 from here on: the one line that says "send requests now".
                logger.info("ready: %s serves %s (the engine has loaded; /health says ok)", url, settings.model_name)
                break
            await asyncio.sleep(0.2)
        while state.load_error is None:
            await asyncio.sleep(0.5)
        server.should_exit = True

    async def restart_dead_engine() -> None:
        reason = await _supervise_engine(state, max_engine_restarts)
        if reason is not None:
            failure.append(reason)
            logger.error("%s", reason)
            server.should_exit = True

    async def serve() -> None:
        tasks = [asyncio.create_task(stop_on_load_failure()), asyncio.create_task(restart_dead_engine()),
                 asyncio.create_task(_drain_on_signal(server, state, shutdown_timeout))]
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(serve())
    if state.load_error:
        raise RuntimeError(f"the engine failed to load: {state.load_error}")
    if failure:
        raise RuntimeError(failure[0])
    if server.forced:
        return 128 + server.signals[-1]
    return 0


async def _drain_on_signal(server: _DrainingServer, state: ServerState, timeout: float) -> None:
    """Waits for the first stop signal, then drains (see the module's docstring) and tells
    uvicorn to stop."""
    while not server.signals:
        await asyncio.sleep(_POLL_S)
    state.draining = True
    logger.info("%s: draining: /health answers 503 and new requests are refused; %d request(s) in flight get "
                "up to %g s to finish (a second signal stops at once)", signal.Signals(server.signals[0]).name,
                len(state.in_flight), timeout)
    deadline = time.monotonic() + timeout
    while state.in_flight and time.monotonic() < deadline and not server.forced:
        await asyncio.sleep(_POLL_S)
    left = state.in_flight.cut()
    if left:
        why = "a second signal" if server.forced else f"the shutdown timeout ({timeout:g} s)"
        logger.warning("stopping at %s: cut %d request(s) still in flight: %s", why, len(left), "; ".join(left))
    else:
        logger.info("drained: no request in flight; stopping")
    server.should_exit = True


def restart_delay(restarts: int) -> float:
    """Seconds before the next restart, after ``restarts`` within the window: 1, 2, 4 ... at most 30."""
    return min(MAX_RESTART_DELAY_S, 2.0 ** restarts)


async def _supervise_engine(state: ServerState, max_restarts: int) -> str | None:
    """Restarts the engine whenever it has died (see the module's docstring); returns why it gave
    up, or None when a drain began meanwhile."""
    restarts: collections.deque[float] = collections.deque()
    while True:
        await asyncio.sleep(_ENGINE_POLL_S)
        backend = state.backend
        if backend is None or state.draining or not backend.engine_dead:
            continue
        logger.error("the engine has died: requests in flight end with an error")
        while True:
            now = time.monotonic()
            while restarts and restarts[0] < now - ENGINE_RESTART_WINDOW_S:
                restarts.popleft()
            if len(restarts) >= max_restarts:
                state.restarting = None
                return (f"the engine died after {len(restarts)} restart(s) within {ENGINE_RESTART_WINDOW_S / 60:g} "
                        f"minutes (--max-engine-restarts {max_restarts}); exiting for a supervisor to restart "
                        f"the server")
            delay = restart_delay(len(restarts))
            state.restarting = (f"the engine died; restart {len(restarts) + 1} of at most {max_restarts} within "
                                f"{ENGINE_RESTART_WINDOW_S / 60:g} minutes")
            logger.warning("%s, in %g s", state.restarting, delay)
            await asyncio.sleep(delay)
            if state.draining:
                return None
            restarts.append(time.monotonic())
            state.metrics.engine_restarts.inc()
            try:
                await state.replace_backend()
            except Exception:  # noqa: BLE001 - logged; the next attempt follows the backoff
                logger.exception("the engine failed to restart")
                continue
            break
        state.restarting = None
        logger.info("engine restarted: serving %s again", state.settings.model_name)
