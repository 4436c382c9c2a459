"""StreamMarker: audio marked piece by piece as a stream delivers it equals the whole
waveform's marking, has its length, and is detected.

Measured on 12.6 s of speech (the shared clips with 100 ms pauses of digital silence) fed in the
stream's piece sizes (15, 30, then 60 tokens of 960 samples) and in random sizes: with a 1e-5
noise floor the streamed marking equals the whole waveform's to max |d| 4.0-5.1e-7 (127.7-127.9
dB); with the digital silence left exact, max |d| 0.9-2.6e-4 and 78.7-89.7 dB (see
watermark/streaming.py for why); detected at 1.0000 every way.
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
    streamed = np.concatenate(stream_marked(watermarker, audio, sizes))
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 2e-6 and snr_db(whole, streamed) >= 115.0


@pytest.mark.parametrize("sizes", [PIECES, random_sizes(1)], ids=["stream-schedule", "random-pieces"])
def test_streamed_marking_near_digital_silence(watermarker, sizes):
    whole = watermarker.mark(SPEECH, RATE)
    streamed = np.concatenate(stream_marked(watermarker, SPEECH, sizes))
    assert streamed.shape == whole.shape
    assert snr_db(whole, streamed) >= 75.0
    assert is_marked(detect(streamed, RATE))


def test_the_lookahead_is_held_back_and_released_at_the_end(watermarker):
    marker = StreamMarker(watermarker, RATE)
    assert marker.lookahead == 6000 and marker.context == 7200  # 0.25 s, 0.3 s at 24 kHz
    first = marker.feed(SPEECH[:PIECES[0]])
    assert first.size == PIECES[0] - marker.lookahead
    second = marker.feed(SPEECH[PIECES[0]:PIECES[0] + 100])  # less than MIN_RELEASE_S more: kept
    assert second.size == 0
    last = marker.feed(SPEECH[PIECES[0] + 100:PIECES[0] + 5000], final=True)
    assert first.size + last.size == 240 * ((PIECES[0] + 5000) // 240)
    with pytest.raises(RuntimeError, match="already released"):
        marker.feed(SPEECH[:10])


def test_other_rates(watermarker):
    assert StreamMarker(watermarker, 48000).hop == 480
    with pytest.raises(ValueError, match="whole number of samples per STFT hop"):
        StreamMarker(watermarker, 22050)
