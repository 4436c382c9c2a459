"""What clients written for OpenAI's speech API meet (issue 20): whole wav files with their real
length, `instructions` accepted and reported as ignored, `speed`, voice errors and the voices
API's fields."""

import json
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.server.helpers import API_KEY, assert_openai_error, pcm_samples, speech


def curl_speech(server, out, **fields) -> subprocess.CompletedProcess:
    body = json.dumps({"model": "chatterbox", "voice": "default", **fields})
    return subprocess.run(["curl", "--fail", "-sS", f"{server.url}/v1/audio/speech", "-H",
                           "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEY}", "-d", body,
                           "-o", str(out)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra", [{}, {"stream": False}], ids=["plain", "stream-false"])
def test_a_whole_wav_file_names_its_real_length(server, tmp_path, extra):
    """A plain wav request (curl -o, as the README's) or `"stream": false` gets the file once
    complete, its RIFF and data sizes the real ones (readers that trust the header, as sox and
    Python's wave do, see its true duration)."""
    out = tmp_path / "hello.wav"
    done = curl_speech(server, out, input="Hello from the server.", response_format="wav", seed=1, **extra)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    with wave.open(str(out)) as wav:
        frames, rate = wav.getnframes(), wav.getframerate()
    assert rate == 24000
    assert frames * 2 == len(data) - 44 > 0
    assert int.from_bytes(data[4:8], "little") == len(data) - 8


def test_a_wav_asked_as_a_stream_streams_with_unknown_sizes(server, tmp_path):
    """stream_format "audio" named: the wav leaves as it is made, with OpenAI's streaming sizes."""
    out = tmp_path / "streamed.wav"
    done = curl_speech(server, out, input="Hello from the server.", response_format="wav", seed=1,
                       stream_format="audio")
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0xFFFFFFFF and len(data) > 44


def test_instructions_are_accepted_and_reported_ignored(openai_client):
    response = openai_client.audio.speech.with_raw_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Hi.", instructions="Speak softly.", response_format="pcm",
        extra_body={"seed": 1, "max_new_tokens": 5, "n_timesteps": 2})
    assert response.http_response.status_code == 200
    assert response.headers["x-chatterbox-ignored"] == "instructions"
    assert len(response.content) > 0


def test_unknown_voice_is_a_400_naming_the_voice(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    error = raised.value.body
    assert (error["param"], error["type"], error["code"]) == ("voice", "invalid_request_error", "voice_not_found")
    assert "GET /v1/audio/voices" in error["message"]


def test_voices_carry_openais_type_and_openais_names_stay_builtin(http, reference_audio):
    listed = http.get("/v1/audio/voices").json()["data"]
    assert listed[0] | {"created_at": 0} == {"id": "default", "object": "audio.voice", "name": "default",
                                             "created_at": 0, "type": "builtin", "exaggeration": None, "builtin": True}
    for name in ("alloy", "shimmer"):
        refused = http.post("/v1/audio/voices", data={"name": name},
                            files={"file": ("ref.wav", reference_audio, "audio/wav")})
        error = assert_openai_error(refused, 400, "name")
        assert error["code"] == "reserved_voice_name" and "OpenAI's voice names" in error["message"]
    wrong_type = http.post("/v1/audio/voices", data={"name": "prompted", "type": "prompt"},
                           files={"file": ("ref.wav", reference_audio, "audio/wav")})
    assert_openai_error(wrong_type, 400, "type")


SPEED_TEXT = "Faster or slower, the same voice. A second sentence makes it longer."
SPEED_FIELDS = {"response_format": "pcm", "seed": 3, "n_timesteps": 2}


@pytest.fixture(scope="module")
def normal_speed_samples(server) -> int:
    with server.client() as http:
        response = speech(http, SPEED_TEXT, **SPEED_FIELDS)
    assert response.status_code == 200, response.text
    return pcm_samples(response.content).size


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("speed", [0.5, 1.25, 4.0])
def test_speed_changes_the_duration_by_one_over_speed(server, http, normal_speed_samples, speed, stream):
    """The same seeded speech at another speed lasts 1/speed as long (within 1 %), streamed or
    sent whole; pitch preservation is checked on a tone in test_speed.py."""
    response = speech(http, SPEED_TEXT, speed=speed, stream=stream, **SPEED_FIELDS)
    assert response.status_code == 200, response.text
    changed = pcm_samples(response.content)
    assert changed.size == pytest.approx(normal_speed_samples / speed, rel=0.01)
    assert np.abs(changed).max() > 100


def readme_server_curls() -> str:
    """The README's block that waits for the server and asks it for speech."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    return next(block for block in blocks if "curl --fail" in block and "/health" in block)


def test_the_readmes_curl_waits_for_readiness_and_saves_a_real_wav(server, tmp_path):
    script = readme_server_curls().replace("http://127.0.0.1:8000", server.url)
    script = script.replace("curl ", f'curl -H "Authorization: Bearer {API_KEY}" ')
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "hello.wav").read_bytes()
    with wave.open(str(tmp_path / "hello.wav")) as wav:
        assert wav.getnframes() * 2 == len(data) - 44 > 0
    # --fail: an error is reported (curl exits 22), not saved as the wav.
    refused = script.replace('"voice": "default"', '"voice": "nobody"').replace("hello.wav", "refused.wav")
    done = subprocess.run(["bash", "-e", "-c", refused], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 22 and "400" in done.stderr, (done.returncode, done.stderr)
    assert not (tmp_path / "refused.wav").exists()
