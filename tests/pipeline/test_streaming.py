"""ChatterboxTTS.stream / astream: audio while T3 decodes, deterministic, concurrent, abortable."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vllm_chatterbox.s3gen.streaming import StreamSchedule

TEXT = "The first sentence is here. And a second one follows it closely."
# Streamed vs one-shot SNR measured on the tiny random model: 52.7-53.9 dB (four texts and seeds).
STREAM_SNR_DB = 48.0
# Unmarked: these tests are about synthesis; test_watermark.py streams marked audio.
OPTIONS = dict(max_chunk_tokens=8, seed=5, max_new_tokens=60, n_timesteps=2, watermark=False)


def _collect(tts, text=TEXT, **options) -> list[np.ndarray]:
    return list(tts.stream(text, **{**OPTIONS, **options}))


@pytest.fixture(scope="module")
def solo_pieces(tts_tiny) -> list[np.ndarray]:
    """TEXT streamed with OPTIONS, alone (nothing else running): computed once for the tests below."""
    return _collect(tts_tiny)


def test_stream_has_the_one_shot_shape_and_sound(tts_tiny, solo_pieces):
    """Same text, seed and chunks: the streamed audio has generate_long's exact length and
    stays close to it (pieces see only the tokens so far, so they are not bit-equal)."""
    pieces = solo_pieces
    assert len(pieces) > 2 and all(p.dtype == np.float32 and p.ndim == 1 for p in pieces)
    streamed = np.concatenate(pieces)
    one_shot = tts_tiny.generate_long(TEXT, progress=False, **OPTIONS)
    assert streamed.shape == one_shot.shape
    snr = 10 * np.log10(np.sum(one_shot**2) / np.sum((streamed - one_shot) ** 2))
    assert snr > STREAM_SNR_DB, f"streamed vs one-shot SNR {snr:.1f} dB"


def test_stream_is_deterministic_alone_or_in_company(tts_tiny, solo_pieces):
    alone = np.concatenate(solo_pieces)
    others = ["Another voice speaks at the same time.", "A third one, much longer than the others, keeps going."]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_collect, tts_tiny)] + [pool.submit(_collect, tts_tiny, t, seed=9) for t in others]
        together = np.concatenate(futures[0].result(timeout=600))
        for future in futures[1:]:
            assert np.concatenate(future.result(timeout=600)).size > 0
    # Same tokens, same piece boundaries and noise; only float rounding of other batch shapes
    # (padded S3Gen batches) may differ: measured 1.4e-7.
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)


def test_astream_in_another_event_loop_equals_stream(tts_tiny, solo_pieces):
    async def collect():
        return [piece async for piece in tts_tiny.astream(TEXT, **OPTIONS)]

    np.testing.assert_allclose(np.concatenate(asyncio.run(collect())), np.concatenate(solo_pieces),
                               atol=1e-6, rtol=0)


def test_first_audio_comes_while_t3_decodes(tts_tiny):
    stream = tts_tiny.stream("A long, long sentence that keeps the model talking.", seed=2, max_new_tokens=900,
                             n_timesteps=2)
    first = next(stream)
    try:
        assert first.size > 0
        assert tts_tiny.t3_engine.has_unfinished(), "T3 had already finished: nothing was streamed"
    finally:
        stream.close()


def test_closing_a_stream_frees_the_engine(tts_tiny):
    stream = tts_tiny.stream("Talk for a long while, please.", seed=3, max_new_tokens=900, n_timesteps=2)
    next(stream)
    stream.close()
    vocoder = tts_tiny._stream_vocoder
    deadline = time.monotonic() + 10
    while (tts_tiny.t3_engine.has_unfinished() or vocoder.queued_streams) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not tts_tiny.t3_engine.has_unfinished(), "the T3 request kept decoding after the stream closed"
    assert vocoder.queued_streams == 0, "the closed stream's tokens still wait for the vocoder"


def test_a_schedule_of_the_callers_own_cuts_the_pieces(tts_tiny):
    """The model's schedule is its row of variants.py; a caller may pass another one."""
    assert tts_tiny.variant.stream_schedule == StreamSchedule()
    options = dict(max_new_tokens=40, seed=4, n_timesteps=2)
    whole = list(tts_tiny.stream(TEXT, schedule=StreamSchedule(chunk_tokens=(10_000,)), max_chunk_tokens=100,
                                 **options))
    fine = list(tts_tiny.stream(TEXT, schedule=StreamSchedule(chunk_tokens=(4,)), max_chunk_tokens=100, **options))
    # One S3Gen piece, then the 50 ms the text joiner holds for a next chunk's crossfade.
    assert len(whole) == 2 and len(fine) > 4
    assert np.concatenate(fine).size == np.concatenate(whole).size


@pytest.mark.parametrize("kwargs,message", [
    ({"text": ""}, "empty"),
    ({"text": "Hi.", "temperature": 5}, "temperature must be in"),
    ({"text": "Hi.", "seed": [1, 2]}, "one value for the whole text"),
    ({"text": "Hi.", "watermark": 1}, "watermark must be True or False"),
    ({"text": "Hi.", "n_timesteps": 0}, "n_timesteps"),
    ({"text": 3}, "text must be a str"),
    ({"text": "Hi.", "schedule": StreamSchedule(chunk_tokens=(3, 10))}, "look-ahead"),
    ({"text": "Hi.", "schedule": (15, 30)}, "schedule must be a StreamSchedule"),
])
def test_bad_input_fails_before_anything_runs(tts_tiny, kwargs, message):
    before = tts_tiny.t3_engine.requests_submitted
    with pytest.raises(ValueError, match=message):
        tts_tiny.stream(**kwargs)
    with pytest.raises(ValueError, match=message):
        tts_tiny.astream(**kwargs)
    assert tts_tiny.t3_engine.requests_submitted == before
