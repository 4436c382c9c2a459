"""Shared fixtures for the voice tests: the tiny checkpoint and the original's voice2 outputs."""

from __future__ import annotations


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
