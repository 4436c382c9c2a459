"""Spectral front ends of the voice networks, in torch.

Each function reproduces the numerics of what the original calls (librosa's slaney mel
filterbank and STFT, Matcha's 24 kHz log-mel, the S3 tokenizer log-mel, torchaudio's Kaldi
fbank, librosa's silence trim), so the networks see the same inputs as in the original.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from vllm_chatterbox.config import S3GEN_SAMPLE_RATE, VoiceEncoderConfig

# S3Gen's prompt mel (Matcha/CosyVoice settings), fixed by the released model.
PROMPT_MEL_SAMPLE_RATE = S3GEN_SAMPLE_RATE
PROMPT_MEL_N_FFT = 1920
PROMPT_MEL_HOP = 480
PROMPT_MEL_BINS = 80
PROMPT_MEL_FMAX = 8000.0


# ---------------------------------------------------------------------------------------
# Slaney mel filterbank (librosa.filters.mel with htk=False, norm="slaney")

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + math.log(hz / _MIN_LOG_HZ) / _LOGSTEP
    return hz / _F_SP


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    linear = _F_SP * mels
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return torch.where(mels >= _MIN_LOG_MEL, log_part, linear)


@lru_cache(maxsize=16)
def _slaney_mel_cpu(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    # librosa computes the triangles in float64, stores them in float32, then applies the
    # float64 area normalisation to the float32 values; mirror that so results are bit-equal.
    fft_freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (1.0 / (n_fft * (1.0 / sample_rate)))
    mel_min, mel_max = _hz_to_mel(fmin), _hz_to_mel(fmax)
    step = (mel_max - mel_min) / (n_mels + 1)
    mel_points = torch.arange(n_mels + 2, dtype=torch.float64) * step + mel_min
    mel_points[-1] = mel_max
    edges = _mel_to_hz(mel_points)
    widths = edges[1:] - edges[:-1]
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    triangles = torch.clamp(torch.minimum(lower, upper), min=0.0).to(torch.float32)
    area_norm = 2.0 / (edges[2:] - edges[:-2])
    return (triangles.to(torch.float64) * area_norm[:, None]).to(torch.float32)


def slaney_mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32, equal to ``librosa.filters.mel`` defaults."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    return _slaney_mel_cpu(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax).to(device)


@lru_cache(maxsize=16)
def _hann_cpu(n: int) -> torch.Tensor:
    return torch.hann_window(n)


# ---------------------------------------------------------------------------------------
# S3Gen prompt mel (24 kHz, 80 bins, natural log) -> prompt_feat


def prompt_mel_spectrogram(wav24: torch.Tensor) -> torch.Tensor:
    """Log-mel of 24 kHz audio (B, N) or (N,) -> (B, 80, N // 480), as S3Gen's ``mel_spectrogram``."""
    if wav24.dim() == 1:
        wav24 = wav24[None]
    pad = (PROMPT_MEL_N_FFT - PROMPT_MEL_HOP) // 2
    if wav24.shape[-1] <= pad:
        raise ValueError(f"audio too short for the prompt mel: {wav24.shape[-1]} samples")
    padded = F.pad(wav24[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(
        padded,
        PROMPT_MEL_N_FFT,
        hop_length=PROMPT_MEL_HOP,
        win_length=PROMPT_MEL_N_FFT,
        window=_hann_cpu(PROMPT_MEL_N_FFT).to(device=wav24.device, dtype=wav24.dtype),
        center=False,
        return_complex=True,
    )
    spec = torch.view_as_real(spec)
    magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    fbank = slaney_mel_filterbank(
        PROMPT_MEL_SAMPLE_RATE, PROMPT_MEL_N_FFT, PROMPT_MEL_BINS, 0.0, PROMPT_MEL_FMAX, wav24.device
    )
    mel = torch.matmul(fbank.to(wav24.dtype), magnitude)
    return torch.log(torch.clamp(mel, min=1e-5))


# ---------------------------------------------------------------------------------------
# Voice-encoder mel (16 kHz, 40 bins, power, no log)


def voice_encoder_mel(wav16: torch.Tensor, cfg: VoiceEncoderConfig) -> torch.Tensor:
    """Power mel of a 1-D 16 kHz clip -> (1 + N // hop, n_mels) float32, as the VE's melspec."""
    # librosa runs the windowed FFT in float64 and stores complex64; do the same.
    spec = torch.stft(
        wav16.to(torch.float64),
        cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=_hann_cpu(cfg.win_length).to(device=wav16.device, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).to(torch.complex64)
    power = spec.abs() ** 2
    fbank = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, wav16.device)
    return (fbank @ power).T.contiguous()


def trim_silence(
    wav: torch.Tensor, top_db: float = 20.0, frame_length: int = 2048, hop_length: int = 512
) -> torch.Tensor:
    """``librosa.effects.trim(wav, top_db)[0]`` for a 1-D clip: cut leading/trailing frames whose
    RMS is more than ``top_db`` below the loudest frame."""
    x = wav.to(torch.float64)
    padded = F.pad(x, (frame_length // 2, frame_length // 2))
    frames = padded.unfold(0, frame_length, hop_length)
    power = frames.pow(2).mean(dim=1)
    # dB of the RMS relative to the loudest frame, with librosa's amin of 1e-5 (power 1e-10).
    db = 10.0 * torch.log10(torch.clamp(power, min=1e-10)) - 10.0 * torch.log10(
        torch.clamp(power.max(), min=1e-10)
    )
    loud = torch.nonzero(db > -top_db).flatten()
    if loud.numel() == 0:
        return wav[:0]
    start = int(loud[0]) * hop_length
    end = min(wav.shape[0], (int(loud[-1]) + 1) * hop_length)
    return wav[start:end]


# ---------------------------------------------------------------------------------------
# S3 tokenizer log-mel (16 kHz, 128 bins, log10, dynamic-range clamp)


def s3_log_mel(
    wav16: torch.Tensor, mel_filters: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int
) -> torch.Tensor:
    """1-D 16 kHz clip -> (n_mels, N // hop) log-mel; the last STFT frame is dropped."""
    spec = torch.stft(wav16, n_fft, hop_length, window=window, return_complex=True)
    power = spec[..., :-1].abs() ** 2
    log_mel = torch.clamp(mel_filters @ power, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return (log_mel + 4.0) / 4.0


# ---------------------------------------------------------------------------------------
# Kaldi fbank (torchaudio.compliance.kaldi.fbank defaults) for CAMPPlus

_KALDI_EPS = torch.finfo(torch.float32).eps


def _kaldi_mel(hz: float) -> float:
    return 1127.0 * math.log(1.0 + hz / 700.0)


@lru_cache(maxsize=8)
def _kaldi_mel_banks_cpu(num_bins: int, padded_window: int, sample_rate: float,
                         low_freq: float, high_freq: float) -> torch.Tensor:
    # Evaluated in float32 like torchaudio; a zero column is appended for the Nyquist bin.
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    bin_width = sample_rate / padded_window
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = (mel_low + index * delta).to(torch.float32)
    center = (mel_low + (index + 1.0) * delta).to(torch.float32)
    right = (mel_low + (index + 2.0) * delta).to(torch.float32)
    fft_mel = 1127.0 * (1.0 + bin_width * torch.arange(padded_window // 2, dtype=torch.float32) / 700.0).log()
    fft_mel = fft_mel.unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def kaldi_fbank(
    wav16: torch.Tensor,
    num_mel_bins: int = 80,
    sample_rate: float = 16000.0,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Log mel filterbank of a 1-D clip (raw [-1, 1] scale) -> (frames, num_mel_bins).

    Kaldi defaults: povey window, no dither, per-frame DC removal, pre-emphasis, snip_edges,
    power spectrum zero-padded to a power-of-two FFT, floor at float32 epsilon before the log.
    """
    window_size = int(sample_rate * frame_length_ms * 0.001)
    window_shift = int(sample_rate * frame_shift_ms * 0.001)
    if wav16.dim() != 1:
        raise ValueError(f"kaldi_fbank expects a 1-D waveform, got shape {tuple(wav16.shape)}")
    if wav16.shape[0] < window_size:
        raise ValueError(f"audio too short for a fbank frame: {wav16.shape[0]} < {window_size} samples")
    padded_window = 1 << (window_size - 1).bit_length()
    frames = wav16.unfold(0, window_size, window_shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * previous
    povey = torch.hann_window(window_size, periodic=False, device=wav16.device, dtype=wav16.dtype).pow(0.85)
    frames = F.pad(frames * povey, (0, padded_window - window_size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = _kaldi_mel_banks_cpu(num_mel_bins, padded_window, float(sample_rate), low_freq, high_freq)
    mel = torch.mm(power, banks.to(device=wav16.device, dtype=wav16.dtype).T)
    return torch.clamp(mel, min=_KALDI_EPS).log()
