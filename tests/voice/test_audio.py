"""Audio loading/validation and the two resamplers (soxr HQ as librosa, Hann sinc as torchaudio)."""

from __future__ import annotations

import io

import librosa
import numpy as np
import pytest
import soundfile
import torch

from vllm_chatterbox.voice.audio import load_audio, resample_sinc_hann, resample_soxr_hq

from .conftest import BUILTIN_WAV, VOICE2_WAV

torch.set_num_threads(1)


def _tone(seconds: float, sr: int, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# loading


def test_wav_file_matches_librosa_load():
    wav, sr = load_audio(VOICE2_WAV)
    expected, expected_sr = librosa.load(VOICE2_WAV, sr=None)
    assert sr == expected_sr == 24000
    assert wav.dtype == np.float32
    np.testing.assert_array_equal(wav, expected)


def test_path_bytes_and_file_object_agree():
    wav, sr = load_audio(str(BUILTIN_WAV))
    data = BUILTIN_WAV.read_bytes()
    from_bytes, sr_bytes = load_audio(data)
    from_stream, sr_stream = load_audio(io.BytesIO(data))
    assert sr == sr_bytes == sr_stream
    np.testing.assert_array_equal(wav, from_bytes)
    np.testing.assert_array_equal(wav, from_stream)


def test_stereo_file_is_mixed_like_librosa(tmp_path):
    left, right = _tone(1.0, 22050, 220.0), _tone(1.0, 22050, 330.0, amp=0.1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    wav, sr = load_audio(path)
    expected, _ = librosa.load(path, sr=None, mono=True)
    assert sr == 22050
    np.testing.assert_array_equal(wav, expected)


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_compressed_formats_load(tmp_path, fmt, ext):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"libsndfile without {fmt}")
    tone = _tone(1.0, 16000)
    path = tmp_path / f"tone.{ext}"
    soundfile.write(path, tone, 16000, format=fmt)
    wav, sr = load_audio(path)
    assert sr == 16000 and wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - len(tone)) < 0.1 * 16000  # codecs may pad a little
    assert 0.2 < np.abs(wav).max() < 0.4


def test_array_inputs():
    tone = _tone(1.0, 16000)
    wav, sr = load_audio(tone, 16000)
    assert sr == 16000
    np.testing.assert_array_equal(wav, tone)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(tone), 16000)[0], tone)
    # int16 full scale -> [-1, 1]
    as_int16 = (tone * 32768).astype(np.int16)
    np.testing.assert_allclose(load_audio(as_int16, 16000)[0], tone, atol=1 / 32768)
    # channels along the smaller axis, either layout
    stereo = np.stack([tone, tone * 0.5])
    mixed = load_audio(stereo, 16000)[0]
    np.testing.assert_allclose(mixed, tone * 0.75, atol=1e-7)
    np.testing.assert_array_equal(load_audio(stereo.T, 16000)[0], mixed)


def test_rate_given_for_file_must_agree():
    assert load_audio(BUILTIN_WAV, 24000)[1] == 24000
    with pytest.raises(ValueError, match="file says 24000"):
        load_audio(BUILTIN_WAV, 16000)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p / "nope.wav", "not found"),
        (lambda p: p, "not a file"),
        (lambda p: _write(p / "corrupt.wav", b"RIFF\x00\x01junkjunkjunk" * 10), "not a readable audio file"),
        (lambda p: _write(p / "text.flac", b"hello, not audio"), "not a readable audio file"),
        (lambda p: _write(p / "empty.wav", b""), "not a readable audio file"),
    ],
)
def test_bad_files_raise(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        load_audio(make(tmp_path))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_header_only_wav_is_empty(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        load_audio(path)


def test_float_wav_with_absurd_samples_is_refused(tmp_path):
    """A float WAV of 1e30 samples used to become a voice of NaN embeddings."""
    path = tmp_path / "loud.wav"
    soundfile.write(path, np.full(16000, 1e30, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match="audio samples reach 1e\\+30; float audio must lie in"):
        load_audio(path)
    clipped = _tone(1.0, 16000, amp=1.5)
    assert load_audio(clipped, 16000)[0].max() == pytest.approx(1.5, rel=1e-4)  # headroom is tolerated


def test_long_file_refused_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(601 * 8000, dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match="too long.*10 minutes"):
        load_audio(path)


@pytest.mark.parametrize(
    "samples,match",
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.where(np.arange(16000) == 5, np.nan, 0.3).astype(np.float32), "non-finite"),
        (np.where(np.arange(16000) == 5, np.inf, 0.3).astype(np.float32), "non-finite"),
        (np.zeros(16000, dtype=np.float32), "silent"),
        (np.full(16000, 5e-5, dtype=np.float32), "silent"),
        (_tone(0.4, 16000), "too short"),
        (np.full(601 * 8000, 0.1, dtype=np.float32), "too long"),
        (np.ones((3, 4, 5), dtype=np.float32), "1-D"),
        (np.ones(16000, dtype=np.complex64), "dtype"),
        (np.full(16000, 1e30, dtype=np.float32), "float audio must lie in"),
        (np.full(16000, -1e4, dtype=np.float64), "float audio must lie in"),
    ],
)
def test_bad_samples_raise(samples, match):
    rate = 8000 if samples.size == 601 * 8000 else 16000
    with pytest.raises(ValueError, match=match):
        load_audio(samples, rate)


@pytest.mark.parametrize("rate", [None, 0, -16000, 16000.5, 100, 10_000_000, True, "16000"])
def test_bad_sample_rates_raise(rate):
    with pytest.raises(ValueError, match="sample"):
        load_audio(_tone(1.0, 16000), rate)


# ---------------------------------------------------------------------------------------
# resampling


def test_soxr_hq_equals_fixture_and_librosa(ref):
    wav24, _ = load_audio(VOICE2_WAV)
    ours = resample_soxr_hq(wav24, 24000, 16000)
    np.testing.assert_array_equal(ours, ref["ref16_librosa"])  # measured max diff 0.0
    for sr_in, sr_out in [(44100, 24000), (16000, 24000), (22050, 16000)]:
        x = np.random.default_rng(0).standard_normal(sr_in // 3 + 7).astype(np.float32) * 0.1
        expected = librosa.resample(x, orig_sr=sr_in, target_sr=sr_out)
        got = resample_soxr_hq(x, sr_in, sr_out)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_sinc_hann_equals_fixture(ref):
    wav24, _ = load_audio(VOICE2_WAV)
    ours = resample_sinc_hann(torch.from_numpy(wav24[:240000])[None], 24000, 16000)
    expected = torch.from_numpy(ref["ref16_torchaudio"])
    assert ours.shape == expected.shape
    # Same kernel (float64 -> float32) and the same conv: measured max diff 0.0; 1e-7 allows
    # for a different conv backend.
    assert (ours - expected).abs().max().item() <= 1e-7


def test_sinc_hann_lengths_batches_and_interpolation():
    sr_in, sr_out = 16000, 24000
    x = torch.from_numpy(_tone(0.25, sr_in, 440.0))
    y = resample_sinc_hann(x, sr_in, sr_out)
    assert y.shape == (int(np.ceil(x.numel() * sr_out / sr_in)),)
    # A band-limited tone is reproduced away from the edges (the filter spans ~6 periods).
    t = np.arange(y.numel()) / sr_out
    expected = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    assert np.abs(y.numpy()[200:-200] - expected[200:-200]).max() < 2e-3
    batch = torch.stack([x, -0.5 * x])
    out = resample_sinc_hann(batch, sr_in, sr_out)
    assert torch.allclose(out[0], y, atol=1e-7) and torch.allclose(out[1], -0.5 * y, atol=1e-7)
    assert resample_sinc_hann(x, 16000, 16000) is x
    with pytest.raises(ValueError):
        resample_sinc_hann(torch.ones(100, dtype=torch.int64), 16000, 24000)
