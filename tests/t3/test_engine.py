"""T3Engine's reading of vLLM's outputs, on a stand-in for vLLM's engine (no engine process)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from vllm_chatterbox.t3.engine import T3Engine, T3RequestStoppedError


class StandInVLLM:
    """Two tokens, then a third and the end, for the given finish reason."""

    def __init__(self, finish_reason: str):
        self.finish_reason = finish_reason

    async def generate(self, prompt, params, request_id):
        yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1, 2], finish_reason=None)], finished=False,
                              num_cached_tokens=0)
        yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[3], finish_reason=self.finish_reason)],
                              finished=True, num_cached_tokens=0)


@pytest.mark.parametrize("finish_reason, ends_in_error", [("stop", False), ("length", False), ("abort", True),
                                                          ("error", True)])
def test_a_request_the_engine_stopped_by_itself_is_an_error_not_an_end(finish_reason, ends_in_error):
    """vLLM aborts its requests when its engine process gets SIGINT / SIGTERM (a Ctrl-C reaches the
    whole process group): that cut speech must not pass for a finished request."""
    engine = T3Engine.__new__(T3Engine)
    engine.engine = StandInVLLM(finish_reason)
    events = []
    asyncio.run(engine._pump("t3-1", {}, None, events.append))
    assert [kind for kind, _ in events] == ["tokens", "tokens", "error" if ends_in_error else "done"]
    if ends_in_error:
        assert isinstance(events[-1][1], T3RequestStoppedError)
        assert finish_reason in str(events[-1][1])
    else:
        assert events[-1][1].token_ids == [1, 2, 3] and events[-1][1].finish_reason == finish_reason
