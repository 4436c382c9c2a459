"""Marking audio that arrives in pieces (``tts.stream`` / ``astream``).

The original marks whole waveforms and does not stream. A mark needs context on both sides:
each output sample depends on the STFT frames around it (2048-sample windows at 32 kHz), and
each frame's residual on 15 frames (150 ms) either side through the embedder's convolutions.
So :class:`StreamMarker` marks each released stretch inside a window that reaches
``context_s`` back into audio already released and ``lookahead_s`` past what it releases,
and holds that look-ahead back until more audio (or the end) comes. The first release holds
back only ``first_lookahead_s``: a stream's first piece is short (~0.3 s), and a full look-ahead
would keep most of it until the next piece; its last samples then differ from the whole
waveform's marking by up to ~4e-4 (with no look-ahead at all, like the end of a waveform, by
up to 5e-2, a step where the next release joins). Windows start on 10 ms
boundaries (one 32 kHz STFT hop), so their frames and resampling phases line up with those of
the whole waveform: away from a window's edges the marking is the whole waveform's. The last
release cuts the stream to the original's length for the whole (whole 10 ms hops).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np


class WholeMarker(Protocol):
    """What a stream marker needs of the watermarker (``watermarker.PerthWatermarker``, which
    itself marks long files with a StreamMarker: hence a protocol, not an import)."""

    config: Any  # PerthConfig: hop_size, sample_rate

    def mark_whole(self, samples: np.ndarray, rate: int) -> np.ndarray: ...

# Measured on speech with a noise floor (tests/watermark/test_streaming.py): from 0.2 s on both
# sides the streamed marking equals the whole waveform's to float rounding (max |d| 5e-7; at
# 0.15 s 4e-5, at 0.1 s 2e-3). Where the audio has digital silence (exact zeros, e.g. the pauses
# between text chunks), resampling a window leaves ~1e-8 there instead of 0; at the original's
# -180 dB floor that turns silent frames into marked ones, and their neighbours' marks move by
# up to ~2e-4 (80 dB SNR to the whole waveform's marking), whatever the context.
CONTEXT_S = 0.3
LOOKAHEAD_S = 0.25
# Measured likewise for the first release (max |d| at its junction): 0.05 s 1.4-4.1e-3, 0.1 s
# 0.8-3.8e-4, 0.15 s 0.6-8.8e-6, 0.2 s rounding.
FIRST_LOOKAHEAD_S = 0.1
# Smaller releases only cost window overhead (the audio waits for the next piece instead); the
# first release does not wait: Turbo's first piece leaves ~0.15 s, and holding it until the next
# piece cost its stream 3.5 s of time to first audio on a 2-core CPU (bench/stream.py).
MIN_RELEASE_S = 0.1


class StreamMarker:
    """``feed`` each piece of one stream as it comes, ``final=True`` with (or after) the last;
    each call returns the marked samples that are final, in order. Not thread-safe: one stream,
    one marker."""

    def __init__(self, watermarker: WholeMarker, sample_rate: int, *, context_s: float = CONTEXT_S,
                 lookahead_s: float = LOOKAHEAD_S, first_lookahead_s: float = FIRST_LOOKAHEAD_S,
                 min_release_s: float = MIN_RELEASE_S):
        config = watermarker.config
        if not self.takes(config, sample_rate):
            raise ValueError(f"stream marking needs a whole number of samples per STFT hop "
                             f"({config.hop_size} at {config.sample_rate} Hz); {sample_rate} Hz has none")
        self.watermarker = watermarker
        self.sample_rate = sample_rate
        self.hop = sample_rate * config.hop_size // config.sample_rate
        self.context = self._hops(context_s)
        self.lookahead = max(self.hop, self._hops(lookahead_s))
        self.first_lookahead = self._hops(first_lookahead_s)
        self.min_release = self._hops(min_release_s)
        self._audio = np.zeros(0, dtype=np.float32)  # unmarked audio from sample self._start on
        self._start = 0
        self._released = 0  # samples returned so far: always a whole number of hops
        self._finished = False

    @staticmethod
    def takes(config, sample_rate: int) -> bool:
        """Whether ``sample_rate`` has a whole number of samples per STFT hop (24 kHz: 240)."""
        return (sample_rate * config.hop_size) % config.sample_rate == 0

    def _hops(self, seconds: float) -> int:
        return math.ceil(seconds * self.sample_rate / self.hop) * self.hop

    def feed(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        if self._finished:
            raise RuntimeError("this stream's marker has already released its last samples")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._audio = np.concatenate([self._audio, samples])
        total = self._start + self._audio.size
        if final:
            self._finished = True
            return self._release((total // self.hop) * self.hop)
        if not self._released:  # the first audio of the stream: whatever is ready, at once
            return self._release(((total - self.first_lookahead) // self.hop) * self.hop)
        ready = ((total - self.lookahead) // self.hop) * self.hop
        if ready - self._released < self.min_release:
            return np.zeros(0, dtype=np.float32)
        return self._release(ready)

    def _release(self, end: int) -> np.ndarray:
        if end <= self._released:
            return np.zeros(0, dtype=np.float32)
        window_start = max(self._start, self._released - self.context)
        window = self._audio[window_start - self._start:]
        marked = self.watermarker.mark_whole(window, self.sample_rate)
        out = marked[self._released - window_start:end - window_start]
        self._released = end
        keep_from = max(self._start, end - self.context)
        self._audio = self._audio[keep_from - self._start:]
        self._start = keep_from
        return out
