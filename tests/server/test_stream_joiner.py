"""The backend's streamed join equals generate_long's join of the whole (same function, held back)."""

import numpy as np
import pytest

from vllm_chatterbox.engine.long_text import join_with_crossfade
from vllm_chatterbox.server.backend import _StreamJoiner


@pytest.mark.parametrize("lengths", [
    [24000], [5000, 7000, 300, 0, 9000], [100, 50, 2000], [0, 0, 4000, 1200, 1199, 1201, 1], [1200, 1200],
])
def test_streamed_join_equals_the_whole(lengths):
    rng = np.random.default_rng(len(lengths))
    chunks = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    joiner = _StreamJoiner()
    streamed = [joiner.add(chunk) for chunk in chunks]
    streamed.append(joiner.finish())
    np.testing.assert_array_equal(np.concatenate(streamed), join_with_crossfade(chunks, 24000))
    # Everything but the last crossfade's worth of each chunk leaves as soon as the chunk is there.
    assert streamed[0].size == max(0, lengths[0] - 1200)
