"""Session fixtures shared by more than one test folder: the original's tiny Turbo checkpoint and
one Turbo engine (``tests/turbo``: the Turbo model through the public API; ``tests/t3/gpt2``: its
GPT-2 T3 against the original's recordings)."""

from __future__ import annotations

import pytest

from tests.paths import TURBO_CKPT
from vllm_chatterbox.config import tiny_turbo_config

RAW_RECORDER = "tests.t3.gpt2.recorder:RawRecorder"
FORCING_RECORDER = "tests.t3.gpt2.recorder:ForcingRecorder"
# The tiny model needs about 1 KiB of KV cache per token; the machine is shared.
KV_CACHE_BYTES = 256 << 20


@pytest.fixture(scope="session")
def turbo_cfg():
    return tiny_turbo_config()


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
