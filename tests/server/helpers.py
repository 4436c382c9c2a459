"""Running the real server in a subprocess, and small helpers of the server tests."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_QUEUE = 16
MAX_NEW_TOKENS = 40  # the server's cap (and default) per text chunk: keeps every request short
MAX_VOICE_MB = 1.0
MAX_VOICE_SECONDS = 10.0
MAX_CONVERT_MB = 1.0  # voice conversion sources and watermark-detection uploads
MAX_CONVERT_SECONDS = 30.0
STARTUP_TIMEOUT_S = 900
PORT_TRIES = 3
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``vllm-chatterbox serve`` process; ``restart`` keeps its model and voices directory."""

    def __init__(self, model_dir: Path, voices_dir: Path, log_dir: Path, extra_args: tuple[str, ...] = (),
                 model_name: str = "chatterbox", **options):
        """``options`` replace the ``serve`` options below, by name (``max_queue=64`` is ``--max-queue 64``);
        ``extra_args`` are appended as they are (flags such as ``--no-watermark``)."""
        self.model_dir, self.voices_dir, self.log_dir = model_dir, voices_dir, log_dir
        self.extra_args, self.model_name = tuple(extra_args), model_name
        self.options = {"max_queue": MAX_QUEUE, "max_new_tokens": MAX_NEW_TOKENS, "max_voice_mb": MAX_VOICE_MB,
                        "max_voice_seconds": MAX_VOICE_SECONDS, "max_convert_mb": MAX_CONVERT_MB,
                        "max_convert_seconds": MAX_CONVERT_SECONDS, "max_num_seqs": 16, "max_model_len": 1024,
                        "kv_cache_gib": 0.25, **options}
        self.process: subprocess.Popen | None = None
        self.health_statuses: list[tuple[int, str]] = []  # what /health said while starting
        # For each of those polls: whether the log held the "ready" line before it was sent.
        self.ready_logged_before_poll: list[bool] = []
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # The port is free when picked, but another process (another test worker's server in a
        # parallel run) may bind it before this server does: then it starts again on another port.
        for _ in range(PORT_TRIES):
            if self._start_on(free_port()):
                return
        raise RuntimeError(f"the server found no free port in {PORT_TRIES} tries:\n{self.log_tail()}")

    def _start_on(self, port: int) -> bool:
        """Ready on ``port`` (True), or stopped because that port was taken (False)."""
        self.port = port
        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.starts}.log"
        command = [sys.executable, "-m", "vllm_chatterbox.cli", "serve", "--model", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--api-key", API_KEY,
                   "--voices-dir", str(self.voices_dir)]
        for name, value in self.options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        command += self.extra_args
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.health_statuses, self.ready_logged_before_poll = [], []
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._port_taken():
                self.stop()
                return False
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            ready_logged = bool(self.ready_lines())
            try:
                response = httpx.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            self.health_statuses.append((response.status_code, response.json().get("status")))
            self.ready_logged_before_poll.append(ready_logged)
            if response.status_code == 200:
                return True
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"the server was not ready after {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def _port_taken(self) -> bool:
        """The CLI's check before it starts (exit 2), or uvicorn's bind after it (the race)."""
        log = self.log_path.read_text(errors="replace")
        return f"port {self.port} on 127.0.0.1 is in use" in log or "address already in use" in log

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

    def kill(self) -> None:
        """``kill -9``: the server gets no chance to stop anything."""
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def ready_lines(self) -> list[str]:
        return [line for line in self.log_lines() if "ready: http://" in line]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=kwargs.pop("timeout", 300), **kwargs)

    def metric(self, name: str) -> float:
        """The value of one unlabelled metric sample from /metrics."""
        text = httpx.get(f"{self.url}/metrics", headers=AUTH, timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def engine_processes(pid: int) -> list[psutil.Process]:
    """vLLM's engine processes under the server ``pid``."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def still_alive(processes: list[psutil.Process], seconds: float = 10) -> list[psutil.Process]:
    """Those of ``processes`` still running (not a zombie) after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        living = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    living.append(process)
            except psutil.NoSuchProcess:
                continue
        if not living or time.monotonic() > deadline:
            return living
        time.sleep(0.2)


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def reference_signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * noise).astype(
        np.float32)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def pcm_samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def assert_same_audio_up_to_rounding(ours: np.ndarray, expected: np.ndarray) -> None:
    """The same 16-bit audio made by another server process: S3Gen's float rounding may differ
    between a fresh process and a long-running one (seen once in CI: a few samples off by one step
    after a restart), which at most flips a rare sample by one step. Another voice, seed or text
    changes most samples by far more."""
    assert ours.shape == expected.shape
    off = np.abs(ours.astype(np.int32) - expected.astype(np.int32))
    assert off.max() <= 1 and np.count_nonzero(off) <= 0.01 * off.size, (off.max(), np.count_nonzero(off), off.size)


def speech(http: httpx.Client, text: str, **fields) -> httpx.Response:
    return http.post("/v1/audio/speech", json={"model": "chatterbox", "input": text, **fields})


def assert_openai_error(response: httpx.Response, status: int, param: str | None = "any") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if param != "any":
        assert error["param"] == param, error
    return error


def wait_for_lines(server: ServerProcess, predicate, count: int = 1, timeout: float = 30.0) -> list[str]:
    """The server's log lines that satisfy ``predicate``, once there are ``count`` (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log_lines() if predicate(line)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)
