"""Turbo streams: ``stream`` / ``astream`` on the session Turbo engine (the original's tiny Turbo
checkpoint) keep the original model's streaming guarantees, with the meanflow decoder and Turbo's
own piece schedule (``variants.py``)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vllm_chatterbox.pipeline.long_text import DEFAULT_CROSSFADE_MS

TEXT = "Oh [sigh] the cable was loose again. So I fixed it, and the lights came back on at once."
# Unmarked, as tests/pipeline/test_streaming.py: these tests are about synthesis (the mark amplifies
# float rounding 50-200 times); tests/pipeline/test_watermark.py streams marked audio.
OPTIONS = dict(max_chunk_tokens=12, seed=5, max_new_tokens=60, watermark=False)
# Streamed vs generate_long on this fixture: measured 17.5 dB (TEXT, seed 5). Its S3Gen weights
# (the original's random init) attend evenly over the whole utterance, so a piece made before the
# later tokens exist differs everywhere; S3Gen alone on random tokens gives the same (18-20 dB,
# tests/s3gen/test_streaming.py), and the original model's fixture too (16.2 dB). On
# make_test_model's tiny Turbo weights the same comparison gives 65 dB (the Nano test in test_api).
STREAM_SNR_DB = 14.0
# Two chunks are in flight at once and the vocoder pads the pieces that are due together into one
# batch, so timing changes float rounding only (measured up to 1.1e-6; |wav| peaks near 0.3).
ROUNDING = 1e-5


def _collect(tts, text=TEXT, **options) -> list[np.ndarray]:
    return list(tts.stream(text, **{**OPTIONS, **options}))


def _wait_until_idle(tts, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while (tts.t3_engine.has_unfinished() or tts._stream_vocoder.queued_streams) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_turbo_stream_has_generate_longs_length_and_stays_close(turbo_tts):
    pieces = _collect(turbo_tts)
    assert len(pieces) > 3 and all(p.dtype == np.float32 and p.ndim == 1 for p in pieces)
    streamed = np.concatenate(pieces)
    one_shot = turbo_tts.generate_long(TEXT, progress=False, **OPTIONS)
    assert streamed.shape == one_shot.shape
    snr = 10 * np.log10(np.sum(one_shot ** 2) / np.sum((streamed - one_shot) ** 2))
    assert snr > STREAM_SNR_DB, f"streamed vs one-shot SNR {snr:.1f} dB"


def test_first_piece_comes_after_the_schedules_first_tokens_while_t3_decodes(turbo_tts):
    """The first piece is the audio of Turbo's first chunk of tokens (not the original model's
    15): its length says when it was cut."""
    schedule = turbo_tts.variant.stream_schedule
    voice = turbo_tts.builtin_voice
    lookahead = turbo_tts.config.flow.pre_lookahead_len
    frames = 2 * (voice.prompt_token.shape[1] + schedule.chunk_tokens[0] - lookahead) - voice.prompt_feat.shape[1]
    held_by_the_text_joiner = round(DEFAULT_CROSSFADE_MS * 24000 / 1000)
    # Unmarked: the watermark's stream marker holds back the first 0.1 s (watermark/streaming.py),
    # more than this first piece, which then leaves with the next one.
    stream = turbo_tts.stream("A long sentence that keeps the model talking for a while.", seed=2,
                              max_new_tokens=600, watermark=False)
    try:
        first = next(stream)
        assert first.size == 480 * (frames - schedule.overlap_frames) - held_by_the_text_joiner
        assert turbo_tts.t3_engine.has_unfinished(), "T3 had already finished: nothing was streamed"
    finally:
        stream.close()
    _wait_until_idle(turbo_tts)


def test_seeded_turbo_streams_are_the_same_alone_or_among_others(turbo_tts):
    alone = np.concatenate(_collect(turbo_tts))
    others = ["Another voice [laugh] speaks at the same time.", "A third one, longer than the others, keeps going on."]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_collect, turbo_tts)] + [pool.submit(_collect, turbo_tts, t, seed=9) for t in others]
        together = np.concatenate(futures[0].result(timeout=600))
        for future in futures[1:]:
            assert np.concatenate(future.result(timeout=600)).size > 0
    # Same tokens, piece boundaries and noise; other batch shapes only change float rounding.
    np.testing.assert_allclose(together, alone, atol=ROUNDING, rtol=0)
    other_seed = np.concatenate(_collect(turbo_tts, seed=6))
    assert other_seed.shape != alone.shape or np.abs(other_seed - alone).max() > 1e-3


def test_turbo_astream_in_another_event_loop_equals_stream(turbo_tts):
    async def collect():
        return [piece async for piece in turbo_tts.astream(TEXT, **OPTIONS)]

    np.testing.assert_allclose(np.concatenate(asyncio.run(collect())), np.concatenate(_collect(turbo_tts)),
                               atol=ROUNDING, rtol=0)


def test_closing_a_turbo_stream_aborts_t3_and_the_queued_vocoder_work(turbo_tts):
    vocoder = turbo_tts._stream_vocoder
    stream = turbo_tts.stream("Talk for a long while, please, and do not stop.", seed=3, max_new_tokens=600)
    next(stream)
    assert turbo_tts.t3_engine.has_unfinished()
    stream.close()
    _wait_until_idle(turbo_tts)
    assert not turbo_tts.t3_engine.has_unfinished(), "the T3 request kept decoding after the stream closed"
    assert vocoder.queued_streams == 0, "the closed stream's tokens still wait for the vocoder"
