"""Streaming through the real server: the Python API's samples, first audio early, many
concurrent streams each equal to its solo run, and a client that leaves aborts its work."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.server.helpers import MAX_NEW_TOKENS, pcm_samples
from vllm_chatterbox.server.encoding import pcm16

SENTENCE = "The quick brown fox number {} jumps over the lazy dog near the quiet river bank. "


def long_text(sentences: int) -> str:
    """53 text tokens a sentence: two sentences fill one 150-token chunk (generate_long's cut)."""
    return "".join(SENTENCE.format(i) for i in range(sentences)).strip()


def stream_pcm(server, text: str, **fields) -> tuple[np.ndarray, list[float], float]:
    """(samples, arrival time of each body part, total seconds), timed from the request."""
    body = {"model": server.model_name, "input": text, "response_format": "pcm", "n_timesteps": 2, **fields}
    arrivals, parts = [], []
    with server.client() as http:
        started = time.perf_counter()
        with http.stream("POST", "/v1/audio/speech", json=body) as response:
            assert response.status_code == 200, response.read()
            for part in response.iter_raw():
                arrivals.append(time.perf_counter() - started)
                parts.append(part)
        total = time.perf_counter() - started
    return pcm_samples(b"".join(parts)), arrivals, total


@pytest.fixture(scope="module")
def python_api(tts_tiny):
    """The Python API on the same model files, in this process (the session engine)."""
    return tts_tiny


def test_same_seed_same_samples_as_the_python_api(server, python_api):
    """A three-chunk text: the server's stream equals ``ChatterboxTTS.stream`` with the same seed,
    both watermarked (the default), to a 16-bit step or two. The server process and this one
    round S3Gen's floats differently (e.g. other thread counts, other batches: unmarked, 10 of
    39360 samples one step apart), and the Perth mark amplifies such differences 50-200 times
    (tests/pipeline/test_watermark.py): measured up to 656 of 39360 samples one step apart with
    0.25 s of first look-ahead in the stream marker, 1991 (5.1 %) with 0.1 s; never more than one
    step."""
    text = long_text(6)
    samples, _, _ = stream_pcm(server, text, seed=5, max_new_tokens=12)
    wav = np.concatenate(list(python_api.stream(text, seed=5, max_new_tokens=12, n_timesteps=2)))
    expected = np.frombuffer(pcm16(wav), dtype="<i2")
    assert expected.size > 3 * 24000 * 0.1  # three chunks of speech
    assert samples.size == expected.size
    difference = np.abs(samples.astype(np.int32) - expected.astype(np.int32))
    assert difference.max() <= 2 and np.count_nonzero(difference) < 0.1 * samples.size, difference.max()


def test_first_audio_arrives_well_before_the_last(server):
    samples, arrivals, total = stream_pcm(server, long_text(6), seed=2, max_new_tokens=40)
    assert samples.size > 0
    assert len(arrivals) >= 3
    # Three chunks of 40 tokens: the first audio leaves after the first chunk's first 15 tokens,
    # the last after all 120 (with 10 tokens a chunk, an idle machine finished the whole text in
    # 0.46 s and the first audio, after the whole first chunk, came at half of that).
    assert arrivals[0] < 0.5 * arrivals[-1], (arrivals[0], arrivals[-1], total)


def test_sixteen_concurrent_streams_each_equal_their_solo_run(server):
    texts = [f"Client number {i} asks for a short sentence." for i in range(16)]
    solo = [stream_pcm(server, text, seed=100 + i, max_new_tokens=8)[0] for i, text in enumerate(texts)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(stream_pcm, server, text, seed=100 + i, max_new_tokens=8)
                   for i, text in enumerate(texts)]
        together = [future.result()[0] for future in futures]
    for i, (alone, concurrent) in enumerate(zip(solo, together)):
        assert alone.size > 0 and concurrent.size == alone.size, i
        # S3Gen vocodes the concurrent streams in shared batches: float rounding, amplified by
        # the watermark, may move a sample by a 16-bit step (measured: 0-10 of 7680 samples per
        # stream, one step), never by more than two.
        difference = np.abs(concurrent.astype(np.int32) - alone.astype(np.int32)).max()
        assert difference <= 2, (i, difference)
    # Different seeds and texts really are different audio.
    assert not np.array_equal(solo[0][:1000], solo[1][:1000])


def test_disconnect_mid_stream_aborts_the_request(server):
    """An eight-chunk text; the client leaves after the first audio. Its vLLM requests are
    aborted (none left unfinished) and the chunks after the ones in flight never reach vLLM."""
    chunks = 8
    text = long_text(2 * chunks)
    aborted_before = server.metric("chatterbox_speech_requests_aborted_total")
    submitted_before = server.metric("chatterbox_t3_requests_submitted")
    tokens_before = server.metric("chatterbox_t3_tokens_total")
    with server.client() as http:
        with http.stream("POST", "/v1/audio/speech", json={"input": text, "response_format": "pcm",
                                                           "seed": 3, "n_timesteps": 2}) as response:
            assert response.status_code == 200
            next(response.iter_raw())  # the first audio; then the client goes away
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (server.metric("chatterbox_speech_requests_in_flight") > 0
                                           or server.metric("chatterbox_t3_requests_unfinished") > 0):
        time.sleep(0.25)
    assert server.metric("chatterbox_speech_requests_in_flight") == 0
    assert server.metric("chatterbox_t3_requests_unfinished") == 0
    assert server.metric("chatterbox_speech_requests_aborted_total") == aborted_before + 1
    time.sleep(2)
    submitted = server.metric("chatterbox_t3_requests_submitted") - submitted_before
    vocoded = server.metric("chatterbox_t3_tokens_total") - tokens_before
    assert 1 <= submitted <= 3 < chunks, submitted  # the chunk playing, the next, at most one more
    assert vocoded <= 3 * MAX_NEW_TOKENS < chunks * MAX_NEW_TOKENS, vocoded
    # The server keeps serving.
    samples, _, _ = stream_pcm(server, "Still here.", seed=1, max_new_tokens=10)
    assert samples.size > 0


def test_a_turbo_server_streams_audio_and_sse_like_the_python_api(turbo_server, turbo_tts):
    """The Turbo server (the original's tiny Turbo checkpoint), the one server started with
    ``--no-watermark``: its pcm stream and its SSE events equal ``ChatterboxTTS.stream(...,
    watermark=False)`` on the same files and seed, to one 16-bit step (the session Turbo engine of
    ``tests/conftest.py`` is the Python side), and its audio responses say
    ``X-Chatterbox-Watermark: none``."""
    import base64
    import json

    text = "Oh [sigh] the cable was loose again, so I fixed it and the lights came back on."
    fields = dict(seed=7, max_new_tokens=30)
    expected = np.frombuffer(pcm16(np.concatenate(list(turbo_tts.stream(text, watermark=False, **fields)))),
                             dtype="<i2")
    marked = np.frombuffer(pcm16(np.concatenate(list(turbo_tts.stream(text, **fields)))), dtype="<i2")
    samples, _, _ = stream_pcm(turbo_server, text, **fields)
    body = {"model": turbo_server.model_name, "input": text, "response_format": "pcm", "stream_format": "sse",
            **fields}
    with turbo_server.client() as http, http.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-chatterbox-watermark"] == "none"
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
    assert expected.size > 0 and samples.size == expected.size
    assert np.abs(samples.astype(np.int32) - expected.astype(np.int32)).max() <= 1
    n = min(samples.size, marked.size)
    assert np.abs(samples[:n].astype(np.int32) - marked[:n].astype(np.int32)).max() > 2  # the mark is not there
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    sse = pcm_samples(b"".join(base64.b64decode(event["audio"]) for event in deltas))
    np.testing.assert_array_equal(sse, samples)
