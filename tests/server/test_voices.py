"""The voices API: upload, list, get, use, delete; limits; persistence across a restart."""

import json

import httpx
import numpy as np
import pytest
import torch

from tests.server.helpers import (MAX_VOICE_MB, MAX_VOICE_SECONDS, assert_openai_error,
                                  assert_same_audio_up_to_rounding, engine_processes, kill_all, pcm_samples,
                                  reference_signal, speech, still_alive, wait_for_lines, wav_bytes)
from vllm_chatterbox.voice.voice import Voice


def upload(http: httpx.Client, name: str, data: bytes, field: str = "file", **form) -> httpx.Response:
    return http.post("/v1/audio/voices", data={"name": name, **form}, files={field: ("ref.wav", data, "audio/wav")})


def leftover_temp_files(server) -> list[str]:
    return [p.name for p in server.voices_dir.iterdir() if p.name.startswith(".")]


def test_voice_lifecycle(server, http, reference_audio):
    created = upload(http, "narrator", reference_audio, exaggeration="0.7")
    assert created.status_code == 201, created.text
    assert created.json() | {"created_at": 0} == {"id": "narrator", "object": "audio.voice", "name": "narrator",
                                                   "created_at": 0, "type": "audio_sample", "exaggeration": 0.7,
                                                   "builtin": False}
    # Stored in the official conds.pt format, loadable by the library.
    path = server.voices_dir / "narrator.pt"
    assert set(torch.load(path, weights_only=True)) == {"t3", "gen"}
    assert Voice.load(path).exaggeration == pytest.approx(0.7)  # stored as float32
    assert http.get("/v1/audio/voices/narrator").json()["exaggeration"] == 0.7
    assert leftover_temp_files(server) == []

    assert [v["id"] for v in http.get("/v1/audio/voices").json()["data"]] == ["default", "narrator"]
    assert http.get("/v1/audio/voices/narrator").json()["id"] == "narrator"
    assert_openai_error(upload(http, "narrator", reference_audio), 409, "name")

    fields = {"response_format": "pcm", "seed": 4, "max_new_tokens": 10, "n_timesteps": 2}
    own = speech(http, "Who is speaking?", voice="narrator", **fields)
    by_id = speech(http, "Who is speaking?", voice={"id": "narrator"}, **fields)
    builtin = speech(http, "Who is speaking?", voice="default", **fields)
    assert own.status_code == by_id.status_code == builtin.status_code == 200
    assert own.content == by_id.content
    assert not np.array_equal(pcm_samples(own.content), pcm_samples(builtin.content))

    assert http.delete("/v1/audio/voices/narrator").json() == {"id": "narrator", "object": "audio.voice.deleted",
                                                                "deleted": True}
    assert_openai_error(http.get("/v1/audio/voices/narrator"), 404)
    assert_openai_error(http.delete("/v1/audio/voices/narrator"), 404)
    assert_openai_error(speech(http, "Gone?", voice="narrator"), 400, "voice")
    assert not path.exists()


def test_openai_field_name_audio_sample(http, reference_audio):
    assert upload(http, "sampled", reference_audio, field="audio_sample").status_code == 201
    assert http.delete("/v1/audio/voices/sampled").status_code == 200


def test_bad_uploads(server, http, reference_audio):
    assert_openai_error(upload(http, "notaudio", b"this is not audio at all" * 100), 400, "file")
    assert_openai_error(upload(http, "silent", wav_bytes(np.zeros(16000, np.float32), 16000)), 400, "file")
    assert_openai_error(upload(http, "tooshort", wav_bytes(reference_signal(0.2, 16000), 16000)), 400, "file")
    too_long = wav_bytes(reference_signal(MAX_VOICE_SECONDS + 2, 16000), 16000)
    assert len(too_long) < MAX_VOICE_MB * (1 << 20)
    error = assert_openai_error(upload(http, "toolong", too_long), 400, "file")
    assert error["code"] == "audio_too_long"
    too_big = wav_bytes(reference_signal(40, 16000), 16000)  # 1.3 MB
    assert_openai_error(upload(http, "toobig", too_big), 413)
    # Without Content-Length (chunked upload) the limit holds while reading.
    envelope = b"--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nchunked\r\n--b\r\n" \
               b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    body = (part for part in [envelope, too_big, b"\r\n--b--\r\n"])
    response = http.post("/v1/audio/voices", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_openai_error(response, 413)
    for name in ["../evil", "a/b", "..", ".hidden", "x" * 65, "white space", "default", ""]:
        assert_openai_error(upload(http, name, reference_audio), 400)
    assert_openai_error(http.post("/v1/audio/voices", data={"name": "nofile"}), 400)
    assert_openai_error(upload(http, "loud", reference_audio, exaggeration="9"), 400, "exaggeration")
    for path in ["/v1/audio/voices/..%2F..%2Fetc", "/v1/audio/voices/%2e%2e", "/v1/audio/voices/a.pt"]:
        assert http.get(path).status_code in (400, 404)
        assert http.delete(path).status_code in (400, 404)
    assert_openai_error(http.delete("/v1/audio/voices/default"), 400)
    stored = {p.stem for p in server.voices_dir.glob("*.pt")}
    assert not stored & {"notaudio", "silent", "tooshort", "toolong", "toobig", "chunked", "nofile", "loud"}
    assert leftover_temp_files(server) == []
    assert server.is_running()


def test_full_or_read_only_voice_storage_is_a_clear_error_and_the_server_keeps_serving(server, http,
                                                                                       reference_audio):
    """The voices directory on a small tmpfs, mounted over it for this test: full, an upload is
    507 (insufficient_storage) and leaves no file; read-only, uploads and deletes are 500
    saying so; speech goes on throughout. Messages never show the server's paths."""
    from tests.storage import fill, remount_read_only, small_tmpfs

    fields = {"response_format": "pcm", "max_new_tokens": 8, "n_timesteps": 2}
    with small_tmpfs(server.voices_dir, size_kib=1024) as voices:
        filler = fill(voices)
        response = upload(http, "crowded", reference_audio)
        error = assert_openai_error(response, 507)
        assert (error["type"], error["code"]) == ("server_error", "insufficient_storage")
        assert "voice storage is full" in error["message"] and str(voices) not in response.text
        assert [p.name for p in voices.iterdir()] == [filler.name]
        assert_openai_error(http.get("/v1/audio/voices/crowded"), 404)
        still = speech(http, "Still serving.", **fields)
        assert still.status_code == 200 and pcm_samples(still.content).size > 0

        filler.unlink()
        assert upload(http, "kept", reference_audio).status_code == 201
        remount_read_only(voices)
        for response in (upload(http, "frozen", reference_audio), http.delete("/v1/audio/voices/kept")):
            error = assert_openai_error(response, 500)
            assert error["code"] == "voice_storage_read_only" and "read-only" in error["message"], error
            assert str(voices) not in response.text
        assert [p.name for p in voices.iterdir()] == ["kept.pt"]
        assert http.get("/v1/audio/voices/kept").status_code == 200
        assert speech(http, "Still serving.", voice="kept", **fields).status_code == 200
    assert server.is_running()
    assert "kept" not in [v["id"] for v in http.get("/v1/audio/voices").json()["data"]]  # it lived on the tmpfs


def test_voices_survive_a_killed_server_and_deleted_ones_stay_gone(server, reference_audio):
    """The session server killed with ``kill -9`` (what it acknowledged must be on disk already; its
    engine must not outlive it, issue 25.1) and started again on the same voices directory."""
    with server.client() as http:
        assert upload(http, "keeper", reference_audio).status_code == 201
        assert upload(http, "dropped", reference_audio).status_code == 201
        before = speech(http, "Same voice after a restart.", voice="keeper", response_format="pcm", seed=9,
                        max_new_tokens=10, n_timesteps=2)
        assert http.delete("/v1/audio/voices/dropped").status_code == 200
    engines = engine_processes(server.process.pid)
    assert engines, "no engine process found under the server"
    server.kill()
    left = still_alive(engines)
    kill_all(left)
    assert not left, "the engine outlived its killed server"
    server.start()
    with server.client() as http:
        assert [v["id"] for v in http.get("/v1/audio/voices").json()["data"]] == ["default", "keeper"]
        assert_openai_error(http.get("/v1/audio/voices/dropped"), 404)
        after = speech(http, "Same voice after a restart.", voice="keeper", response_format="pcm", seed=9,
                       max_new_tokens=10, n_timesteps=2)
        assert after.status_code == 200
        assert_same_audio_up_to_rounding(pcm_samples(after.content), pcm_samples(before.content))
        assert http.delete("/v1/audio/voices/keeper").status_code == 200


def test_a_turbo_server_precomputes_a_new_voices_conditioning(turbo_server):
    """After the upload answers, one T3 request puts the voice's conditioning into vLLM's prefix
    cache (``ChatterboxTTS.warm_voice``), so the voice's first speech request skips that prefill."""
    submitted = turbo_server.metric("chatterbox_t3_requests_submitted")
    with turbo_server.client() as http:
        # Turbo wants more than 5 s of reference: 6 s make 150 prompt tokens, 151 conditioning rows.
        created = upload(http, "warmed", wav_bytes(reference_signal(6.0, 16000), 16000))
        assert created.status_code == 201, created.text
        try:
            lines = wait_for_lines(turbo_server, lambda line: "warmed" in line and "pre-computed" in line, timeout=120)
            assert len(lines) == 1, turbo_server.log_tail()
            message = json.loads(lines[0])["message"]
            assert message == "voice 'warmed': 128 T3 prompt rows pre-computed in the prefix cache"
            assert turbo_server.metric("chatterbox_t3_requests_submitted") == submitted + 1
        finally:
            assert http.delete("/v1/audio/voices/warmed").status_code == 200
