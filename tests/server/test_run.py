"""``serve``'s process life on a stand-in backend (no engine, no process): the drain's second
signal, and the restart of a dead engine (its backoff, a restart that fails, the limit).
``tests/server/test_lifecycle.py`` signals real servers and kills their real engines."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest
import uvicorn

from vllm_chatterbox.server import run
from vllm_chatterbox.server.errors import APIError
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import InFlightRequest, ServerState


class StandInBackend:
    def __init__(self):
        self.engine_dead = False
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The backoff delays asked for (each one skipped)."""
    asked: list[float] = []
    delay = run.restart_delay

    def recorded(restarts: int) -> float:
        asked.append(delay(restarts))
        return 0.0

    monkeypatch.setattr(run, "restart_delay", recorded)
    monkeypatch.setattr(run, "_ENGINE_POLL_S", 0.01)
    return asked


def state_with(loader, tmp_path) -> ServerState:
    return ServerState(ServerSettings(voices_dir=tmp_path), loader)


def restarts_counted(state: ServerState) -> float:
    return state.metrics.registry.get_sample_value("chatterbox_engine_restarts_total")


def test_backoff_doubles_up_to_its_cap():
    assert [run.restart_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_failed_restart_is_retried_with_backoff_until_one_succeeds(waits, tmp_path):
    outcomes = [RuntimeError("no memory"), RuntimeError("still no memory"), StandInBackend()]

    def load(metrics):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    state = state_with(load, tmp_path)
    dead = state.backend = StandInBackend()
    dead.engine_dead = True

    async def scenario():
        supervisor = asyncio.create_task(run._supervise_engine(state, max_restarts=3))
        while state.backend is None or state.backend is dead or state.restarting is not None:
            if state.restarting is not None:
                with pytest.raises(APIError) as refused:
                    state.require_backend()
                assert refused.value.status_code == 503 and refused.value.code == "engine_not_ready"
            await asyncio.sleep(0.005)
        supervisor.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert dead.closed and not outcomes
    assert waits == [1, 2, 4]
    assert restarts_counted(state) == 3
    assert state.require_backend() is state.backend


def test_beyond_the_limit_it_gives_up(waits, tmp_path):
    def load(metrics):
        raise RuntimeError("the engine will not start")

    state = state_with(load, tmp_path)
    state.backend = StandInBackend()
    state.backend.engine_dead = True
    reason = asyncio.run(asyncio.wait_for(run._supervise_engine(state, max_restarts=2), 10))
    assert "--max-engine-restarts 2" in reason
    assert waits == [1, 2] and restarts_counted(state) == 2


def test_no_restart_while_draining(waits, tmp_path):
    state = state_with(lambda metrics: pytest.fail("restarted during a drain"), tmp_path)
    state.backend = StandInBackend()
    state.backend.engine_dead = True
    state.draining = True

    async def scenario():
        supervisor = asyncio.create_task(run._supervise_engine(state, max_restarts=3))
        await asyncio.sleep(0.1)
        assert not supervisor.done()
        supervisor.cancel()

    asyncio.run(scenario())
    assert waits == []


def test_a_second_signal_cuts_the_drain_short(tmp_path, caplog):
    state = state_with(lambda metrics: StandInBackend(), tmp_path)
    server = run._DrainingServer(uvicorn.Config(app=None))

    async def scenario():
        stream = asyncio.create_task(asyncio.sleep(60))
        state.in_flight.add(InFlightRequest("POST", "/v1/audio/speech", "127.0.0.1:5000", time.monotonic(), stream))
        drain = asyncio.create_task(run._drain_on_signal(server, state, timeout=60))
        server.handle_exit(signal.SIGTERM, None)
        await asyncio.sleep(0.5)
        assert state.draining and not drain.done() and not server.should_exit
        server.handle_exit(signal.SIGINT, None)
        await asyncio.wait_for(drain, 1)
        await asyncio.sleep(0)
        assert server.should_exit and server.forced and stream.cancelled()

    with caplog.at_level(logging.INFO, logger=run.__name__):
        asyncio.run(scenario())
    assert "at a second signal: cut 1 request(s) still in flight: POST /v1/audio/speech from 127.0.0.1:5000" in \
        caplog.text
