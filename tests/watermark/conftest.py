"""The watermarker (loaded once) and the original's recordings."""

from pathlib import Path

import numpy as np
import pytest

REFERENCE = np.load(Path(__file__).parent / "data" / "perth_reference.npz")


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2)
                               / np.sum((reference.astype(np.float64) - other) ** 2)))


@pytest.fixture(scope="session")
def watermarker():
    from vllm_chatterbox.watermark import load_watermarker

    return load_watermarker()
