"""What one server holds while it runs (settings, metrics, voices, admission, the engine's backend,
the requests being answered), the loading of that backend in the background at start-up, and its
replacement after the engine died."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from vllm_chatterbox.server.admission import Admission
from vllm_chatterbox.server.backend import SpeechBackend
from vllm_chatterbox.server.errors import RETRY_AFTER_S, APIError, engine_dead_error, shutting_down_error
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.voices import VoiceStore

logger = logging.getLogger(__name__)

BackendLoader = Callable[[ServerMetrics], SpeechBackend]


@dataclass
class InFlightRequest:
    method: str
    path: str
    client: str
    started: float  # time.monotonic()
    task: asyncio.Task | None = None  # the task answering it
    cut: bool = False

    def describe(self, now: float) -> str:
        return f"{self.method} {self.path} from {self.client} ({now - self.started:.1f} s)"


class InFlightRequests:
    """The HTTP requests being answered (a streamed response until its last byte): what a drain
    waits for, and cuts (naming them) when its time is up."""

    def __init__(self) -> None:
        self._requests: dict[int, InFlightRequest] = {}
        self._next = 0

    def add(self, request: InFlightRequest) -> int:
        self._next += 1
        self._requests[self._next] = request
        return self._next

    def remove(self, key: int) -> None:
        self._requests.pop(key, None)

    def __len__(self) -> int:
        return len(self._requests)

    def cut(self) -> list[str]:
        """Cancel every request in flight; returns their descriptions."""
        now = time.monotonic()
        described = []
        for request in self._requests.values():
            described.append(request.describe(now))
            request.cut = True
            if request.task is not None:
                request.task.cancel()
        return described


class ServerState:
    def __init__(self, settings: ServerSettings, load_backend: BackendLoader):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.admission = Admission(settings.max_queue, self.metrics)
        self.voices = VoiceStore(settings.voices_dir)
        self.backend: SpeechBackend | None = None
        self.load_error: str | None = None
        self.in_flight = InFlightRequests()
        # Set once a shutdown has begun: /health fails and new work is refused while requests finish.
        self.draining = False
        # Why the engine is being restarted (None while it runs).
        self.restarting: str | None = None
        self.started_at = int(time.time())
        self._load_backend = load_backend

    def require_backend(self) -> SpeechBackend:
        if self.draining:
            raise shutting_down_error()
        if self.restarting is not None:
            raise APIError(503, f"{self.restarting}; retry shortly", code="engine_not_ready",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        if self.backend is None:
            message = "the engine failed to load" if self.load_error else "the engine is still loading"
            raise APIError(503, f"{message}; retry shortly", code="engine_not_ready",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        if self.backend.engine_dead:
            raise engine_dead_error()
        return self.backend

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Loads the backend in a background thread (``backend`` is None until it returns; a
        failure is kept in ``load_error``) and closes it at the end."""
        loaded = asyncio.get_running_loop().create_future()

        def load() -> None:
            try:
                backend = self._load_backend(self.metrics)
            except Exception as exc:  # noqa: BLE001 - reported through /health and the exit code
                logger.exception("the engine failed to load")
                loaded.get_loop().call_soon_threadsafe(_set_if_pending, loaded, exc)
                return
            loaded.get_loop().call_soon_threadsafe(_set_if_pending, loaded, backend)

        # A daemon thread: a server stopped while loading must not wait for the load to end.
        threading.Thread(target=load, name="chatterbox-load", daemon=True).start()
        watcher = asyncio.create_task(self._install_backend(loaded))
        try:
            yield
        finally:
            watcher.cancel()
            if self.backend is not None:
                await asyncio.to_thread(self.backend.close)

    async def replace_backend(self) -> None:
        """Close the backend (its engine has died) and load a new one with the loader it was loaded
        with; raises what the loader raises (the server then has no backend)."""
        old, self.backend = self.backend, None
        self.metrics.engine_ready.set(0)
        if old is not None:
            # Ends the dead engine's processes before a new engine takes their memory.
            await asyncio.to_thread(old.close)
        self.backend = await asyncio.to_thread(self._load_backend, self.metrics)
        self.metrics.engine_ready.set(1)

    async def _install_backend(self, loaded: asyncio.Future) -> None:
        try:
            self.backend = await loaded
        except Exception as exc:  # noqa: BLE001 - logged by the loader
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        self.metrics.engine_ready.set(1)
        logger.info("engine ready: serving %s", self.settings.model_name)


def _set_if_pending(future: asyncio.Future, value: Any) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
