"""Our Perth watermark against resemble-perth's own, recorded on speech by
``scripts/record_perth_fixture.py`` (resemble-perth 1.0.1 with torch/torchaudio 2.6.0 and
librosa 0.11.0, in a separate environment: its watermarker cannot load beside our torch).

Measured (2026-12-05), marked waveform against the original's, over the four cases (24 kHz x2,
16 kHz, 48 kHz): on this Xeon's AVX-512 kernels max |d| 1.3e-7 and SNR >= 135.4 dB; forcing
AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) max |d| 4.2e-7 and SNR >= 127.9 dB.
Detection confidences within 1.2e-7 of the original's. The bounds leave about 5x room for
other CPUs' rounding; a real difference in the method moves the waveform ten times further
or more (measured: a symmetric instead of a periodic Hann window 1.9e-5, soxr "VHQ" instead of
"HQ" 2.5e-5, a -179 dB instead of -180 dB floor 3.5e-5, one embedder bias off by 1e-3 3.5e-4).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from tests.paths import FIXTURE_AUDIO
from tests.watermark.conftest import REFERENCE, snr_db

MARKED_MAX_ABS = 2e-6
MARKED_MIN_SNR_DB = 115.0
CONFIDENCE_ATOL = 1e-5

CASES = sorted({key.split("/")[0] for key in REFERENCE.files if "/" in key})


def case_input(name: str) -> tuple[np.ndarray, int]:
    rate = int(REFERENCE[f"{name}/rate"])
    if f"{name}/input" in REFERENCE.files:
        return REFERENCE[f"{name}/input"], rate
    file, start, length = REFERENCE[f"{name}/source"]
    wav, file_rate = soundfile.read(str(FIXTURE_AUDIO / str(file)), dtype="float32")
    assert file_rate == rate
    return wav[int(start):int(start) + int(length)], rate


def test_the_fixture_covers_rates_and_lengths():
    rates = {int(REFERENCE[f"{name}/rate"]) for name in CASES}
    assert rates == {16000, 24000, 48000}
    # Lengths that are not whole 10 ms hops, where the original's output length rule shows.
    assert any(case_input(name)[0].size != REFERENCE[f"{name}/marked"].size for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_marked_waveform_equals_the_original(watermarker, name):
    audio, rate = case_input(name)
    ours = watermarker.mark(audio, rate)
    original = REFERENCE[f"{name}/marked"]
    assert ours.dtype == np.float32
    assert ours.shape == original.shape
    difference = float(np.abs(ours - original).max())
    snr = snr_db(original, ours)
    assert difference <= MARKED_MAX_ABS and snr >= MARKED_MIN_SNR_DB, (difference, snr)
    # What the mark itself changes, for scale: far above that difference.
    common = min(audio.size, original.size)
    assert np.abs(original[:common] - audio[:common]).max() > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_detection_confidences_equal_the_original(watermarker, name):
    audio, rate = case_input(name)
    original_marked = REFERENCE[f"{name}/marked"]
    assert watermarker.confidence(original_marked, rate) == pytest.approx(
        float(REFERENCE[f"{name}/confidence_marked"]), abs=CONFIDENCE_ATOL)
    assert watermarker.confidence(audio, rate) == pytest.approx(
        float(REFERENCE[f"{name}/confidence_input"]), abs=CONFIDENCE_ATOL)


@pytest.mark.parametrize("rates", [(24000, 32000), (32000, 24000), (16000, 32000), (48000, 32000)])
def test_resamplers_are_librosas(rates):
    """Marking uses librosa.resample's default (soxr HQ), detection its res_type='polyphase'."""
    import librosa

    from vllm_chatterbox.watermark.spectral import resample_for_detection, resample_for_marking

    audio = np.random.default_rng(1).standard_normal(12345).astype(np.float32) * 0.1
    rate_in, rate_out = rates
    np.testing.assert_array_equal(resample_for_marking(audio, rate_in, rate_out),
                                  librosa.resample(audio, orig_sr=rate_in, target_sr=rate_out))
    np.testing.assert_array_equal(resample_for_detection(audio, rate_in, rate_out),
                                  librosa.resample(audio, orig_sr=rate_in, target_sr=rate_out, res_type="polyphase"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_marks_as_the_original_does():
    """Not measured (no GPU was lent while this was written): the bounds allow for TF32
    convolutions (cuDNN's default) and CUDA's FFT, far looser than the CPU's."""
    from vllm_chatterbox.watermark import load_watermarker

    cuda = load_watermarker("cuda")
    for name in CASES:
        audio, rate = case_input(name)
        ours = cuda.mark(audio, rate)
        original = REFERENCE[f"{name}/marked"]
        assert ours.shape == original.shape and snr_db(original, ours) >= 60.0
        assert cuda.confidence(original, rate) == pytest.approx(float(REFERENCE[f"{name}/confidence_marked"]),
                                                                abs=1e-3)
