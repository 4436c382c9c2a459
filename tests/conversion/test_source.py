"""Sources: read as ``librosa.load(path, sr=16000)`` reads them, refused when unusable, and long ones
cut at pauses into pieces under the bound that keep the source's token grid."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile

from tests.conversion.conftest import BUILTIN_WAV, VOICE2_WAV, speech_with_pauses
from tests.paths import FIXTURE_REF
from vllm_chatterbox.conversion.source import (MAX_SOURCE_SECONDS, MIN_LAST_PIECE_SECONDS, TOKEN_SAMPLES, Piece,
                                               cut_loudness, load_source, plan_pieces)
from vllm_chatterbox.voice.audio import resample_soxr_hq


def test_source_is_read_as_librosa_loads_it_at_16k():
    """The fixture's ``librosa.resample(librosa.load(wav, sr=24000)[0], 24000, 16000)``, which is
    what ``librosa.load(wav, sr=16000)`` computes for this 24 kHz file."""
    with np.load(FIXTURE_REF / "voice_voice2.npz") as ref:
        expected = ref["ref16_librosa"]
    np.testing.assert_array_equal(load_source(VOICE2_WAV), expected)


def test_channels_are_averaged_and_integer_pcm_scaled(tmp_path, clips):
    """librosa: float32 samples from libsndfile (PCM16 / 32768), mean of the channels, then soxr."""
    rng = np.random.default_rng(1)
    stereo = (rng.uniform(-0.5, 0.5, (44100, 2)) * 32767).astype(np.int16)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    floats = stereo.astype(np.float32) / 32768
    expected = resample_soxr_hq(floats.mean(axis=1, dtype=np.float32), 44100, 16000)
    np.testing.assert_array_equal(load_source(path), expected)
    assert load_source(path).size == math.ceil(44100 * 16000 / 44100)


def test_every_form_of_source_reads_the_same(clips):
    data = BUILTIN_WAV.read_bytes()
    samples, rate = soundfile.read(BUILTIN_WAV, dtype="float32")
    expected = load_source(BUILTIN_WAV)
    for form, sample_rate in ((str(BUILTIN_WAV), None), (data, None), (io.BytesIO(data), None), (samples, rate)):
        np.testing.assert_array_equal(load_source(form, sample_rate), expected)


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.mark.parametrize("source,rate,message", [
    (np.zeros(16000, dtype=np.float32), 16000, "silent"),
    (_tone(0.05), 16000, "too short"),
    (b"definitely not audio", None, "not a readable audio file"),
    (_tone(1.0, 4000), 4000, "sample rate 4000 Hz is outside"),
    (_tone(1.0), None, "sample_rate is required"),
    (np.full(16000, np.nan, dtype=np.float32), 16000, "non-finite"),
])
def test_bad_sources_are_refused(source, rate, message):
    with pytest.raises(ValueError, match=message):
        load_source(source, rate)


def test_a_file_that_names_another_rate_is_refused(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, _tone(1.0), 16000)
    with pytest.raises(ValueError, match="the file says 16000 Hz"):
        load_source(path, 24000)


def test_sources_over_an_hour_are_refused_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    with soundfile.SoundFile(path, "w", 8000, 1, subtype="PCM_U8") as f:  # 1 byte per sample: 29 MB
        for _ in range(int(MAX_SOURCE_SECONDS) // 60 + 1):
            f.write(np.zeros(60 * 8000, dtype=np.int16))
    with pytest.raises(ValueError, match=r"too long \(3660.0 s\); the limit is 3600 s \(60 minutes\), trim the source"):
        load_source(path)
    with pytest.raises(ValueError, match="too long"):
        load_source(_tone(3.0), 16000, max_seconds=2.0)


def test_a_source_up_to_the_bound_is_one_piece(clips):
    assert plan_pieces(clips[0]) == [Piece(0, clips[0].size)]
    exactly = np.tile(clips[1], 10)[:30 * 16000]
    assert plan_pieces(exactly, 30) == [Piece(0, exactly.size)]


@pytest.mark.parametrize("bound", [5.0, 12.0, 30.0])
def test_long_speech_is_cut_inside_pauses(clips, bound):
    """Sentences with pauses of 0.25 to 1 s under -60 dB noise: every cut falls in a pause."""
    rng = np.random.default_rng(int(bound))
    wav, pauses = speech_with_pauses(clips, list(rng.uniform(0.25, 1.0, 24)))
    pieces = plan_pieces(wav, bound)
    assert len(pieces) > 1
    assert pieces[0].start == 0 and pieces[-1].end == wav.size
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(p.end - p.start <= bound * 16000 for p in pieces)
    assert pieces[-1].end - pieces[-1].start >= MIN_LAST_PIECE_SECONDS * 16000
    for piece in pieces[1:]:
        assert piece.start % TOKEN_SAMPLES == 0
        assert any(lo <= piece.start <= hi for lo, hi in pauses), f"cut at {piece.start / 16000:.2f} s is not in a pause"


def test_pieces_keep_the_whole_sources_token_count(clips):
    wav, _ = speech_with_pauses(clips, [0.4] * 9)
    whole = Piece(0, wav.size).tokens
    assert whole == math.ceil((wav.size // 160) / 4)
    assert sum(p.tokens for p in plan_pieces(wav, 6)) == whole


def test_without_pauses_the_cut_is_the_quietest_boundary_and_under_the_bound():
    rng = np.random.default_rng(3)
    seconds = 40
    envelope = 0.2 + 0.1 * np.sin(np.arange(seconds * 16000) / 16000 * 2 * np.pi * 0.37)
    envelope[25 * 16000:25 * 16000 + 1200] = 0.02  # a 75 ms dip: the quietest place there is
    wav = (envelope * rng.standard_normal(envelope.size)).astype(np.float32)
    pieces = plan_pieces(wav, 30)
    assert all(p.end - p.start <= 30 * 16000 for p in pieces)
    loudness = cut_loudness(wav)
    first_cut = pieces[1].first_token
    window = loudness[375:751]  # cuts between half the bound and the bound
    assert loudness[first_cut] <= window.min() + 3.0


@pytest.mark.parametrize("bound", [4.9, 31, "30", None, float("nan")])
def test_bad_bounds_are_refused(clips, bound):
    with pytest.raises(ValueError, match="max_piece_seconds"):
        plan_pieces(clips[0], bound)
