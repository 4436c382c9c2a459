"""The Perth watermark through the real server: all its audio is marked by default (one-shot
files, audio streams, SSE) and says so in a header, and ``/v1/audio/watermark/detect`` tells
marked from unmarked uploads, also after the server's lossy encoders. (A server started with
``--no-watermark``: the Turbo server test in test_streaming.py.)

Confidences through this endpoint, 2026-12-05, tiny random model (the verdict is the original's
0.5, never tuned): the server's speech (three texts) wav/flac/opus 1.0000, mp3 0.9999-1.0000, aac
0.9997-1.0000; its voice conversions of the two espeak-ng clips (one-shot and stream) 1.0000 in
every format; the unmarked clips as wav/flac 0.0002-0.0158, through the server's mp3 encoder
0.0000-0.0002, opus 0.0042-0.0147, aac 0.0000-0.0266.
"""

import base64
import io
import json

import numpy as np
import pytest
import soundfile

from tests.paths import FIXTURE_AUDIO
from tests.server.helpers import MAX_CONVERT_MB, MAX_CONVERT_SECONDS, assert_openai_error, pcm_samples, speech
from vllm_chatterbox.watermark import detect, detect_file

TEXT = "The quick brown fox jumps over the lazy dog. A second sentence follows it closely."
UNMARKED = (FIXTURE_AUDIO / "voice2_24k.wav").read_bytes()  # espeak-ng speech, never marked


def post_detect(http, data: bytes, *, raw: bool = False):
    if raw:
        return http.post("/v1/audio/watermark/detect", content=data, headers={"Content-Type": "audio/wav"})
    return http.post("/v1/audio/watermark/detect", files={"file": ("audio", data, "application/octet-stream")})


@pytest.fixture(scope="module")
def marked_wav(server) -> bytes:
    with server.client() as http:
        response = speech(http, TEXT, response_format="wav", seed=3, n_timesteps=2)
    assert response.status_code == 200, response.text
    assert response.headers["x-chatterbox-watermark"] == "perth"
    return response.content


def test_one_shot_speech_is_marked(marked_wav):
    assert detect_file(marked_wav).marked


def test_streamed_speech_is_marked(server):
    """A two-chunk text streamed as pcm and as SSE: the joined stream carries the mark."""
    with server.client() as http:
        with http.stream("POST", "/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "seed": 4,
                                                           "n_timesteps": 2, "max_new_tokens": 30}) as response:
            assert response.headers["x-chatterbox-watermark"] == "perth"
            samples = pcm_samples(b"".join(response.iter_raw()))
        sse = http.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "stream_format": "sse",
                                                  "seed": 4, "n_timesteps": 2, "max_new_tokens": 30})
    assert sse.headers["x-chatterbox-watermark"] == "perth"
    events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    sse_samples = pcm_samples(b"".join(base64.b64decode(e["audio"]) for e in events if "audio" in e))
    for audio in (samples, sse_samples):
        assert audio.size > 24000
        assert detect(audio.astype(np.float32) / 32768, 24000) > 0.5


def test_detect_endpoint_marked_and_unmarked(http, marked_wav):
    marked = post_detect(http, marked_wav)
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert body["marked"] is True and body["confidence"] > 0.5 and body["sample_rate"] == 24000
    assert body["seconds"] == pytest.approx(soundfile.info(io.BytesIO(marked_wav)).duration)
    assert body["confidence"] == pytest.approx(detect_file(marked_wav).confidence, abs=1e-6)
    unmarked = post_detect(http, UNMARKED).json()
    assert unmarked["marked"] is False and unmarked["confidence"] < 0.5
    # The file may also be the raw request body.
    assert post_detect(http, UNMARKED, raw=True).json() == unmarked


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac"])
def test_detect_endpoint_on_the_servers_encoded_speech(http, response_format):
    response = speech(http, TEXT, response_format=response_format, seed=5, n_timesteps=2)
    assert response.status_code == 200
    result = post_detect(http, response.content).json()
    assert result["marked"] is True, result


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac"])
def test_detect_endpoint_on_unmarked_speech_in_the_servers_formats(http, response_format):
    from vllm_chatterbox.server.encoding import AudioEncoder

    samples, _ = soundfile.read(io.BytesIO(UNMARKED), dtype="float32")
    encoder = AudioEncoder(response_format)
    result = post_detect(http, encoder.encode(samples) + encoder.finish()).json()
    assert result["marked"] is False, result


def test_detect_endpoint_bad_uploads(http):
    error = assert_openai_error(post_detect(http, b"this is not audio"), 400, "file")
    assert "not a readable audio file" in error["message"]
    assert_openai_error(http.post("/v1/audio/watermark/detect"), 400, "file")
    assert_openai_error(http.post("/v1/audio/watermark/detect", data={"other": "1"}), 400, "file")
    rate = 8000
    too_long = io.BytesIO()
    soundfile.write(too_long, np.zeros(int((MAX_CONVERT_SECONDS + 1) * rate), np.float32), rate, format="WAV",
                    subtype="PCM_16")
    error = assert_openai_error(post_detect(http, too_long.getvalue()), 400, "file")
    assert f"{MAX_CONVERT_SECONDS:.1f} s" in error["message"]
    too_big = b"RIFF" + b"\0" * int(MAX_CONVERT_MB * (1 << 20))
    assert_openai_error(post_detect(http, too_big), 413, "file")
    assert_openai_error(post_detect(http, b"\0" * int(2 * MAX_CONVERT_MB * (1 << 20))), 413)
