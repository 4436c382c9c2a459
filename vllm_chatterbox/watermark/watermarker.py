"""Marking and detection: ``resemble-perth``'s ``PerthImplicitWatermarker`` without torchaudio.

``mark`` is the original's ``apply_watermark``: resample to 32 kHz (soxr HQ), STFT, the
network's residual added to the low bins' log magnitude, inverse STFT with the original phase,
resample back. Like the original, the result drops the samples of the last incomplete 10 ms
STFT hop (at 24 kHz: ``240 * (n // 240)`` samples come back). ``confidence`` is the original's
``get_watermark(..., round=False)``: the detector's score clipped to [0, 1]; the original's
rounded answer is ``confidence > 0.5`` (:func:`is_marked`).

The original works on the whole waveform at once, and its memory grows with the length (about
2 GB at the peak for 5 minutes, 22 GB for 15). Audio up to :data:`WHOLE_S` (60 s; the original
speaks at most 40 s per call) is processed whole, exactly so. Longer audio is marked in
overlapping windows of at most that length, aligned to the STFT hops (as streams are marked,
:mod:`vllm_chatterbox.watermark.streaming`), and detected as the length-weighted mean of the
confidences of equal windows of at most 60 s.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from vllm_chatterbox.config import PerthConfig
from vllm_chatterbox.voice.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from vllm_chatterbox.watermark.network import PerthNet, load_perth_net
from vllm_chatterbox.watermark.spectral import Spectrogram, resample_for_detection, resample_for_marking
from vllm_chatterbox.watermark.streaming import LOOKAHEAD_S, StreamMarker

logger = logging.getLogger(__name__)

# Longest audio processed in one piece (marking and detection); longer audio goes in windows.
WHOLE_S = 60.0
# The original's verdict rounds the confidence (torch.round: 0.5 rounds to 0).
DETECTION_THRESHOLD = 0.5


def is_marked(confidence: float) -> bool:
    """The original's verdict: ``round(confidence) == 1``."""
    return confidence > DETECTION_THRESHOLD


class PerthWatermarker:
    """The published Perth network on one device (the original runs it on the CPU)."""

    def __init__(self, network: PerthNet):
        self.network = network
        self.config: PerthConfig = network.config
        self.device = next(network.parameters()).device
        self.spectrogram = Spectrogram(self.config, self.device)

    @classmethod
    def load(cls, checkpoint=None, device: str | torch.device = "cpu") -> "PerthWatermarker":
        """The installed resemble-perth's checkpoint (or ``checkpoint``, a file in its format)."""
        return cls(load_perth_net(PerthConfig(), checkpoint, device))

    def mark(self, audio, sample_rate: int) -> np.ndarray:
        """The marked float32 waveform at ``sample_rate`` (see the module docstring for its length).

        Audio too short for one STFT frame at 32 kHz (under 32 ms), where the original fails,
        comes back unmarked (a warning is logged unless it is empty)."""
        samples, rate = check_audio(audio, sample_rate)
        if samples.size <= WHOLE_S * rate or not StreamMarker.takes(self.config, rate):
            return self.mark_whole(samples, rate)
        # A file is not a stream: its first window gets the full look-ahead too (the stream's
        # shorter first look-ahead trades exactness at one junction for an earlier first piece).
        marker = StreamMarker(self, rate, first_lookahead_s=LOOKAHEAD_S)
        step = int(WHOLE_S * rate) - marker.context - marker.lookahead
        pieces = [marker.feed(samples[start:start + step]) for start in range(0, samples.size, step)]
        pieces.append(marker.feed(samples[:0], final=True))
        return np.concatenate(pieces)

    def mark_whole(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """:meth:`mark` of checked samples in one piece, whatever their length (the original's way)."""
        perth_rate = self.config.sample_rate
        signal = resample_for_marking(samples, rate, perth_rate)
        if signal.size < self.spectrogram.min_samples():
            if samples.size:
                logger.warning("%d samples (%.3f s) are too short to carry the watermark; left unmarked",
                               samples.size, samples.size / rate)
            return samples.copy()
        with torch.inference_mode():
            magnitude, phase = self.spectrogram.analyse(torch.from_numpy(signal).to(self.device))
            marked = self.network.embed(magnitude[None])[0]
            signal = self.spectrogram.synthesise(marked, phase).cpu().numpy()
        return resample_for_marking(signal, perth_rate, rate)

    def confidence(self, audio, sample_rate: int) -> float:
        """How sure the detector is that ``audio`` carries the mark, in [0, 1].

        Digital silence carries no mark and gives 0.0 (the original returns NaN there)."""
        samples, rate = check_audio(audio, sample_rate)
        windows = math.ceil(samples.size / (WHOLE_S * rate))
        if windows > 1:
            bounds = np.linspace(0, samples.size, windows + 1).round().astype(int)
            scores = [self._confidence_whole(samples[a:b], rate) for a, b in zip(bounds, bounds[1:])]
            return float(np.average(scores, weights=np.diff(bounds)))
        return self._confidence_whole(samples, rate)

    def _confidence_whole(self, samples: np.ndarray, rate: int) -> float:
        perth_rate = self.config.sample_rate
        signal = resample_for_detection(samples, rate, perth_rate)
        if signal.size < self.spectrogram.min_samples():
            shortest = math.ceil(self.spectrogram.min_samples() * rate / perth_rate)
            raise ValueError(f"audio is too short to detect a watermark: {samples.size} samples at {rate} Hz "
                             f"({samples.size / rate:.3f} s); at least {shortest} are needed")
        with torch.inference_mode():
            magnitude, _ = self.spectrogram.analyse(torch.from_numpy(signal).to(self.device))
            score = float(self.network.detect(magnitude[None])[0].clamp(0.0, 1.0))
        return 0.0 if math.isnan(score) else score


def check_audio(audio, sample_rate) -> tuple[np.ndarray, int]:
    """(1-D float32 samples, rate) or a ValueError naming the problem."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    samples = np.asarray(audio)
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("audio contains non-finite samples (NaN or inf)")
    return np.ascontiguousarray(samples, dtype=np.float32), int(sample_rate)
