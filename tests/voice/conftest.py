"""Shared fixtures for the voice tests: the tiny checkpoint and the original's voice2 outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.voice.campplus import CAMPPlus
from vllm_chatterbox.voice.s3_tokenizer import S3Tokenizer
from vllm_chatterbox.voice.voice_encoder import VoiceEncoder

from tests.paths import FIXTURE_DIR

CKPT = FIXTURE_DIR / "ckpt"
BUILTIN_WAV = FIXTURE_DIR / "audio" / "builtin_voice_src_24k.wav"
VOICE2_WAV = FIXTURE_DIR / "audio" / "voice2_24k.wav"


@pytest.fixture(scope="session")
def ref() -> dict[str, np.ndarray]:
    """Arrays of ``ref/voice_voice2.npz`` (README 2c)."""
    with np.load(FIXTURE_DIR / "ref" / "voice_voice2.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def s3gen_state() -> dict[str, torch.Tensor]:
    return load_file(str(CKPT / "s3gen.safetensors"))


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="session")
def tokenizer(s3gen_state) -> S3Tokenizer:
    return S3Tokenizer.from_state_dict(strip_prefix(s3gen_state, "tokenizer."), tiny_config().s3_tokenizer)


@pytest.fixture(scope="session")
def campplus(s3gen_state) -> CAMPPlus:
    return CAMPPlus.from_state_dict(strip_prefix(s3gen_state, "speaker_encoder."), tiny_config().campplus)


@pytest.fixture(scope="session")
def voice_encoder() -> VoiceEncoder:
    return VoiceEncoder.from_state_dict(load_file(str(CKPT / "ve.safetensors")), tiny_config().voice_encoder)


def fsq_margins(tokenizer: S3Tokenizer, wav16: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Per token, how far its closest FSQ digit lies from a rounding boundary (|0.999 tanh| = 0.5)."""
    values, _ = tokenizer.fsq_values(*tokenizer.padded_log_mels([wav16], max_len))
    return ((values.abs() - 0.5).abs()).amin(dim=-1)[0]


def assert_tokens_match(ours: torch.Tensor, expected: torch.Tensor, margins: torch.Tensor, tol: float = 1e-4):
    """Tokens must be equal except where a digit sits within ``tol`` of its rounding boundary
    (README 3: a faithful fp32 re-implementation may round those the other way)."""
    ours, expected = ours.flatten().long(), expected.flatten().long()
    assert ours.shape == expected.shape
    differ = torch.nonzero(ours != expected).flatten()
    for i in differ.tolist():
        assert margins[i] < tol, (
            f"token {i}: {int(ours[i])} != {int(expected[i])} with FSQ margin {float(margins[i]):.2e}"
        )


@dataclass(frozen=True)
class RecordingBound:
    """How far a spectral feature may lie from the original's fp32 recording of it.

    The recording is itself fp32: our float64 run of the same formula lies up to ``fp64_max``
    from it (measured; the float64 run's own rounding is negligible, so this holds on any CPU),
    most in near-empty bands where the log amplifies the FFT's and matmul's rounding. torch runs
    both in MKL, whose kernels (and so summation orders) follow the CPU, not ATEN_CPU_CAPABILITY:
    an fp32 run is bit-equal to the recording on AMD EPYC (AVX2) but not on Intel Xeon
    (AVX-512). An fp32 run as exact as the recording may lie up to about twice the recording's
    error from it: ``fp32_max`` = 2 x ``fp64_max``. The bound on the mean |diff| (both runs)
    stays tight: rounding scatters, a wrong formula shifts many values at once.
    """

    fp64_max: float
    mean: float

    @property
    def fp32_max(self) -> float:
        return 2.0 * self.fp64_max


# S3Gen's prompt mel (natural log, values in [-11.5, 2]). Recording vs our float64 run: max 2.2e-5
# (voice2) and 3.7e-5 (builtin), mean 3.6e-7 / 6.7e-7. Ours in fp32 vs the recording: AMD EPYC
# (AVX2) 0.0; Intel Xeon (AVX-512) max 2.8e-5 / 5.9e-5, mean 4.6e-7 / 8.7e-7.
PROMPT_MEL_BOUND = RecordingBound(fp64_max=5e-5, mean=2e-6)
# S3 tokenizer log-mel ((log10 + 4) / 4, values of order 1), voice2's first 6 s. Recording vs
# float64: max 3.9e-5, mean 1.9e-7. fp32: AVX2 0.0; AVX-512 max 2.5e-5, mean 2.3e-7.
S3_LOG_MEL_BOUND = RecordingBound(fp64_max=5e-5, mean=5e-7)
# Kaldi fbank (natural log, per-bin mean removed) for CAMPPlus; its low bands are nearly empty
# (power down to the 1.2e-7 floor). Recording vs float64: max 3.8e-4, mean 2.2e-6. fp32: AVX2 max
# 3.8e-5, mean 6.7e-8; AVX-512 max 4.3e-4, mean 1.9e-6.
KALDI_FBANK_BOUND = RecordingBound(fp64_max=5e-4, mean=5e-6)


def assert_matches_recording(ours: torch.Tensor, recorded, bound: RecordingBound) -> None:
    """``ours`` (fp32, or a float64 run) within ``bound`` of the recorded fp32 array."""
    recorded = torch.as_tensor(recorded).double()
    assert ours.shape == recorded.shape, (ours.shape, recorded.shape)
    diff = (ours.double() - recorded).abs()
    max_abs = bound.fp64_max if ours.dtype == torch.float64 else bound.fp32_max
    assert diff.max().item() <= max_abs and diff.mean().item() <= bound.mean, (
        f"{ours.dtype}: max |diff| {diff.max().item():.2e} (bound {max_abs:.0e}), "
        f"mean {diff.mean().item():.2e} (bound {bound.mean:.0e})"
    )
