"""``first_chunk`` when the request's own task is cancelled while the audio's first step runs
(a drain cutting a request that waits for its first audio): the stream closes cleanly."""

from __future__ import annotations

import asyncio

import pytest

from vllm_chatterbox.server.admission import Admission
from vllm_chatterbox.server.metrics import ServerMetrics
from vllm_chatterbox.server.streaming import first_chunk


class StayingClient:
    async def receive(self):
        await asyncio.sleep(3600)


def test_a_cancelled_request_closes_its_stream_while_the_first_step_runs():
    closed = []

    async def chunks():
        try:
            await asyncio.sleep(3600)  # the engine still working on the first audio
            yield None
        finally:
            closed.append(True)

    async def scenario():
        admission = Admission(4, ServerMetrics())
        stream = chunks()
        request = asyncio.create_task(first_chunk(StayingClient(), stream, admission.admit()))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert admission.admitted == 0

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert closed == [True]
