"""One vLLM engine on a tiny random-weight multilingual model, shared by the multilingual tests."""

from __future__ import annotations

import pytest
import torch

from reference.recorder import RECORDER
from tests.conftest import KV_CACHE_BYTES
from vllm_chatterbox.demo_model import make_test_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mtl_model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("mtl-model"), "tiny", seed=5, multilingual=True)


@pytest.fixture(scope="package")
def mtl_tts(mtl_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(mtl_model_dir, extra_logits_processors=[RECORDER], max_num_seqs=16,
                                   max_model_len=512, kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield model
    model.t3_engine.shutdown()
