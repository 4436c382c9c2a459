"""Bad input, auth and overload: the right 4xx in OpenAI's error schema, and the server stays up."""

import threading

import httpx
import pytest

from tests.server.helpers import AUTH, MAX_NEW_TOKENS, MAX_QUEUE, assert_openai_error, speech

BAD_SPEECH_REQUESTS = [
    ({"input": ""}, 400, "input"),
    ({"input": "   "}, 400, "input"),
    ({"input": "x" * 4097}, 400, "input"),
    ({}, 400, "input"),
    ({"input": "Hi.", "voice": "nobody"}, 400, "voice"),  # OpenAI answers an unknown voice with 400
    ({"input": "Hi.", "voice": {"id": "nobody"}}, 400, "voice"),
    ({"input": "Hi.", "voice": "../conds"}, 400, "voice"),
    ({"input": "Hi.", "voice": "a/b"}, 400, "voice"),
    ({"input": "Hi.", "voice": ".."}, 400, "voice"),
    ({"input": "Hi.", "voice": "/etc/passwd"}, 400, "voice"),
    ({"input": "Hi.", "response_format": "ogg"}, 400, "response_format"),
    ({"input": "Hi.", "stream_format": "chunks"}, 400, "stream_format"),
    ({"input": "Hi.", "model": "whisper-1"}, 404, "model"),
    ({"input": "Hi.", "speed": 0.2}, 400, "speed"),
    ({"input": "Hi.", "speed": 9.0}, 400, "speed"),
    ({"input": "Hi.", "temperature": 5}, 400, "temperature"),
    ({"input": "Hi.", "top_p": 0}, 400, "top_p"),
    ({"input": "Hi.", "min_p": -0.1}, 400, "min_p"),
    ({"input": "Hi.", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"input": "Hi.", "exaggeration": 3}, 400, "exaggeration"),
    ({"input": "Hi.", "cfg_weight": -1}, 400, "cfg_weight"),
    ({"input": "Hi.", "exaggeration": "loud"}, 400, "exaggeration"),
    ({"input": "Hi.", "seed": -1}, 400, "seed"),
    ({"input": "Hi.", "seed": 1.5}, 400, "seed"),
    ({"input": "Hi.", "max_new_tokens": 0}, 400, "max_new_tokens"),
    ({"input": "Hi.", "max_new_tokens": MAX_NEW_TOKENS + 1}, 400, "max_new_tokens"),
    ({"input": "Hi.", "n_timesteps": 0}, 400, "n_timesteps"),
    ({"input": "Hi.", "language": "xx"}, 400, "language"),
    ({"input": "Hi.", "language": "es"}, 400, "language"),  # the English model speaks only en
    ({"input": "Hi.", "unknown_field": 1}, 400, "unknown_field"),
    ({"input": 42}, 400, "input"),
]


@pytest.mark.parametrize("body, status, param", BAD_SPEECH_REQUESTS, ids=lambda v: repr(v)[:40])
def test_bad_speech_request(http, body, status, param):
    assert_openai_error(http.post("/v1/audio/speech", json=body), status, param)


@pytest.mark.parametrize("raw", [b"{", b"[]", b"not json", b'{"input": "Hi."', b"\xff\xfe"])
def test_malformed_json(http, raw):
    response = http.post("/v1/audio/speech", content=raw, headers={"Content-Type": "application/json"})
    assert_openai_error(response, 400)


def test_oversized_json_body(http):
    response = http.post("/v1/audio/speech", content=b'{"input": "' + b"x" * (2 << 20) + b'"}',
                         headers={"Content-Type": "application/json"})
    assert_openai_error(response, 413)


def test_unknown_route_and_method(http):
    assert_openai_error(http.get("/v1/nothing"), 404)
    assert_openai_error(http.get("/v1/audio/speech"), 405)


def test_api_key_guards_every_route_but_health(server):
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/audio/voices"), ("GET", "/metrics"),
                         ("POST", "/v1/audio/speech"), ("GET", "/openapi.json"), ("DELETE", "/v1/audio/voices/x"),
                         ("POST", "/v1/speech-to-speech/default"), ("POST", "/v1/speech-to-speech/default/stream"),
                         ("POST", "/v1/audio/watermark/detect")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-key"}):
            response = httpx.request(method, server.url + path, headers=headers, json={"input": "Hi."})
            error = assert_openai_error(response, 401)
            assert error["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/v1/models", headers=AUTH).status_code == 200


def test_health_said_loading_until_the_engine_was_ready(server):
    assert server.health_statuses[0] == (503, "loading")
    assert server.health_statuses[-1] == (200, "ok")


def test_metrics_in_prometheus_format(server, http):
    assert speech(http, "A metered sentence.", response_format="pcm", max_new_tokens=5, n_timesteps=2).status_code == 200
    text = http.get("/metrics").text
    for name in ("chatterbox_requests_total", "chatterbox_time_to_first_audio_seconds_bucket",
                 "chatterbox_audio_seconds_total", "chatterbox_queue_depth", "chatterbox_t3_tokens_total",
                 "chatterbox_t3_tokens_per_second", "chatterbox_s3gen_batch_size_bucket",
                 "chatterbox_speech_requests_in_flight", "chatterbox_engine_ready",
                 "chatterbox_t3_requests_unfinished", "chatterbox_t3_requests_submitted"):
        assert f"\n{name}" in text, name
    assert 'chatterbox_requests_total{route="/v1/audio/speech",status="200"}' in text
    assert server.metric("chatterbox_audio_seconds_total") > 0
    assert server.metric("chatterbox_engine_ready") == 1


def test_full_queue_answers_429_with_retry_after(server):
    """MAX_QUEUE + 4 requests at once: the extra ones are refused at once, the rest are served."""
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=300) as http:
            response = speech(http, f"Request {i}.", response_format="pcm", max_new_tokens=4, seed=i, n_timesteps=2)
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
        assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
        assert int(response.headers["retry-after"]) >= 1
    assert server.metric("chatterbox_speech_requests_rejected_total") >= len(refused)
    assert httpx.get(server.url + "/health").status_code == 200


def test_server_survived(server):
    assert server.is_running()
    assert httpx.get(server.url + "/health").status_code == 200


LONG_NAME = "v" * 5000
UNHELPFUL = ("Input should be a valid dictionary", "object at 0x", "(and ", "voice.str", LONG_NAME[:200])
# (request as keyword arguments of httpx's post, param, what the message must say to send instead)
MISLEADING_REQUESTS = [
    ("/v1/audio/speech", {"json": {"input": "Hi.", "voice": LONG_NAME}}, "voice", "1-64 characters"),
    ("/v1/audio/voices", {"data": {"name": LONG_NAME}, "files": {"file": ("r.wav", b"RIFF", "audio/wav")}}, "name",
     "1-64 characters"),
    ("/v1/audio/voices", {"data": {"name": "junk"}, "files": {"file": ("r.wav", b"not audio" * 50, "audio/wav")}},
     "file", "give wav, flac, ogg or mp3"),
    ("/v1/audio/voices", {"json": {"name": "narrator", "file": "ref.wav"}}, None, "send multipart/form-data"),
    ("/v1/audio/voices", {"data": {"exaggeration": "0.5"}, "files": {"file": ("r.wav", b"RIFF", "audio/wav")}},
     "name", "send multipart/form-data with a 'name' field"),
    ("/v1/audio/speech", {"content": b"Hello there.", "headers": {"Content-Type": "text/plain"}}, None,
     "Content-Type: application/json"),
    ("/v1/audio/speech", {"json": ["Hello there."]}, None, 'send a JSON object with Content-Type: application/json'),
    ("/v1/audio/speech", {"json": {"input": "Hi.", "voice": {"name": "narrator"}}}, "voice", '{"id": "<name>"}'),
    ("/v1/audio/speech", {"json": {"input": "Hi.", "voice": 7}}, "voice", "a voice name"),
]


@pytest.mark.parametrize("path, request_kwargs, param, hint", MISLEADING_REQUESTS, ids=lambda v: repr(v)[:30])
def test_errors_say_what_to_send_instead(http, path, request_kwargs, param, hint):
    response = http.post(path, **request_kwargs)
    error = assert_openai_error(response, 400, param)
    assert hint in error["message"], error
    assert not any(text in error["message"] for text in UNHELPFUL), error
    assert len(error["message"]) < 400, error
