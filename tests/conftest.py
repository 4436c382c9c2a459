"""Session fixtures shared by more than one test folder (each engine start costs 15-50 s and
2-3 GB; new tests reuse these rather than start their own):

- ``tiny_model_dir`` / ``tts_tiny``: a freshly generated tiny random model (``make_test_model``,
  seed 0) and one engine on it: ``tests/pipeline``, the Python side of ``tests/server`` (whose
  server subprocess serves the same files) and the CLI tests' ``--model``;
- ``turbo_model_dir`` / ``turbo_tts``: the original's tiny Turbo checkpoint and one Turbo engine
  (``tests/turbo``: the Turbo model through the public API; ``tests/t3/gpt2``: its GPT-2 T3
  against the original's recordings; the Turbo server test).
"""

from __future__ import annotations

import pytest

from tests.paths import TURBO_CKPT
from vllm_chatterbox.config import tiny_turbo_config
from vllm_chatterbox.demo_model import make_test_model

RAW_RECORDER = "tests.t3.gpt2.recorder:RawRecorder"
FORCING_RECORDER = "tests.t3.gpt2.recorder:ForcingRecorder"
# The tiny models need about 1 KiB of KV cache per token; the machine is shared. vLLM's CPU
# default (2 GiB per engine, allocated at start) for each of the suite's engines alive at once
# exhausted a loaded 24 GiB machine; 256 MiB holds every batch the tests make many times over.
KV_CACHE_BYTES = 256 << 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tts_tiny(tiny_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(tiny_model_dir, max_num_seqs=32, max_model_len=1024,
                                   kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield model
    model.t3_engine.shutdown()


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
