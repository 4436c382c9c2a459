"""``vllm-chatterbox serve``: the app of :mod:`vllm_chatterbox.server.app` under uvicorn, one
process, one engine (see :mod:`vllm_chatterbox.server.backend`)."""

from __future__ import annotations

import asyncio
import logging

from vllm_chatterbox.server.app import create_app
from vllm_chatterbox.server.logs import log_config
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import BackendLoader, ServerState

logger = logging.getLogger(__name__)


def run_server(settings: ServerSettings, load_backend: BackendLoader, *, host: str, port: int,
               log_format: str = "text") -> None:
    """Serve until stopped (Ctrl-C / SIGTERM); RuntimeError if the engine failed to load.
    ``log_format``: ``text`` (uvicorn's) or ``json`` (one object per line), for every log line."""
    import uvicorn

    app = create_app(settings, load_backend)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            log_config=log_config(log_format), timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)

    state: ServerState = app.state.chatterbox
    url = f"http://{host}:{port}"

    async def serve() -> None:
        async def stop_on_load_failure() -> None:
            while state.load_error is None:
                if state.backend is not None and server.started:
                    # /health answers 200 from here on: the one line that says "send requests now".
                    logger.info("ready: %s serves %s (the engine has loaded; /health says ok)", url,
                                settings.model_name)
                    break
                await asyncio.sleep(0.2)
            while state.load_error is None:
                await asyncio.sleep(0.5)
            server.should_exit = True

        watcher = asyncio.create_task(stop_on_load_failure())
        try:
            await server.serve()
        finally:
            watcher.cancel()

    asyncio.run(serve())
    if state.load_error:
        raise RuntimeError(f"the engine failed to load: {state.load_error}")
