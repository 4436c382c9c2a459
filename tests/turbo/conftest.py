"""Shared Turbo fixtures: the original's tiny Turbo checkpoint and one T3 engine per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.paths import TURBO_CKPT, TURBO_REF
from vllm_chatterbox.config import tiny_turbo_config
from vllm_chatterbox.voice.voice import Voice

torch.set_num_threads(1)

RAW_RECORDER = "tests.turbo.recorder:RawRecorder"
FORCING_RECORDER = "tests.turbo.recorder:ForcingRecorder"
# The tiny model needs about 1 KiB of KV cache per token; the machine is shared.
KV_CACHE_BYTES = 256 << 20


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
def turbo_cfg():
    return tiny_turbo_config()


@pytest.fixture(scope="session")
def prompt_builder(turbo_cfg):
    from vllm_chatterbox.t3.turbo_prefix import TurboPromptBuilder

    return TurboPromptBuilder.from_file(TURBO_CKPT / "t3_turbo_v1.safetensors", turbo_cfg.turbo_t3)


@pytest.fixture(scope="session")
def turbo_model_dir(tmp_path_factory, turbo_cfg):
    """The original's tiny Turbo checkpoint, unchanged, plus the override file with its dimensions."""
    directory = tmp_path_factory.mktemp("turbo-model")
    for path in TURBO_CKPT.iterdir():
        (directory / path.name).symlink_to(path)
    turbo_cfg.save(directory)
    return directory


@pytest.fixture(scope="session")
def turbo_tts(turbo_model_dir):
    """The public API on the fixture; its engine also carries the test recorders (one engine per session)."""
    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(turbo_model_dir, extra_logits_processors=[RAW_RECORDER],
                                 after_sampler_processors=[FORCING_RECORDER], max_num_seqs=32,
                                 kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield tts
    tts.t3_engine.shutdown()


@pytest.fixture(scope="session")
def turbo_engine(turbo_tts):
    return turbo_tts.t3_engine
