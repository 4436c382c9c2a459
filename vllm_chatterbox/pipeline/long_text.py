"""Joining the waveforms of consecutive text chunks into one.

At each joint the audio so far fades out over ``crossfade_ms`` and the next chunk fades in
over ``crossfade_ms``: overlapping (a crossfade) when ``pause_ms`` is 0, else with ``pause_ms``
of silence between the two fades.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vllm_chatterbox.config import S3GEN_SAMPLE_RATE
from vllm_chatterbox.params import is_integer, is_number

# Text tokens per chunk. English prose runs about 1.6 characters per text token, so 150 tokens
# is about 240 characters (the original is at ease up to ~300) or ~16 s of speech at ~15
# characters/s: ~400 speech tokens at 25 per second, well inside the default max_new_tokens of
# 1000 (40 s) even for a voice speaking twice as slowly.
DEFAULT_MAX_CHUNK_TOKENS = 150
DEFAULT_CROSSFADE_MS = 50.0
# A short breath between chunks, on top of the silence the model leaves at each end.
DEFAULT_PAUSE_MS = 100.0


def check_join_options(sample_rate: int, crossfade_ms: float, pause_ms: float) -> None:
    if not is_integer(sample_rate) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    for name, value in (("crossfade_ms", crossfade_ms), ("pause_ms", pause_ms)):
        if not is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def fade_curves(n: int, equal_power: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) over n samples, sampled at sample midpoints.

    Equal power (sin/cos, squares sum to 1) keeps the loudness of unrelated signals steady;
    raised cosine (the two sum to 1) passes a signal crossfaded with itself unchanged.
    """
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    if equal_power:
        fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
    else:
        fade_in = 0.5 - 0.5 * np.cos(np.pi * t)
        fade_out = 1.0 - fade_in
    return fade_in.astype(np.float32), fade_out.astype(np.float32)


def join_with_crossfade(wavs: Sequence[np.ndarray], sample_rate: int = S3GEN_SAMPLE_RATE,
                        crossfade_ms: float = DEFAULT_CROSSFADE_MS, pause_ms: float = DEFAULT_PAUSE_MS, *,
                        equal_power: bool = True) -> np.ndarray:
    """One float32 waveform from consecutive 1-D chunks (empty chunks are skipped).

    The output has ``sum(len) + (chunks - 1) * pause`` samples with a pause, and
    ``sum(len) - (chunks - 1) * crossfade`` without one when every chunk is longer than the
    crossfade. A fade never reaches past the chunk it shapes, except that an overlap next to a
    short chunk reaches as far back as the audio so far goes.
    """
    if isinstance(wavs, (str, bytes)) or not isinstance(wavs, Sequence) or len(wavs) == 0:
        raise ValueError("wavs must be a non-empty sequence of 1-D waveforms")
    check_join_options(sample_rate, crossfade_ms, pause_ms)
    sample_rate, crossfade_ms, pause_ms = int(sample_rate), float(crossfade_ms), float(pause_ms)
    chunks = []
    for i, wav in enumerate(wavs):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"wavs[{i}] must be 1-D, got shape {wav.shape}")
        if wav.size:
            chunks.append(wav)
    if not chunks:
        return np.zeros(0, dtype=np.float32)

    fade = round(crossfade_ms * sample_rate / 1000)
    gap = round(pause_ms * sample_rate / 1000)
    out = np.zeros(sum(w.size for w in chunks) + gap * (len(chunks) - 1), dtype=np.float32)
    out[:chunks[0].size] = chunks[0]
    end = chunks[0].size  # end of the audio placed so far
    for previous, wav in zip(chunks, chunks[1:]):
        if gap == 0:
            n = min(fade, end, wav.size)
            fade_in, fade_out = fade_curves(n, equal_power)
            out[end - n:end] = out[end - n:end] * fade_out + wav[:n] * fade_in
            out[end:end + wav.size - n] = wav[n:]
            end += wav.size - n
        else:
            n = min(fade, previous.size)
            out[end - n:end] *= fade_curves(n, equal_power)[1]
            n = min(fade, wav.size)
            start = end + gap
            out[start:start + n] = wav[:n] * fade_curves(n, equal_power)[0]
            out[start + n:start + wav.size] = wav[n:]
            end = start + wav.size
    return out[:end]


class StreamJoiner:
    """:func:`join_with_crossfade` for audio that arrives in pieces, chunk by chunk.

    ``feed`` the current chunk's pieces, ``end_chunk`` after each chunk, ``finish`` at the end;
    each call returns the samples that are final. The concatenation of all returns equals
    ``join_with_crossfade`` of the whole chunks. Up to one crossfade of audio is held back:
    the end of a chunk is faded only once the next chunk begins.
    """

    def __init__(self, sample_rate: int = S3GEN_SAMPLE_RATE, crossfade_ms: float = DEFAULT_CROSSFADE_MS,
                 pause_ms: float = DEFAULT_PAUSE_MS, *, equal_power: bool = True):
        check_join_options(sample_rate, crossfade_ms, pause_ms)
        self.fade = round(crossfade_ms * sample_rate / 1000)
        self.gap = round(pause_ms * sample_rate / 1000)
        self.equal_power = equal_power
        self._held = np.zeros(0, dtype=np.float32)  # end of the output, still open to fades
        self._placed = 0  # samples of output so far, held ones included
        self._previous_size = 0  # the last non-empty chunk's length
        self._head: list[np.ndarray] = []  # the current chunk's first samples, until a fade's worth
        self._chunk_size = 0
        self._head_placed = False

    def feed(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        self._chunk_size += samples.size
        if self._head_placed:
            self._append(samples)
        else:
            self._head.append(samples)
            if self._chunk_size >= self.fade:
                self._place_head()
        return self._release(keep=self.fade)

    def end_chunk(self) -> np.ndarray:
        if self._chunk_size and not self._head_placed:
            self._place_head()
        if self._chunk_size:
            self._previous_size = self._chunk_size
        self._chunk_size, self._head_placed = 0, False
        return self._release(keep=self.fade)

    def finish(self) -> np.ndarray:
        self.end_chunk()
        return self._release(keep=0)

    def _place_head(self) -> None:
        wav = np.concatenate(self._head)
        self._head = []
        self._head_placed = True
        if self._placed == 0:  # the first chunk is placed as it is
            self._append(wav)
            return
        if self.gap == 0:
            n = min(self.fade, self._placed, wav.size)
            fade_in, fade_out = fade_curves(n, self.equal_power)
            self._held[self._held.size - n:] = self._held[self._held.size - n:] * fade_out + wav[:n] * fade_in
            self._append(wav[n:])
        else:
            n = min(self.fade, self._previous_size)
            self._held[self._held.size - n:] *= fade_curves(n, self.equal_power)[1]
            self._append(np.zeros(self.gap, dtype=np.float32))
            n = min(self.fade, wav.size)
            head = wav.copy()
            head[:n] *= fade_curves(n, self.equal_power)[0]
            self._append(head)

    def _append(self, samples: np.ndarray) -> None:
        self._held = np.concatenate([self._held, samples])
        self._placed += samples.size

    def _release(self, keep: int) -> np.ndarray:
        cut = max(0, self._held.size - keep)
        out, self._held = self._held[:cut], self._held[cut:]
        return out
