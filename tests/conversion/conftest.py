"""Shared fixtures for the conversion tests: converters on the original's tiny checkpoints (no T3
engine) and long sources made of the fixtures' speech with known pauses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.paths import FIXTURE_AUDIO, FIXTURE_CKPT, TURBO_CKPT
from vllm_chatterbox.config import tiny_config, tiny_turbo_config
from vllm_chatterbox.conversion import VoiceConverter
from vllm_chatterbox.conversion.source import load_source

torch.set_num_threads(1)

BUILTIN_WAV = FIXTURE_AUDIO / "builtin_voice_src_24k.wav"
VOICE2_WAV = FIXTURE_AUDIO / "voice2_24k.wav"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The original's tiny checkpoint, unchanged, plus the override file with its dimensions."""
    directory = tmp_path_factory.mktemp("vc-model")
    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"):
        (directory / name).symlink_to(FIXTURE_CKPT / name)
    tiny_config().save(directory)
    return directory


@pytest.fixture(scope="session")
def turbo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vc-turbo-model")
    for path in TURBO_CKPT.iterdir():
        (directory / path.name).symlink_to(path)
    tiny_turbo_config().save(directory)
    return directory


@pytest.fixture(scope="session")
def converter(model_dir) -> VoiceConverter:
    return VoiceConverter.from_dir(model_dir, device="cpu")


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    """The fixtures' two espeak-ng sentences at 16 kHz."""
    return [load_source(BUILTIN_WAV), load_source(VOICE2_WAV)]


def speech_with_pauses(clips: list[np.ndarray], pauses_s: list[float], noise_db: float = -60.0,
                       seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Clips one after another (cycling), ``pauses_s[i]`` of silence after clip i, all under white
    noise ``noise_db`` below the speech's loud frames. Returns the 16 kHz samples and the pauses
    as sample ranges from the end of one clip's speech to the start of the next one's."""
    rng = np.random.default_rng(seed)
    parts, speech = [], []
    position = 0
    for i, pause in enumerate(pauses_s + [0.0]):
        clip = clips[i % len(clips)]
        loud = np.flatnonzero(np.abs(clip) > 0.01)
        speech.append((position + int(loud[0]), position + int(loud[-1]) + 1))
        parts += [clip, np.zeros(int(pause * 16000), dtype=np.float32)]
        position += clip.size + int(pause * 16000)
    wav = np.concatenate(parts)
    level = np.sqrt(np.mean(clips[0][np.abs(clips[0]) > 0.01] ** 2))
    wav = wav + (level * 10 ** (noise_db / 20) * rng.standard_normal(wav.size)).astype(np.float32)
    pauses = [(speech[i][1], speech[i + 1][0]) for i in range(len(speech) - 1)]
    return wav.astype(np.float32), pauses
