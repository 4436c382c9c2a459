"""The GPT-2 T3 of Turbo / Nano against the original's tiny Turbo checkpoint (the checkpoint and the
session's Turbo engine: ``tests/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.paths import TURBO_CKPT, TURBO_REF
from vllm_chatterbox.voice.voice import Voice

torch.set_num_threads(1)


def turbo_voices() -> dict[str, Voice]:
    """builtin = conds.pt; voice2 = its recorded conditioning arrays."""
    builtin = Voice.load(TURBO_CKPT / "conds.pt")
    with np.load(TURBO_REF / "voice_voice2.npz") as data:
        voice2 = Voice(
            speaker_emb=torch.from_numpy(data["ve_speaker_emb"]),
            cond_prompt_speech_tokens=torch.from_numpy(data["t3_cond_prompt_tokens"]).long(),
            exaggeration=0.0,
            prompt_token=torch.from_numpy(data["gen_prompt_token"]).long(),
            prompt_feat=torch.from_numpy(data["gen_prompt_feat"]),
            embedding=torch.from_numpy(data["xvector"]),
        )
    return {"builtin": builtin, "voice2": voice2}


@pytest.fixture(scope="session")
def prompt_builder(turbo_cfg):
    from vllm_chatterbox.t3.gpt2.prefix import GPT2PromptBuilder

    return GPT2PromptBuilder.from_file(TURBO_CKPT / "t3_turbo_v1.safetensors", turbo_cfg.turbo_t3)


@pytest.fixture(scope="session")
def turbo_engine(turbo_tts):
    return turbo_tts.t3_engine
