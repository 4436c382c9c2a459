"""A bounded soak (``bench/soak.py`` for 45 s, 4 clients) on the session server: mixed one-shot,
streamed audio and SSE requests, disconnects mid-stream and voice upload/delete cycles; every
complete response decodes, nothing answers 5xx, the server's counters agree with what the
clients did, and its memory stays flat once warm."""

from bench.soak import MIX, format_report, run_soak

# Server + engine RSS, measured on the tiny model (2026-12-05, 2 heavily loaded cores): a fresh
# server grows ~140 MiB in its first 10 s of load (allocator pools, first shapes), then +23 to
# +29 MiB over the next 35-50 s of a 4-client run, flattening. "After warm-up" starts at a
# quarter of the run. 150 MiB is five times the normal growth and far below what a leak of the
# work done would show (each uploaded voice ~0.3 MiB and each request's audio ~0.1 MiB, times
# ~70 requests, plus vLLM requests never freed: their KV blocks would exhaust the cache).
MAX_RSS_GROWTH_MIB = 150


def test_soak(server):
    report = run_soak(server.url, server.process.pid, clients=4, seconds=45, seed=1, max_new_tokens=12,
                      voice_cycles=2, rss_interval_s=1.0, max_rss_growth_mib=MAX_RSS_GROWTH_MIB)
    summary = format_report(report)
    print(summary)
    kinds = {o.kind for o in report.outcomes}
    assert set(MIX) - {"voice"} <= kinds and {"voice_upload", "voice_delete", "voice_gone"} <= kinds, summary
    assert sum(o.disconnected for o in report.outcomes) >= 1, summary
    for check, (ok, detail) in report.verdict.items():
        assert ok, f"{check}: {detail}\n{summary}"
    with server.client() as http:
        assert http.get("/health").status_code == 200


def test_the_soak_checks_catch_broken_answers():
    """The decoding checks the soak relies on refuse what a broken server would send."""
    import base64
    import json

    import numpy as np
    import pytest

    from bench.soak import check_audio, check_sse
    from vllm_chatterbox.server.encoding import AudioEncoder

    encoder = AudioEncoder("mp3")
    mp3 = encoder.encode(np.zeros(24000, np.float32) + 0.1) + encoder.finish()
    assert 0.9 < check_audio(mp3, "mp3", max_seconds=1.0) < 1.2
    with pytest.raises(ValueError, match="more than"):
        check_audio(mp3, "mp3", max_seconds=0.5)
    with pytest.raises(Exception):  # whatever PyAV raises on garbage
        check_audio(b"\x00garbage" * 100, "mp3", max_seconds=10)
    with pytest.raises(ValueError, match="odd"):
        check_audio(b"\x00\x01\x02", "pcm", max_seconds=10)
    delta = "data: " + json.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(b"\0\0" * 2400).decode()})
    done = "data: " + json.dumps({"type": "speech.audio.done",
                                  "usage": {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}})
    assert check_sse(f"{delta}\n\n{done}\n\n".encode(), "pcm", max_seconds=1.0) == 0.1
    with pytest.raises(ValueError, match="does not end"):
        check_sse(f"{delta}\n\n".encode(), "pcm", max_seconds=1.0)
    with pytest.raises(ValueError, match="usage"):
        check_sse(f"{delta}\n\n{done.replace('3,', '2,', 1)}\n\n".encode(), "pcm", max_seconds=1.0)
