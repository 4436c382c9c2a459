"""Spectral front ends against librosa (computed here) and the original's recorded features."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from vllm_chatterbox.config import VoiceEncoderConfig
from vllm_chatterbox.voice import features
from vllm_chatterbox.voice.audio import load_audio

from .conftest import (
    BUILTIN_WAV,
    KALDI_FBANK_BOUND,
    PROMPT_MEL_BOUND,
    S3_LOG_MEL_BOUND,
    VOICE2_WAV,
    assert_matches_recording,
)

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [
        (16000, 400, 40, 0.0, 8000.0),  # voice encoder
        (16000, 400, 128, 0.0, None),  # S3 tokenizer
        (24000, 1920, 80, 0.0, 8000.0),  # S3Gen prompt mel
        (22050, 1024, 64, 50.0, 7000.0),
    ],
)
def test_slaney_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ours = features.slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert ours.dtype == torch.float32
    # Same float64 arithmetic and the same float32 rounding points: bit-equal.
    np.testing.assert_array_equal(ours.numpy(), expected)


def _librosa_prompt_mel(y: np.ndarray) -> np.ndarray:
    """S3Gen's 24 kHz log-mel written with librosa/numpy (float64 STFT)."""
    padded = np.pad(y.astype(np.float64), 720, mode="reflect")
    spec = librosa.stft(padded, n_fft=1920, hop_length=480, win_length=1920, window="hann", center=False)
    magnitude = np.sqrt(np.abs(spec) ** 2 + 1e-9)
    fbank = librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=8000).astype(np.float64)
    return np.log(np.maximum(fbank @ magnitude, 1e-5))


def test_prompt_mel_matches_fixture_and_librosa(ref):
    wav24, _ = load_audio(VOICE2_WAV)
    wav24 = wav24[:240000]
    ours = features.prompt_mel_spectrogram(torch.from_numpy(wav24))
    assert ours.shape == (1, 80, len(wav24) // 480)
    # The original's recording, from our fp32 and float64 runs (measured numbers: PROMPT_MEL_BOUND).
    assert_matches_recording(ours.transpose(1, 2), ref["gen_prompt_feat"], PROMPT_MEL_BOUND)
    ours64 = features.prompt_mel_spectrogram(torch.from_numpy(wav24).double())
    assert_matches_recording(ours64.transpose(1, 2), ref["gen_prompt_feat"], PROMPT_MEL_BOUND)
    # Independent float64 librosa formulation: only fp32 rounding separates them.
    assert np.abs(ours[0].numpy() - _librosa_prompt_mel(wav24)).max() < 1e-3


def _librosa_ve_mel(y: np.ndarray, cfg: VoiceEncoderConfig) -> np.ndarray:
    spec = librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                        center=True, pad_mode="reflect")
    fbank = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    return np.dot(fbank, np.abs(spec) ** 2).T


def _assert_mel_close(ours: np.ndarray, expected: np.ndarray) -> None:
    # Power mels span ~1e-17 .. 1e2; compare relative to each value, with a floor far below
    # anything audible. Measured: relative 3.3e-5 on values ~1e-16, 1e-6 on loud bins.
    assert ours.shape == expected.shape
    floor = 1e-9 * expected.max()
    assert (np.abs(ours - expected) / (np.abs(expected) + floor)).max() < 1e-4


def test_voice_encoder_mel_matches_fixture_and_librosa(ref):
    cfg = VoiceEncoderConfig()
    trimmed = features.trim_silence(torch.from_numpy(ref["ref16_librosa"]))
    ours = features.voice_encoder_mel(trimmed, cfg).numpy()
    assert ours.shape == (1 + trimmed.numel() // cfg.hop_length, cfg.n_mels)
    _assert_mel_close(ours, ref["ve_mel_trimmed"])
    _assert_mel_close(ours, _librosa_ve_mel(trimmed.numpy(), cfg))


def test_trim_equals_librosa(ref):
    wav24, _ = load_audio(BUILTIN_WAV)
    rng = np.random.default_rng(1)
    padded_tone = np.concatenate([
        1e-4 * rng.standard_normal(7000), 0.5 * np.sin(np.arange(9000) / 7.0), 1e-3 * rng.standard_normal(5123)
    ]).astype(np.float32)
    for y in (ref["ref16_librosa"], wav24, padded_tone):
        expected = librosa.effects.trim(y, top_db=20)[0]
        ours = features.trim_silence(torch.from_numpy(y), top_db=20)
        np.testing.assert_array_equal(ours.numpy(), expected)
    assert len(librosa.effects.trim(padded_tone, top_db=20)[0]) < len(padded_tone)  # it did trim


def _librosa_s3_log_mel(y: np.ndarray) -> np.ndarray:
    spec = librosa.stft(y, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")[:, :-1]
    fbank = librosa.filters.mel(sr=16000, n_fft=400, n_mels=128)
    log_mel = np.log10(np.maximum(fbank @ (np.abs(spec) ** 2), 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return (log_mel + 4.0) / 4.0


def test_s3_log_mel_matches_fixture_and_librosa(ref):
    wav = ref["ref16_librosa"][:96000]
    ours = features.s3_log_mel(torch.from_numpy(wav), features.slaney_mel_filterbank(16000, 400, 128),
                               torch.hann_window(400), 400, 160)
    assert ours.shape == (128, len(wav) // 160)
    # The original's recording, from our fp32 and float64 runs (measured numbers: S3_LOG_MEL_BOUND).
    assert_matches_recording(ours, ref["s3tok_logmel_6s"][0], S3_LOG_MEL_BOUND)
    ours64 = features.s3_log_mel(torch.from_numpy(wav).double(),
                                 features.slaney_mel_filterbank(16000, 400, 128).double(),
                                 torch.hann_window(400, dtype=torch.float64), 400, 160)
    assert_matches_recording(ours64, ref["s3tok_logmel_6s"][0], S3_LOG_MEL_BOUND)
    # librosa's STFT runs in float64 inside; log10 of fp32 power differs by < 1e-5 where it matters.
    assert np.abs(ours.numpy() - _librosa_s3_log_mel(wav)).max() < 1e-4


def test_kaldi_fbank_matches_fixture(ref):
    wav16 = torch.from_numpy(ref["ref16_torchaudio"][0])
    fbank = features.kaldi_fbank(wav16, num_mel_bins=80)
    assert fbank.shape == (1 + (wav16.numel() - 400) // 160, 80)
    # torchaudio.compliance.kaldi.fbank + mean removal in the original; from our fp32 and float64
    # runs (measured numbers: KALDI_FBANK_BOUND).
    for ours in (fbank, features.kaldi_fbank(wav16.double(), num_mel_bins=80)):
        normalised = ours - ours.mean(dim=0, keepdim=True)
        assert_matches_recording(normalised, ref["campplus_fbank"][0], KALDI_FBANK_BOUND)


def test_kaldi_fbank_rejects_bad_input():
    with pytest.raises(ValueError, match="too short"):
        features.kaldi_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="1-D"):
        features.kaldi_fbank(torch.zeros(1, 16000))
