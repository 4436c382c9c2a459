"""Pieces joined on the source's timeline: generate_long's fades at the seams, the whole source's length."""

from __future__ import annotations

import numpy as np
import pytest

from vllm_chatterbox.conversion.timeline import TimelineJoiner, join_on_timeline
from vllm_chatterbox.pipeline.long_text import join_with_crossfade


def _pieces(tokens: list[int], gap: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Pieces of m tokens as S3Gen makes them (960 m - gap samples) and their timeline starts."""
    rng = np.random.default_rng(seed)
    wavs = [rng.uniform(-1, 1, 960 * m - gap).astype(np.float32) for m in tokens]
    starts = list(np.cumsum([0] + [960 * m for m in tokens[:-1]]))
    return wavs, [int(s) for s in starts]


@pytest.mark.parametrize("gap", [480, 960])
def test_equals_generate_longs_join_with_the_gap_as_pause(gap):
    wavs, starts = _pieces([250, 300, 2, 125], gap)
    joined = join_on_timeline(wavs, starts, 1200)
    expected = join_with_crossfade(wavs, 24000, crossfade_ms=50, pause_ms=gap / 24)
    np.testing.assert_array_equal(joined, expected)
    assert joined.size == 960 * sum([250, 300, 2, 125]) - gap  # the whole source's length


def test_pieces_that_fill_their_slot_abut_with_fades():
    wavs, starts = _pieces([100, 50], gap=0)
    joined = join_on_timeline(wavs, starts, 1200)
    assert joined.size == 960 * 150
    ramp = (np.arange(1200) + 0.5) / 1200
    np.testing.assert_allclose(joined[96000 - 1200:96000], wavs[0][-1200:] * np.cos(0.5 * np.pi * ramp), atol=1e-6)
    np.testing.assert_allclose(joined[96000:97200], wavs[1][:1200] * np.sin(0.5 * np.pi * ramp), atol=1e-6)


def test_pieces_longer_than_their_slot_overlap_and_add():
    wavs, starts = _pieces([100, 100], gap=-480)
    joined = join_on_timeline(wavs, starts, 1200)
    assert joined.size == 960 * 200 + 480
    head = wavs[1][:1200] * np.sin(0.5 * np.pi * (np.arange(1200) + 0.5) / 1200).astype(np.float32)
    tail = wavs[0][-1200:] * np.cos(0.5 * np.pi * (np.arange(1200) + 0.5) / 1200).astype(np.float32)
    # Piece 0 covers [0, 96480) and fades out over its last 1200 samples; piece 1 starts at 96000.
    expected = np.zeros(1920, dtype=np.float32)
    expected[:1200] += tail
    expected[720:] += head
    np.testing.assert_allclose(joined[95280:97200], expected, atol=1e-6)
    np.testing.assert_array_equal(joined[:95280], wavs[0][:95280])


def test_streamed_joins_equal_the_whole_join():
    for gap in (480, -480):
        wavs, starts = _pieces([40, 75, 3, 60], gap, seed=2)
        joiner = TimelineJoiner(starts, 1200)
        parts = [joiner.add(w) for w in wavs] + [joiner.finish()]
        np.testing.assert_array_equal(np.concatenate(parts), join_on_timeline(wavs, starts, 1200))
        # Everything before the next piece's start is out once a piece is added.
        assert sum(p.size for p in parts[:2]) == starts[2]


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="begin at 0 and increase"):
        TimelineJoiner([0, 0], 10)
    joiner = TimelineJoiner([0], 10)
    with pytest.raises(ValueError, match="never added"):
        joiner.finish()
    joiner.add(np.ones(5))
    with pytest.raises(ValueError, match="added already"):
        joiner.add(np.ones(5))
