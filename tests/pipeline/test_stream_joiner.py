"""StreamJoiner: the incremental join equals join_with_crossfade of the whole chunks."""

import numpy as np
import pytest

from vllm_chatterbox.pipeline.long_text import StreamJoiner, join_with_crossfade


@pytest.mark.parametrize("pause_ms", [0.0, 3.0, 100.0])
def test_streamed_join_equals_whole_join(pause_ms):
    rng = np.random.default_rng(int(pause_ms))
    for _ in range(100):
        # Chunk sizes around the 1200-sample fade: empty, shorter than it, longer.
        chunks = [rng.standard_normal(rng.integers(0, 3000)).astype(np.float32) for _ in range(rng.integers(1, 5))]
        joiner = StreamJoiner(24000, 50.0, pause_ms)
        out = []
        for chunk in chunks:
            for piece in np.split(chunk, np.sort(rng.integers(0, chunk.size + 1, rng.integers(0, 4)))):
                out.append(joiner.feed(piece))
            out.append(joiner.end_chunk())
        out.append(joiner.finish())
        expected = join_with_crossfade(chunks, 24000, 50.0, pause_ms)
        np.testing.assert_allclose(np.concatenate(out), expected, atol=1e-6, rtol=0)


def test_only_a_fade_is_held_back():
    joiner = StreamJoiner(24000, 50.0, 100.0)
    assert joiner.feed(np.ones(5000, np.float32)).size == 5000 - 1200
    assert joiner.end_chunk().size == 0  # the end waits for the next chunk's fade
    assert joiner.feed(np.ones(2000, np.float32)).size == 1200 + 2400 + 2000 - 1200
    assert joiner.finish().size == 1200
