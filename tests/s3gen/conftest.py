"""Shared fixtures for the S3Gen tests: the tiny checkpoint, its voices and the recorded cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.paths import FIXTURE_CKPT, FIXTURE_REF
from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.voice.voice import Voice


def _load_case(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURE_REF / f"{name}.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def load_case():
    """Loader of a recorded case of ``ref/`` by name (e.g. ``s3gen_30tok_n10``) as a dict of arrays."""
    return _load_case


@pytest.fixture(scope="session")
def official_state_dict() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE_CKPT / "s3gen.safetensors"))


@pytest.fixture(scope="session")
def model() -> S3Gen:
    return S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_config())


@pytest.fixture(scope="session")
def builtin_voice() -> Voice:
    return Voice.load(FIXTURE_CKPT / "conds.pt")


@pytest.fixture(scope="session")
def voice2(builtin_voice) -> Voice:
    """The second recorded voice (its S3Gen half; the T3 half is borrowed, S3Gen ignores it)."""
    with np.load(FIXTURE_REF / "voice_voice2.npz") as data:
        return Voice(
            speaker_emb=builtin_voice.speaker_emb,
            cond_prompt_speech_tokens=builtin_voice.cond_prompt_speech_tokens,
            exaggeration=0.5,
            prompt_token=torch.from_numpy(data["gen_prompt_token"]).long(),
            prompt_feat=torch.from_numpy(data["gen_prompt_feat"]),
            embedding=torch.from_numpy(data["xvector"]),
        )
