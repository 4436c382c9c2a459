"""Turbo's reference loudness normalisation: to -27 LUFS (ITU BS.1770 integrated loudness).

The original (``ChatterboxTurboTTS.norm_loudness``) measures with ``pyloudnorm`` and scales the
24 kHz reference by the gain when it is finite and positive (silence measures -inf LUFS and is
left as is). Its NumPy 1.x multiplies the float32 samples by the gain rounded to float32; we do
the same explicitly, so NumPy 2 gives the same samples.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_LUFS = -27.0


def integrated_loudness(wav: np.ndarray, sample_rate: int) -> float:
    import pyloudnorm  # deferred: only Turbo voices need it

    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(wav))


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """float32 samples scaled to ``target_lufs``; unchanged when the gain is not finite and positive."""
    with np.errstate(divide="ignore"):
        loudness = integrated_loudness(wav, sample_rate)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    if not (math.isfinite(gain) and gain > 0.0):
        return wav
    return wav * np.float32(gain)
