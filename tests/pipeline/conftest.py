"""One engine on a freshly generated tiny random model, shared by the pipeline tests."""

import pytest
import torch

from vllm_chatterbox.demo_model import make_test_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tts_tiny(tiny_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(tiny_model_dir, max_num_seqs=32, max_model_len=1024)
    yield model
    model.t3_engine.shutdown()
