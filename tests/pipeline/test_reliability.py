"""One ChatterboxTTS from many threads, engine death, and no work left behind in the engine."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from tests.conftest import KV_CACHE_BYTES
from vllm_chatterbox.t3.engine import T3EngineDeadError

TEXTS = ["One small thing.", "Another sentence to say aloud.", "Third.", "A fourth text, a little longer than most."]


def _wait_until_idle(tts, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not tts.t3_engine.has_unfinished():
            return True
        time.sleep(0.05)
    return False


def _call(tts, thread: int, call: int) -> list[np.ndarray]:
    seed = 100 * thread + call
    texts = [TEXTS[(thread + call) % 4], TEXTS[(thread + 2 * call + 1) % 4]]
    # Unmarked: the watermark would amplify S3Gen's batch rounding past the 1e-5 compared below
    # (tests/watermark/test_detection.py checks marking from many threads).
    return tts.generate(texts, seed=[seed, seed + 50], max_new_tokens=[16, 24], n_timesteps=2, watermark=False)


def test_many_threads_share_one_object(tts_tiny):
    """8 threads x 4 seeded calls at once: every result equals the same call made alone."""
    with ThreadPoolExecutor(8) as pool:
        futures = {(t, c): pool.submit(_call, tts_tiny, t, c) for t in range(8) for c in range(4)}
        together = {key: future.result(timeout=600) for key, future in futures.items()}
    for (thread, call), wavs in sorted(together.items())[::5]:  # every 5th call again, alone
        alone = _call(tts_tiny, thread, call)
        for ours, solo in zip(wavs, alone):
            assert ours.shape == solo.shape, (thread, call)
            np.testing.assert_allclose(ours, solo, atol=1e-5, rtol=0)
    assert _wait_until_idle(tts_tiny)


def test_failing_text_in_a_batch_sends_nothing(tts_tiny):
    before = tts_tiny.t3_engine.requests_submitted
    with pytest.raises(ValueError, match="exceeds the engine's max_model_len"):
        tts_tiny.generate(["Fine.", "Also fine."], max_new_tokens=[10, 4000])
    assert tts_tiny.t3_engine.requests_submitted == before
    assert not tts_tiny.t3_engine.has_unfinished()


def test_abandoned_generation_is_aborted(tts_tiny):
    """A caller that stops consuming (error in its loop, KeyboardInterrupt) frees the engine."""
    stream = tts_tiny._synthesize(["Quick.", "Slow and long."], None, 2, {"max_new_tokens": [4, 900], "seed": [1, 2]})
    next(stream)
    assert tts_tiny.t3_engine.has_unfinished()
    stream.close()
    assert _wait_until_idle(tts_tiny), "the long request kept decoding after its caller left"


def test_s3gen_error_aborts_the_batch(tts_tiny, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("vocoder exploded")

    monkeypatch.setattr(tts_tiny.s3gen, "inference", broken)
    with pytest.raises(RuntimeError, match="vocoder exploded"):
        tts_tiny.generate(["Quick.", "Slow and long."], max_new_tokens=[4, 900], seed=[1, 2])
    monkeypatch.undo()
    assert _wait_until_idle(tts_tiny), "requests kept decoding after S3Gen failed"


def _engine_core_processes():
    cores = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
                cores.append(process)
        except psutil.NoSuchProcess:  # also a zombie: a child (of an earlier test) that has exited
            continue
    return cores


def test_engine_death_is_an_error_not_a_hang(tiny_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    before = {p.pid for p in _engine_core_processes()}
    tts = ChatterboxTTS.from_dir(tiny_model_dir, max_num_seqs=4, max_model_len=1024,
                                 kv_cache_memory_bytes=KV_CACHE_BYTES)
    try:
        cores = [p for p in _engine_core_processes() if p.pid not in before]
        assert len(cores) == 1, f"expected one new engine-core process, found {cores}"
        outcome: dict = {}

        def long_call():
            try:
                tts.generate_speech_tokens("A long one that keeps decoding.", max_new_tokens=900, seed=3)
                outcome["result"] = "finished"
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

        caller = threading.Thread(target=long_call, daemon=True)
        caller.start()
        time.sleep(1.0)
        assert caller.is_alive(), "the request finished before the engine could be killed"
        os.kill(cores[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        caller.join(timeout=30)
        assert not caller.is_alive(), "the caller still waits 30 s after the engine died"
        assert isinstance(outcome.get("error"), T3EngineDeadError), outcome
        assert outcome["at"] - killed_at < 15
        started = time.monotonic()
        with pytest.raises(T3EngineDeadError):
            tts.generate_speech_tokens("After the death.", max_new_tokens=5)
        assert time.monotonic() - started < 5
    finally:
        tts.t3_engine.shutdown()
