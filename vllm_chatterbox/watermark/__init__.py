"""Resemble AI's Perth implicit watermark, which the original puts on all its output: marking,
detection, and marking of streamed audio.

Our own implementation (plain torch, no torchaudio, so it runs on every install, CPU and CUDA)
of what ``resemble-perth``'s ``PerthImplicitWatermarker`` computes, with its published network
weights, which ship inside the ``resemble-perth`` wheel and are loaded from there (the package
itself is never imported). Equal to the original on the same input to float rounding
(``tests/watermark``).

    marked = apply_watermark(wav, 24000)          # the original's apply_watermark
    confidence = detect(marked, 24000)            # its get_watermark(round=False): ~1.0
    is_marked(confidence)                         # its rounded verdict: True
    detect_file("reply.mp3")                      # a file (path or bytes): Detection(confidence, ...)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

from vllm_chatterbox.watermark.network import INSTALL_HINT
from vllm_chatterbox.watermark.streaming import StreamMarker
from vllm_chatterbox.watermark.watermarker import DETECTION_THRESHOLD, PerthWatermarker, check_audio, is_marked

__all__ = ["DETECTION_THRESHOLD", "INSTALL_HINT", "Detection", "PerthWatermarker", "StreamMarker", "apply_watermark",
           "check_audio", "check_watermark_flag", "detect", "detect_file", "is_marked", "load_watermarker"]


@functools.cache
def _load(device: str) -> PerthWatermarker:
    return PerthWatermarker.load(device=device)


def load_watermarker(device: str | torch.device = "cpu") -> PerthWatermarker:
    """The published watermarker on ``device`` (loaded once per process and device), or a
    RuntimeError saying what is missing."""
    return _load(str(torch.device(device)))


def apply_watermark(audio, sample_rate: int, *, device: str | torch.device = "cpu") -> np.ndarray:
    """``audio`` (1-D float samples) with the Perth mark, float32 at the same rate."""
    return load_watermarker(device).mark(audio, sample_rate)


def detect(audio, sample_rate: int, *, device: str | torch.device = "cpu") -> float:
    """The detector's confidence in [0, 1] that ``audio`` carries the Perth mark
    (``is_marked(confidence)``: above 0.5, the original's verdict)."""
    return load_watermarker(device).confidence(audio, sample_rate)


@dataclass(frozen=True)
class Detection:
    confidence: float  # 0..1
    marked: bool  # the original's verdict, confidence > 0.5
    seconds: float  # the audio's duration
    sample_rate: int  # the file's rate


def detect_file(source: str | os.PathLike | bytes, *, device: str | torch.device = "cpu",
                max_seconds: float | None = None) -> Detection:
    """:func:`detect` on an audio file, a path or its bytes (wav, flac, ogg/opus, mp3; aac, m4a and
    the rest of FFmpeg's formats with PyAV installed); a ValueError names an unreadable file, or
    one longer than ``max_seconds`` (default three hours)."""
    from vllm_chatterbox.watermark.files import MAX_FILE_S, read_audio_file

    samples, rate = read_audio_file(source, max_seconds=MAX_FILE_S if max_seconds is None else max_seconds)
    confidence = detect(samples, rate, device=device)
    return Detection(confidence, is_marked(confidence), samples.size / rate, rate)


def check_watermark_flag(watermark) -> bool:
    if not isinstance(watermark, bool):
        raise ValueError(f"watermark must be True or False, got {watermark!r}")
    return watermark
