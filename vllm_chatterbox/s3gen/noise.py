"""Positional noise: S3Gen's random draws as a function of (seed, position), not of call order.

The original draws its CFM noise and its vocoder excitation noise from one RNG stream per call,
so the values at a frame depend on everything drawn before it. A streamed utterance is computed
in overlapping pieces, in batches with other streams; for its audio to be reproducible, the noise
at a position must be the same whichever piece, batch or chunking computes it. Here every frame
(CFM: 80 values per 50 Hz mel frame; vocoder: harmonics x 480 samples per frame) has its own
generator seed derived from (seed, kind, frame index), drawn on the CPU so devices agree too.

``S3Gen.inference(..., seeds=...)`` draws this way as well, so a streamed result and a one-shot
result for the same seed start from the same noise.
"""

from __future__ import annotations

import math

import torch

_MASK64 = (1 << 64) - 1
_FLOW, _SOURCE, _PHASES = 1, 2, 3


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _position_seed(seed: int, kind: int, index: int) -> int:
    """A well-mixed 63-bit generator seed for one (seed, kind, index) triple."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ kind) ^ (index & _MASK64)) >> 1


def _per_position(seed: int, kind: int, start: int, stop: int, rows: int, cols: int) -> torch.Tensor:
    """Standard normals (rows, cols * (stop - start)): one (rows, cols) block per index in [start, stop)."""
    if start < 0 or stop < start:
        raise ValueError(f"positions must satisfy 0 <= start <= stop, got [{start}, {stop})")
    g = torch.Generator()
    blocks = []
    for index in range(start, stop):
        g.manual_seed(_position_seed(seed, kind, index))
        blocks.append(torch.randn(rows, cols, generator=g))
    if not blocks:
        return torch.zeros(rows, 0)
    return torch.cat(blocks, dim=1)


def flow_noise(seed: int, start: int, stop: int, n_mels: int = 80) -> torch.Tensor:
    """CFM initial noise (n_mels, stop - start) for flow frames [start, stop).

    Frame positions count the flow's whole frame grid: 2 per prompt token, then 2 per speech
    token (the voice's prompt frames come first)."""
    return _per_position(seed, _FLOW, start, stop, n_mels, 1)


def source_noise(seed: int, start_frame: int, stop_frame: int, harmonics: int, samples_per_frame: int) -> torch.Tensor:
    """Vocoder excitation noise (harmonics, samples_per_frame * frames) for generated mel frames [start, stop)."""
    return _per_position(seed, _SOURCE, start_frame, stop_frame, harmonics, samples_per_frame)


def source_phases(seed: int, harmonics: int) -> torch.Tensor:
    """Random start phases (harmonics, 1), uniform in [-pi, pi), one set per utterance."""
    g = torch.Generator().manual_seed(_position_seed(seed, _PHASES, 0))
    return -math.pi + torch.rand(harmonics, 1, generator=g) * (2 * math.pi)
