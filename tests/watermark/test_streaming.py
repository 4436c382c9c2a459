"""StreamMarker: audio marked piece by piece as a stream delivers it equals the whole
waveform's marking but near the first release's end, has its length, and is detected.

Measured on 12.6 s of speech (the shared clips with 100 ms pauses of digital silence) fed in the
stream's piece sizes (15, 30, then 60 tokens of 960 samples; also the joined sizes a tiny-model
stream delivers, 7440, 29760, 11040, ...) and in random sizes. With a 1e-5 noise floor the
streamed marking equals the whole waveform's to max |d| 4.0-5.4e-7 except in the 0.2 s before
the first release's end (first look-ahead 0.1 s): there 0.8-3.8e-4, SNR 85.8-96.9 dB overall.
With the digital silence left exact, max |d| up to 3.8e-4 and 78.6-86.0 dB (see
watermark/streaming.py for why). Detected at 1.0000 every way.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.watermark.conftest import snr_db
from tests.watermark.test_detection import CLIPS, RATE
from vllm_chatterbox.watermark import StreamMarker, detect, is_marked

PIECES = [15 * 960, 30 * 960] + [60 * 960] * 20  # the streaming vocoder's schedule
PAUSE = np.zeros(RATE // 10, np.float32)
SPEECH = np.concatenate([CLIPS["builtin"], PAUSE, CLIPS["voice2"], PAUSE, CLIPS["builtin"][::-1]])


def stream_marked(watermarker, audio: np.ndarray, sizes) -> list[np.ndarray]:
    marker = StreamMarker(watermarker, RATE)
    out, start = [], 0
    for size in sizes:
        if start >= audio.size:
            break
        out.append(marker.feed(audio[start:start + size]))
        start += size
    assert start >= audio.size
    out.append(marker.feed(audio[:0], final=True))
    return out


def random_sizes(seed: int) -> list[int]:
    return list(np.random.default_rng(seed).integers(1, 30000, size=200))


@pytest.mark.parametrize("sizes", [PIECES, random_sizes(0)], ids=["stream-schedule", "random-pieces"])
def test_streamed_marking_equals_the_whole_marking_with_a_noise_floor(watermarker, sizes):
    audio = SPEECH + np.random.default_rng(5).standard_normal(SPEECH.size).astype(np.float32) * 1e-5
    whole = watermarker.mark(audio, RATE)
    pieces = stream_marked(watermarker, audio, sizes)
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape
    difference = np.abs(streamed - whole)
    first = pieces[0].size
    assert first > 0, "the first piece released nothing"
    assert difference[:first - RATE // 5].max() <= 2e-6 and difference[first:].max() <= 2e-6
    assert difference.max() <= 2e-3 and snr_db(whole, streamed) >= 75.0


@pytest.mark.parametrize("sizes", [PIECES, random_sizes(1)], ids=["stream-schedule", "random-pieces"])
def test_streamed_marking_near_digital_silence(watermarker, sizes):
    whole = watermarker.mark(SPEECH, RATE)
    streamed = np.concatenate(stream_marked(watermarker, SPEECH, sizes))
    assert streamed.shape == whole.shape
    assert snr_db(whole, streamed) >= 72.0
    assert is_marked(detect(streamed, RATE))


def test_the_lookahead_is_held_back_and_released_at_the_end(watermarker):
    marker = StreamMarker(watermarker, RATE)
    assert (marker.context, marker.lookahead, marker.first_lookahead) == (7200, 6000, 2400)  # 0.3, 0.25, 0.1 s
    first = marker.feed(SPEECH[:7440])  # a stream's first piece is about this long
    assert first.size == 7440 - 2400  # 21 whole 10 ms hops
    second = marker.feed(SPEECH[7440:7440 + 3000])  # less than MIN_RELEASE_S past the look-ahead: kept
    assert second.size == 0
    third = marker.feed(SPEECH[10440:40000])
    assert first.size + third.size == 40000 - 6000 - 160
    last = marker.feed(SPEECH[40000:40100], final=True)
    assert first.size + third.size + last.size == 240 * (40100 // 240)
    with pytest.raises(RuntimeError, match="already released"):
        marker.feed(SPEECH[:10])


def test_a_short_first_piece_is_released_at_once(watermarker):
    """Turbo's first stream piece leaves ~0.15 s: all but the first look-ahead goes out at once
    (later releases wait for MIN_RELEASE_S, the first does not: it is the time to first audio)."""
    marker = StreamMarker(watermarker, RATE)
    first = marker.feed(SPEECH[:3600])
    assert first.size == 3600 - 2400
    assert marker.feed(SPEECH[3600:3700]).size == 0  # later: less than MIN_RELEASE_S ready


def test_other_rates(watermarker):
    assert StreamMarker(watermarker, 48000).hop == 480
    with pytest.raises(ValueError, match="whole number of samples per STFT hop"):
        StreamMarker(watermarker, 22050)
