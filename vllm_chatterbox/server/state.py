"""What one server holds while it runs (settings, metrics, voices, admission, the engine's backend),
and the loading of that backend in the background at start-up."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from vllm_chatterbox.server.admission import Admission
from vllm_chatterbox.server.backend import SpeechBackend
from vllm_chatterbox.server.errors import APIError, engine_dead_error
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.voices import VoiceStore

logger = logging.getLogger(__name__)

BackendLoader = Callable[[ServerMetrics], SpeechBackend]


class ServerState:
    def __init__(self, settings: ServerSettings, load_backend: BackendLoader):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.admission = Admission(settings.max_queue, self.metrics)
        self.voices = VoiceStore(settings.voices_dir)
        self.backend: SpeechBackend | None = None
        self.load_error: str | None = None
        self.started_at = int(time.time())
        self._load_backend = load_backend

    def require_backend(self) -> SpeechBackend:
        if self.backend is None:
            message = "the engine failed to load" if self.load_error else "the engine is still loading"
            raise APIError(503, f"{message}; retry shortly", code="engine_not_ready",
                           headers={"Retry-After": "5"})
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
