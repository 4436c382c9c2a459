"""The real server (``python -m vllm_chatterbox.cli serve``) in a subprocess on a free loopback
port, on the session's tiny random model, shared by all server tests."""

from pathlib import Path

import pytest

from tests.server.helpers import API_KEY, ServerProcess, reference_signal, wav_bytes


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir) -> Path:
    """The session's tiny random model (``tests/conftest.py``), so the Python side of a test can
    use the session engine ``tts_tiny`` on the same files."""
    return tiny_model_dir


@pytest.fixture(scope="package")
def server(model_dir, tmp_path_factory):
    """Stopped when the last server test has run (its 2-3.5 GB are free for the folders after)."""
    process = ServerProcess(model_dir, tmp_path_factory.mktemp("voices"), tmp_path_factory.mktemp("server-logs"))
    process.start()
    yield process
    process.stop()


TURBO_MODEL_NAME = "turbo-tts"


@pytest.fixture(scope="package")
def turbo_server(turbo_model_dir, tmp_path_factory):
    """A second server: the original's tiny Turbo checkpoint, served under another name, logging
    JSON (what an operator with a log pipeline runs) and unmarked (``--no-watermark``). Stopped with
    the folder, like ``server``."""
    process = ServerProcess(turbo_model_dir, tmp_path_factory.mktemp("turbo-voices"),
                            tmp_path_factory.mktemp("turbo-server-logs"),
                            extra_args=("--served-model-name", TURBO_MODEL_NAME, "--log-format", "json",
                                        "--no-watermark"),
                            model_name=TURBO_MODEL_NAME)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def http(server):
    with server.client() as client:
        yield client


@pytest.fixture(scope="package")
def openai_client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, timeout=300, max_retries=0)


@pytest.fixture(scope="session")
def reference_audio() -> bytes:
    """Three seconds of a voiced-sounding test signal as a 16 kHz wav file."""
    return wav_bytes(reference_signal(3.0, 16000), 16000)
