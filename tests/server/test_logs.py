"""The server's own output, read from its subprocess as an operator reads it: one "ready" line
once /health says ok, one access line per request (uvicorn-style text, or JSON objects with
``--log-format json``)."""

import json
import re

import httpx

from tests.server.helpers import AUTH, wait_for_lines

ACCESS_TEXT = re.compile(r'^(INFO|WARNING|ERROR): +127\.0\.0\.1:\d+ - "(\w+) (\S+)" (\d{3}) (.*)$')


def access_fields(line: str) -> dict:
    """An access line's fields: method, route, status and its key=value pairs."""
    match = ACCESS_TEXT.match(line)
    assert match, line
    fields = dict(pair.split("=", 1) for pair in match.group(5).split())
    return {"level": match.group(1), "method": match.group(2), "route": match.group(3), "status": match.group(4),
            **fields}


def test_the_ready_line_comes_once_health_says_ok(server):
    """The server logs one "ready" line, with its URL, and only once /health answers ok: every
    /health poll sent after the line appeared was answered 200."""
    ready = wait_for_lines(server, lambda line: "ready: http://" in line)
    assert len(ready) == 1, ready
    assert f"ready: {server.url} serves chatterbox" in ready[0] and ready[0].startswith("INFO:")
    polls = list(zip(server.health_statuses, server.ready_logged_before_poll))
    assert polls[0] == ((503, "loading"), False)
    assert all(status == (200, "ok") for status, logged in polls if logged), polls


def test_one_access_line_per_request(server, http):
    marker = "Logged request number seventeen."
    assert http.post("/v1/audio/speech", json={"input": marker, "voice": "alloy", "response_format": "pcm",
                                               "seed": 2, "max_new_tokens": 8, "n_timesteps": 2}).status_code == 200
    assert http.post("/v1/audio/speech", json={"input": "Hi.", "voice": "nobody"}).status_code == 400
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    speech = wait_for_lines(server, lambda line: f"characters={len(marker)}" in line and "voice=alloy" in line)
    assert len(speech) == 1, speech
    fields = access_fields(speech[0])
    assert fields | {"total_s": "", "audio_s": "", "first_audio_s": ""} == {
        "level": "INFO", "method": "POST", "route": "/v1/audio/speech", "status": "200", "voice": "alloy",
        "characters": str(len(marker)), "aborted": "no", "total_s": "", "audio_s": "", "first_audio_s": ""}
    assert 0 < float(fields["first_audio_s"]) <= float(fields["total_s"])
    assert float(fields["audio_s"]) > 0
    refused = wait_for_lines(server, lambda line: '"POST /v1/audio/speech" 400' in line)
    assert refused and "total_s=" in refused[-1]
    unauthorised = wait_for_lines(server, lambda line: '"GET /v1/models" 401' in line)
    assert unauthorised


def test_an_aborted_stream_is_logged_as_aborted(server):
    text = " ".join(f"Sentence number {i} keeps this stream going for a while." for i in range(12))
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=300) as http:
        with http.stream("POST", "/v1/audio/speech", json={"input": text, "voice": "echo", "response_format": "pcm",
                                                           "seed": 5, "n_timesteps": 2}) as response:
            assert response.status_code == 200
            next(response.iter_raw())
    aborted = wait_for_lines(server, lambda line: "voice=echo" in line and f"characters={len(text)}" in line)
    assert len(aborted) == 1, aborted
    assert access_fields(aborted[0])["aborted"] == "yes"


def test_json_logs_for_log_pipelines(turbo_server):
    """--log-format json: the ready line and the access lines are JSON objects, one per line,
    and nothing is written in the text format."""
    text = "Hello [laugh], this line is logged as JSON."  # its length finds its access line
    with turbo_server.client() as http:
        response = http.post("/v1/audio/speech", json={"model": turbo_server.model_name, "input": text,
                                                       "response_format": "wav", "seed": 1, "max_new_tokens": 10})
    assert response.status_code == 200
    assert wait_for_lines(turbo_server, lambda line: f'"characters": {len(text)}' in line)
    entries = [json.loads(line) for line in turbo_server.log_lines() if line.startswith("{")]
    ready = [e for e in entries if e["message"].startswith("ready: ")]
    assert len(ready) == 1 and ready[0]["level"] == "INFO" and turbo_server.url in ready[0]["message"]
    speech = [e for e in entries if e.get("route") == "/v1/audio/speech" and e.get("characters") == len(text)]
    assert len(speech) == 1
    entry = speech[0]
    assert {"time", "level", "logger", "message", "client", "method", "status", "voice", "characters", "audio_s",
            "first_audio_s", "total_s", "aborted"} <= set(entry)
    assert (entry["method"], entry["status"], entry["voice"], entry["characters"], entry["aborted"]) == (
        "POST", 200, "default", len(text), False)
    assert entry["audio_s"] > 0 and entry["logger"] == "vllm_chatterbox.access"
    assert not [line for line in turbo_server.log_lines() if line.startswith(("INFO:", "WARNING:", "ERROR:"))]
