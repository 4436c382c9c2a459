"""The restart of a dead engine, in the server's process, on a stand-in backend (no engine): the
backoff, a restart that fails, and the limit. ``tests/server/test_lifecycle.py`` kills a real
engine under a real server."""

from __future__ import annotations

import asyncio

import pytest

from vllm_chatterbox.server import run
from vllm_chatterbox.server.errors import APIError
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import ServerState


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
