"""The official ``openai`` SDK against the real server."""

import base64
import io
import json

import av
import numpy as np
import pytest
import soundfile

from tests.server.helpers import pcm_samples
from vllm_chatterbox.server.encoding import RESPONSE_FORMATS

TEXT = "Hello from the server test."
EXTRA = {"seed": 11, "max_new_tokens": 25, "n_timesteps": 2}  # 2 flow steps: cheap S3Gen


@pytest.fixture(scope="module")
def reference_pcm(openai_client) -> np.ndarray:
    data = openai_client.audio.speech.create(model="chatterbox", voice="default", input=TEXT, response_format="pcm",
                                             extra_body=EXTRA).read()
    samples = pcm_samples(data)
    assert samples.size > 0 and np.abs(samples).max() > 100
    return samples


def decode(data: bytes, response_format: str) -> tuple[np.ndarray, int]:
    if response_format == "pcm":
        return pcm_samples(data), 24000
    if response_format in ("wav", "flac"):
        samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
        return samples, rate
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].sample_rate
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    return samples, rate


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_every_response_format(openai_client, reference_pcm, response_format):
    response = openai_client.audio.speech.create(model="chatterbox", voice="default", input=TEXT,
                                                 response_format=response_format, extra_body=EXTRA)
    samples, rate = decode(response.read(), response_format)
    assert rate == (48000 if response_format == "opus" else 24000)  # Opus always decodes at 48 kHz
    if response_format in ("pcm", "wav", "flac"):
        # Lossless: the same 16-bit samples as pcm (same seed).
        np.testing.assert_array_equal(samples, reference_pcm)
    else:
        assert abs(samples.size / rate - reference_pcm.size / 24000) < 0.1
        rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
        reference_rms = np.sqrt(np.mean((reference_pcm / 32768) ** 2))
        assert 0.5 < rms / reference_rms < 2


def test_openai_model_alias_and_voice_name(openai_client, reference_pcm):
    """Clients that hard-code OpenAI's model and voice names get the served model's built-in voice."""
    data = openai_client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm",
                                             extra_body=EXTRA).read()
    np.testing.assert_array_equal(pcm_samples(data), reference_pcm)


def test_streaming_response(openai_client, reference_pcm):
    with openai_client.audio.speech.with_streaming_response.create(
            model="chatterbox", voice="default", input=TEXT, response_format="pcm", extra_body=EXTRA) as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        parts = list(response.iter_bytes())
    np.testing.assert_array_equal(pcm_samples(b"".join(parts)), reference_pcm)


def test_sse_events(openai_client, reference_pcm):
    with openai_client.audio.speech.with_streaming_response.create(
            model="chatterbox", voice="default", input=TEXT, response_format="pcm", stream_format="sse",
            extra_body=EXTRA) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    events = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    assert [line for line in lines if line and not line.startswith("data: ")] == []
    deltas, done = events[:-1], events[-1]
    assert deltas and all(event["type"] == "speech.audio.delta" for event in deltas)
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    np.testing.assert_array_equal(pcm_samples(audio), reference_pcm)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] == int(np.ceil(reference_pcm.size * 25 / 24000))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_models_list(openai_client):
    models = openai_client.models.list()
    assert [model.id for model in models.data] == ["chatterbox"]
    assert openai_client.models.retrieve("chatterbox").id == "chatterbox"
