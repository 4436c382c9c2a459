"""The server's life as an operator running it under a supervisor meets it (issue 25): SIGTERM
drains the requests in flight (and cuts what outlives ``--shutdown-timeout``), a dead engine is
restarted in the same process (up to ``--max-engine-restarts``, then the server exits), and no
engine process outlives the server. Each test owns its server process: how that process ends is
what the test checks. A server killed with SIGKILL leaves no engine either: that is checked where
the session server is killed and started again (``tests/server/test_voices.py``)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile

from tests.server.helpers import (AUTH, ServerProcess, assert_openai_error, engine_processes, kill_all, speech,
                                  still_alive)

SAMPLES_PER_TOKEN = 960  # 24 kHz audio, 25 speech tokens per second
LONG_TOKENS = 900  # a stream of 36 s of audio: far longer than the tests' shutdown timeout
# The drain test's stream that must outlive the timeout whatever the machine's speed: 72 s of audio
# (a quiet 2-core VM made 36 s of the tiny model's audio in under 15 s), read by a client that stops
# reading after its first bytes, so the server cannot finish sending it before the timeout.
DRAIN_LONG_TOKENS = 1800
SHORT_TOKENS = 50
SHUTDOWN_TIMEOUT_S = 15

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the engine processes in /proc")


class Download(threading.Thread):
    """One speech request read to its end (or its failure) in a thread; ``started`` is set at the
    first bytes of the body. With ``resume``, the client reads nothing more after those until
    ``resume`` is set."""

    def __init__(self, server: ServerProcess, resume: threading.Event | None = None, **fields):
        super().__init__(daemon=True)
        self.url, self.fields, self.resume = server.url, fields, resume
        self.started = threading.Event()
        self.status: int | None = None
        self.body = b""
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/v1/audio/speech", headers=AUTH, timeout=300,
                              json={"model": "chatterbox", "seed": 1, **self.fields}) as response:
                self.status = response.status_code
                for data in response.iter_bytes():
                    self.body += data
                    self.started.set()
                    if self.resume is not None:
                        self.resume.wait()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc
        self.started.set()


def sse_audio(body: bytes) -> tuple[np.ndarray, dict]:
    """The pcm samples of an SSE speech response and its closing ``speech.audio.done`` event."""
    events = [json.loads(block[len("data: "):]) for block in body.decode().split("\n\n") if block]
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1), events[-1]
    pcm = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    return np.frombuffer(pcm, dtype="<i2"), events[-1]


def test_sigterm_drains_requests_in_flight_then_cuts_what_outlives_the_timeout(model_dir, tmp_path):
    server = ServerProcess(model_dir, tmp_path / "voices", tmp_path, max_new_tokens=DRAIN_LONG_TOKENS,
                           max_model_len=2048, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    server.start()
    resume_long = threading.Event()
    try:
        engines = engine_processes(server.process.pid)
        long = Download(server, resume_long, input="A long one.", response_format="pcm",
                        max_new_tokens=DRAIN_LONG_TOKENS)
        sse = Download(server, input="A short stream.", response_format="pcm", stream_format="sse",
                       max_new_tokens=SHORT_TOKENS)
        whole = Download(server, input="A short file.", response_format="wav", max_new_tokens=SHORT_TOKENS)
        for download in (long, sse, whole):
            download.start()
        assert long.started.wait(120) and sse.started.wait(120), (long.error, sse.error)
        assert sse.is_alive() and whole.is_alive(), "a request ended before the signal: nothing to drain"
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # The signal reaches the server's event loop a moment later: readiness fails within seconds.
        assert set(wait_for_health(server, "draining", 5)) <= {"ok", "draining"}
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "draining", health.text
        with server.client() as http:
            refused = speech(http, "Too late.", response_format="pcm")
        assert_openai_error(refused, 503)
        assert refused.json()["error"]["code"] == "shutting_down"
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["connection"] == "close"

        for download in (sse, whole):
            download.join(SHUTDOWN_TIMEOUT_S + 10)
        assert sse.status == 200 and sse.error is None, sse.error
        samples, done = sse_audio(sse.body)
        assert done["type"] == "speech.audio.done", done
        assert len(samples) == done["usage"]["output_tokens"] * SAMPLES_PER_TOKEN > 0
        assert whole.status == 200 and whole.error is None, whole.error
        wav, rate = soundfile.read(io.BytesIO(whole.body))
        assert rate == 24000 and len(wav) == SHORT_TOKENS * SAMPLES_PER_TOKEN

        code = server.process.wait(timeout=SHUTDOWN_TIMEOUT_S + 30)
        stopped = time.monotonic() - signalled
        resume_long.set()  # the client reads what the server sent before it cut the stream
        long.join(10)
        log = server.log_path.read_text(errors="replace")
        assert code == 0, server.log_tail()
        # The long stream was cut at the timeout: the client saw an incomplete transfer.
        assert isinstance(long.error, httpx.RemoteProtocolError), (long.error, len(long.body))
        assert 0 < len(long.body) < DRAIN_LONG_TOKENS * SAMPLES_PER_TOKEN * 2
        assert SHUTDOWN_TIMEOUT_S <= stopped < SHUTDOWN_TIMEOUT_S + 20, stopped
        assert "cut 1 request(s) still in flight: POST /v1/audio/speech" in log, server.log_tail()
        assert "Traceback" not in log, server.log_tail()
        assert not still_alive(engines), "an engine process outlived the drained server"
    finally:
        resume_long.set()
        kill_all(engine_processes(server.process.pid) if server.is_running() else [])
        server.stop()


def wait_for_health(server: ServerProcess, status: str, seconds: float) -> list[str]:
    """Polls /health until it says ``status``; returns every status it said on the way."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            said = httpx.get(f"{server.url}/health", timeout=10).json()["status"]
        except httpx.TransportError:
            said = "unreachable"
        if not seen or seen[-1] != said:
            seen.append(said)
        if said == status:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"/health never said {status!r} in {seconds} s (it said {seen}):\n{server.log_tail()}")


def test_a_dead_engine_is_restarted_and_beyond_max_engine_restarts_the_server_exits_non_zero(model_dir, tmp_path):
    server = ServerProcess(model_dir, tmp_path / "voices", tmp_path, max_engine_restarts=1,
                           max_new_tokens=LONG_TOKENS)
    server.start()
    try:
        [first] = engine_processes(server.process.pid)
        stream = Download(server, input="Cut by the engine's death.", response_format="pcm", max_new_tokens=LONG_TOKENS)
        stream.start()
        assert stream.started.wait(120), stream.error
        first.kill()
        assert "restarting" in wait_for_health(server, "restarting", 30)
        with server.client() as http:
            refused = speech(http, "While it restarts.", response_format="pcm")
        assert_openai_error(refused, 503)
        assert refused.json()["error"]["code"] == "engine_not_ready" and int(refused.headers["retry-after"]) > 0
        stream.join(30)
        assert not stream.is_alive(), "a stream outlived its engine by 30 s"
        assert isinstance(stream.error, httpx.RemoteProtocolError), stream.error  # an incomplete transfer

        wait_for_health(server, "ok", 600)
        assert not still_alive([first]), "the dead engine's process is still there"
        [second] = engine_processes(server.process.pid)  # one engine: the old one's memory is free
        assert second.pid != first.pid
        with server.client() as http:
            response = speech(http, "After the restart.", response_format="wav", max_new_tokens=10)
        assert response.status_code == 200, response.text
        wav, rate = soundfile.read(io.BytesIO(response.content))
        assert rate == 24000 and len(wav) == 10 * SAMPLES_PER_TOKEN
        assert server.metric("chatterbox_engine_restarts_total") == 1
        assert server.metric("chatterbox_engine_ready") == 1

        # Its one restart used, the next death ends the server (for its supervisor to restart).
        second.kill()
        killed = time.monotonic()
        code = server.process.wait(timeout=60)
        assert code != 0 and time.monotonic() - killed < 20, (code, server.log_tail())
        assert "after 1 restart(s)" in server.log_tail() and "--max-engine-restarts 1" in server.log_tail(), \
            server.log_tail()
        assert not still_alive([second])
    finally:
        kill_all(engine_processes(server.process.pid) if server.is_running() else [])
        server.stop()
