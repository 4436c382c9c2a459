"""OpenAI's ``speed`` without a server: pitch kept, length exactly 1/speed, the same audio
however the stream is cut into pieces."""

import asyncio

import numpy as np
import pytest
import soundfile

from tests.paths import FIXTURE_DIR
from vllm_chatterbox.server.encoding import SAMPLE_RATE
from vllm_chatterbox.server.speed import TempoChanger, atempo_stages


def tone(seconds: float, hz: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def change(audio: np.ndarray, speed: float, pieces: int) -> np.ndarray:
    changer = TempoChanger(speed)
    out = [changer.feed(piece) for piece in np.array_split(audio, pieces)]
    return np.concatenate([*out, changer.finish()])


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * SAMPLE_RATE / samples.size)


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.8, 1.3, 2.0, 3.0, 4.0])
def test_pitch_kept_and_length_exact(speed):
    audio = tone(1.5)
    out = change(audio, speed, pieces=9)
    assert out.dtype == np.float32
    assert out.size == round(audio.size / speed)
    assert dominant_hz(out) == pytest.approx(330.0, rel=0.01)
    assert 0.5 < np.sqrt(np.mean(out ** 2)) / np.sqrt(np.mean(audio ** 2)) < 1.5


@pytest.mark.parametrize("seconds", [0.2, 0.7])
@pytest.mark.parametrize("speed", [0.25, 4.0])
def test_short_clips_keep_the_exact_length(seconds, speed):
    audio = tone(seconds)
    assert change(audio, speed, pieces=3).size == round(audio.size / speed)


def test_pieces_do_not_change_the_audio():
    audio = tone(2.0) + 0.05 * np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    np.testing.assert_allclose(change(audio, 1.7, pieces=1), change(audio, 1.7, pieces=11), atol=1e-6)


def test_stages_stay_in_atempos_range():
    for speed in (0.25, 0.3, 0.5, 1.0, 2.5, 4.0):
        stages = atempo_stages(speed)
        assert all(0.5 <= s <= 2.0 for s in stages)
        assert np.prod(stages) == pytest.approx(speed)
    with pytest.raises(ValueError, match="speed must be in"):
        atempo_stages(5.0)


def test_a_changed_stream_is_watermarked_after_the_change():
    """Marked before a 4x change, speech loses the mark (confidence 0.32); change_speed marks after it."""
    from vllm_chatterbox.server.speed import change_speed
    from vllm_chatterbox.watermark import apply_watermark, detect, is_marked, load_watermarker

    speech, rate = soundfile.read(FIXTURE_DIR / "audio" / "voice2_24k.wav", dtype="float32")
    assert rate == SAMPLE_RATE

    async def pieces(audio):
        for piece in np.array_split(audio, 6):
            yield piece

    async def changed(audio, watermarker):
        return np.concatenate([p async for p in change_speed(pieces(audio), 4.0, watermarker)])

    marked_then_changed = asyncio.run(changed(apply_watermark(speech, rate), None))
    changed_then_marked = asyncio.run(changed(speech, load_watermarker()))
    assert changed_then_marked.size == round(speech.size / 4.0)
    assert not is_marked(detect(marked_then_changed, rate))
    assert is_marked(detect(changed_then_marked, rate))
