"""What clients written for OpenAI's speech API meet (issue 20): whole wav files with their real
length, `instructions` accepted and reported as ignored, `speed`, voice errors and the voices
API's fields."""

import json
import subprocess
import wave

import pytest

from tests.server.helpers import API_KEY


def curl_speech(server, out, **fields) -> subprocess.CompletedProcess:
    body = json.dumps({"model": "chatterbox", "voice": "default", **fields})
    return subprocess.run(["curl", "--fail", "-sS", f"{server.url}/v1/audio/speech", "-H",
                           "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEY}", "-d", body,
                           "-o", str(out)], capture_output=True, text=True, timeout=300)


def test_a_whole_wav_file_names_its_real_length(server, tmp_path):
    """`"stream": false` sends the file once complete, its RIFF and data sizes the real ones
    (readers that trust the header, as sox and Python's wave do, see its true duration)."""
    out = tmp_path / "hello.wav"
    done = curl_speech(server, out, input="Hello from the server.", response_format="wav", stream=False, seed=1)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    with wave.open(str(out)) as wav:
        frames, rate = wav.getnframes(), wav.getframerate()
    assert rate == 24000
    assert frames * 2 == len(data) - 44 > 0
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
