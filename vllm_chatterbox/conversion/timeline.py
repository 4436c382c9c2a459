"""Joining converted pieces on the source's timeline.

Piece i of a source starts at S3 token ``k_i`` (its first sample is 640 k_i at 16 kHz), so its
audio belongs at 24 kHz sample ``960 k_i`` of the output, where the whole source converted at
once would have it. S3Gen makes ``480 * (2 * (Tp + m) - Tm)`` samples of m tokens (Tp / Tm: the
voice's prompt tokens / mel frames), ``960 m - gap`` with ``gap = 480 * (Tm - 2 Tp)``: 20 ms
short for the voices the voice builder makes and the released ``conds.pt`` (Tm = 2 Tp + 1).
Each piece is placed at its start: the joined audio has exactly the length of the whole source
converted at once, and the timing of every piece (what someone dubbing a video needs).

At every seam the piece before fades out and the piece after fades in with ``generate_long``'s
equal-power fades (:func:`vllm_chatterbox.pipeline.long_text.fade_curves`, 50 ms by default),
with the gap between them; for gap > 0 this is exactly
:func:`~vllm_chatterbox.pipeline.long_text.join_with_crossfade` with ``pause`` = the gap.
A voice with a negative gap (a hand-made prompt with more tokens than half its mel frames) makes
pieces overlap their successors by that much; the faded audio is summed there.
"""

from __future__ import annotations

import numpy as np

from vllm_chatterbox.pipeline.long_text import fade_curves


class TimelineJoiner:
    """Pieces placed at given output offsets, with fades at the seams; ``add`` pieces in order,
    each returning the samples that are final; ``finish`` returns the rest."""

    def __init__(self, starts: list[int], crossfade_samples: int):
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"piece starts must begin at 0 and increase, got {starts!r}")
        self.starts = list(starts)
        self.fade = int(crossfade_samples)
        self._next = 0  # index of the next piece
        self._emitted = 0  # output samples returned so far
        self._pending = np.zeros(0, dtype=np.float32)  # output from sample `_emitted` on

    def add(self, wav: np.ndarray) -> np.ndarray:
        index = self._next
        if index >= len(self.starts):
            raise ValueError(f"all {len(self.starts)} pieces were added already")
        wav = np.array(wav, dtype=np.float32).reshape(-1)
        if index > 0:
            n = min(self.fade, wav.size)
            wav[:n] *= fade_curves(n)[0]
        if index < len(self.starts) - 1:
            n = min(self.fade, wav.size)
            wav[wav.size - n:] *= fade_curves(n)[1]
        offset = self.starts[index] - self._emitted
        end = offset + wav.size
        if end > self._pending.size:
            self._pending = np.concatenate([self._pending, np.zeros(end - self._pending.size, dtype=np.float32)])
        self._pending[offset:end] += wav
        self._next += 1
        if self._next == len(self.starts):
            return self._release(self._pending.size)
        # Later pieces start at or after the next start: everything before it is final.
        return self._release(self.starts[self._next] - self._emitted)

    def finish(self) -> np.ndarray:
        if self._next != len(self.starts):
            raise ValueError(f"{len(self.starts) - self._next} of {len(self.starts)} pieces were never added")
        return self._release(self._pending.size)

    def _release(self, count: int) -> np.ndarray:
        count = max(0, count)
        if count > self._pending.size:
            self._pending = np.concatenate([self._pending, np.zeros(count - self._pending.size, dtype=np.float32)])
        out, self._pending = self._pending[:count], self._pending[count:]
        self._emitted += count
        return out


def join_on_timeline(wavs: list[np.ndarray], starts: list[int], crossfade_samples: int) -> np.ndarray:
    """All pieces at once through :class:`TimelineJoiner`."""
    if len(wavs) != len(starts):
        raise ValueError(f"{len(wavs)} pieces for {len(starts)} starts")
    joiner = TimelineJoiner(starts, crossfade_samples)
    parts = [joiner.add(wav) for wav in wavs]
    parts.append(joiner.finish())
    return np.concatenate(parts)
