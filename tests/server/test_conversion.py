"""Voice conversion through the real server (``/v1/speech-to-speech/{voice_id}`` and ``/stream``):
the library's audio, every response format, voices by name or upload, the limits, admission and
a client that leaves."""

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile

from tests.paths import FIXTURE_AUDIO
from tests.server.helpers import (AUTH, MAX_CONVERT_MB, MAX_CONVERT_SECONDS, MAX_QUEUE, assert_openai_error,
                                  pcm_samples, reference_signal, wav_bytes)
from vllm_chatterbox.server.encoding import pcm16

SOURCE = (FIXTURE_AUDIO / "voice2_24k.wav").read_bytes()  # 4.4 s of espeak-ng speech at 24 kHz
REFERENCE = (FIXTURE_AUDIO / "builtin_voice_src_24k.wav").read_bytes()


def long_source(seconds: float) -> bytes:
    """Speech clips with 0.5 s pauses, repeated to ``seconds``, as a 16 kHz wav."""
    speech, rate = soundfile.read(io.BytesIO(SOURCE), dtype="float32")
    pause = np.zeros(rate // 2, np.float32)
    clip = np.concatenate([speech, pause])
    wav = np.tile(clip, int(np.ceil(seconds * rate / clip.size)))[:int(seconds * rate)]
    buffer = io.BytesIO()
    soundfile.write(buffer, wav[::3], rate // 3, format="WAV", subtype="PCM_16")  # 24 -> 8 kHz keeps it small
    return buffer.getvalue()


def convert(http: httpx.Client, voice_id: str = "default", source: bytes = SOURCE, *, stream: bool = False,
            voice_file: bytes | None = None, **fields) -> httpx.Response:
    files = {"audio": ("source.wav", source, "audio/wav")}
    if voice_file is not None:
        files["voice_file"] = ("reference.wav", voice_file, "audio/wav")
    path = f"/v1/speech-to-speech/{voice_id}" + ("/stream" if stream else "")
    return http.post(path, files=files, data={key: str(value) for key, value in fields.items()})


@pytest.fixture(scope="module")
def converter(model_dir):
    """The library's converter on the server's model files, in this process (S3Gen only)."""
    from vllm_chatterbox.conversion import VoiceConverter

    return VoiceConverter.from_dir(model_dir)


def as_pcm(wav: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm16(wav), dtype="<i2")


def assert_close_pcm(served: np.ndarray, expected: np.ndarray) -> None:
    """Equal to the library's audio but for float rounding the watermark amplifies (see
    tests/server/test_streaming.py): at most two 16-bit steps, in under 10 % of the samples."""
    assert expected.size > 0 and served.size == expected.size, (served.size, expected.size)
    difference = np.abs(served.astype(np.int32) - expected.astype(np.int32))
    assert difference.max() <= 2 and np.count_nonzero(difference) < 0.1 * served.size, difference.max()


def test_one_shot_equals_the_library(http, converter):
    response = convert(http, response_format="pcm", seed=4, n_timesteps=2)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/pcm"
    assert response.headers["x-chatterbox-watermark"] == "perth"
    expected = converter.convert(SOURCE, seed=4, n_timesteps=2, progress=False)  # marked, as the server
    assert_close_pcm(pcm_samples(response.content), as_pcm(expected))


def test_stream_equals_the_library_stream(server, converter):
    """The stream is marked as it goes, as ``convert_stream`` marks it; two pieces here."""
    source = long_source(8.0)
    fields = {"response_format": "pcm", "seed": 6, "n_timesteps": 2, "max_piece_seconds": 5}
    with server.client() as http, http.stream(
            "POST", "/v1/speech-to-speech/default/stream", files={"audio": ("s.wav", source, "audio/wav")},
            data={k: str(v) for k, v in fields.items()}) as response:
        assert response.status_code == 200
        assert response.headers["x-chatterbox-watermark"] == "perth"
        parts = list(response.iter_raw())
    expected = np.concatenate(list(converter.convert_stream(source, seed=6, n_timesteps=2, max_piece_seconds=5)))
    assert_close_pcm(pcm_samples(b"".join(parts)), as_pcm(expected))


def test_stream_as_sse_events(http):
    response = convert(http, stream=True, response_format="pcm", stream_format="sse", seed=2, n_timesteps=2)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-chatterbox-watermark"] == "perth"
    events = [json.loads(line[len("data: "):]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = pcm_samples(b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"))
    # usage: the source's S3 tokens in, the audio's 25 per second out
    source_seconds = soundfile.info(io.BytesIO(SOURCE)).duration
    assert events[-1]["usage"]["input_tokens"] == int(np.ceil(source_seconds * 25))
    audio_stream = pcm_samples(convert(http, stream=True, response_format="pcm", seed=2, n_timesteps=2).content)
    # Two runs of the same seeded stream: equal but for S3Gen's float rounding, which the mark
    # amplifies (measured: 29 of 105600 samples one step apart).
    assert audio.size == audio_stream.size
    assert np.abs(audio.astype(np.int32) - audio_stream.astype(np.int32)).max() <= 2


@pytest.mark.parametrize("response_format", ["wav", "flac", "mp3", "opus", "aac"])
def test_every_response_format_decodes(http, response_format):
    from vllm_chatterbox.watermark.files import read_audio_file

    response = convert(http, response_format=response_format, seed=1, n_timesteps=2)
    assert response.status_code == 200, response.text
    samples, rate = read_audio_file(response.content)
    source_seconds = soundfile.info(io.BytesIO(SOURCE)).duration
    assert abs(samples.size / rate - source_seconds) < 0.15, (samples.size / rate, source_seconds)
    if response_format == "wav":  # a whole file names its length (a streamed one cannot)
        assert soundfile.info(io.BytesIO(response.content)).frames == samples.size


def test_voices_by_name_and_by_upload(http, converter):
    fields = {"response_format": "pcm", "seed": 9, "n_timesteps": 2}
    builtin = pcm_samples(convert(http, "default", **fields).content)
    # OpenAI's names mean the built-in voice unless a voice of that name is stored.
    np.testing.assert_array_equal(pcm_samples(convert(http, "alloy", **fields).content), builtin)
    uploaded = convert(http, "anything", voice_file=REFERENCE, **fields)
    assert uploaded.status_code == 200, uploaded.text
    expected = converter.convert(SOURCE, converter.voice_from_audio(REFERENCE), seed=9, n_timesteps=2,
                                 progress=False)
    assert_close_pcm(pcm_samples(uploaded.content), as_pcm(expected))
    created = http.post("/v1/audio/voices", data={"name": "vc-target"},
                        files={"file": ("r.wav", REFERENCE, "audio/wav")})
    assert created.status_code == 201, created.text
    try:
        stored = pcm_samples(convert(http, "vc-target", **fields).content)
    finally:
        http.delete("/v1/audio/voices/vc-target")
    assert_close_pcm(stored, as_pcm(expected))
    assert not np.array_equal(stored[:2000], builtin[:2000])


BAD_CONVERSIONS = [
    (dict(source=b"not audio at all"), 400, "audio"),
    (dict(source=wav_bytes(np.zeros(16000, np.float32), 16000)), 400, "audio"),  # silent
    (dict(source=wav_bytes(reference_signal(0.05, 16000), 16000)), 400, "audio"),  # too short
    (dict(voice_id="nobody"), 400, "voice_id"),  # as the speech endpoint answers an unknown voice
    (dict(voice_id="a..b"), 400, "voice_id"),
    (dict(voice_file=b"garbage"), 400, "voice_file"),
    (dict(seed=-1), 400, "seed"),
    (dict(seed="x"), 400, "seed"),
    (dict(n_timesteps=0), 400, "n_timesteps"),
    (dict(max_piece_seconds=31), 400, "max_piece_seconds"),
    (dict(max_piece_seconds=2), 400, "max_piece_seconds"),
    (dict(response_format="ogg"), 400, "response_format"),
    (dict(stream=True, stream_format="chunks"), 400, "stream_format"),
]


@pytest.mark.parametrize("arguments, status, param", BAD_CONVERSIONS, ids=lambda v: repr(v)[:40])
def test_bad_conversion_requests(http, arguments, status, param):
    assert_openai_error(convert(http, **arguments), status, param)


def test_missing_source(http):
    response = http.post("/v1/speech-to-speech/default", data={"response_format": "wav"})
    assert_openai_error(response, 400, "audio")


def test_limits(http):
    too_long = long_source(MAX_CONVERT_SECONDS + 1)
    error = assert_openai_error(convert(http, source=too_long), 400, "audio")
    assert "too long" in error["message"]
    # At the limit it is accepted (a silent tail is fine): checked by the disconnect test below.
    too_big = wav_bytes(reference_signal(MAX_CONVERT_MB * (1 << 20) / 2 / 16000 + 1, 16000), 16000)
    error = assert_openai_error(convert(http, source=too_big), 413, "audio")
    assert "--max-convert-mb" in error["message"]
    huge = b"\0" * int(3 * MAX_CONVERT_MB * (1 << 20))  # over the body limit: refused before it is read
    assert_openai_error(convert(http, source=huge), 413)


def test_a_client_that_leaves_stops_the_conversion(server):
    """A source of six 5 s pieces; the client leaves after the first audio. The slot is released,
    the request counted as aborted, and the worker converts at most the piece in flight and the
    one queued after it (the pieces converted are counted in /metrics)."""
    source = long_source(MAX_CONVERT_SECONDS - 0.5)
    pieces_before = server.metric("chatterbox_conversion_pieces_total")
    aborted_before = server.metric("chatterbox_speech_requests_aborted_total")
    with server.client() as http, http.stream(
            "POST", "/v1/speech-to-speech/default/stream", files={"audio": ("s.wav", source, "audio/wav")},
            data={"response_format": "pcm", "n_timesteps": "2", "max_piece_seconds": "5"}) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.metric("chatterbox_speech_requests_in_flight") > 0:
        time.sleep(0.25)
    assert server.metric("chatterbox_speech_requests_in_flight") == 0
    assert server.metric("chatterbox_speech_requests_aborted_total") == aborted_before + 1
    time.sleep(3)  # a piece still converting finishes; nothing after it starts
    converted = server.metric("chatterbox_conversion_pieces_total") - pieces_before
    assert 1 <= converted <= 3 < 6, converted


def test_full_queue_answers_429(server):
    """MAX_QUEUE + 4 conversions of 20 s sources (four pieces each) at once: the extra ones are
    refused at once, the rest are served."""
    source = long_source(20.0)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=300) as http:
            response = convert(http, source=source, response_format="pcm", seed=i, n_timesteps=2,
                               max_piece_seconds=5)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(MAX_QUEUE + 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r in results if r.status_code == 429]
    assert len(refused) >= 4, [r.status_code for r in results]
    assert all(r.status_code in (200, 429) for r in results)
    for response in refused:
        error = assert_openai_error(response, 429)
        assert error["code"] == "queue_full" and int(response.headers["retry-after"]) >= 1
