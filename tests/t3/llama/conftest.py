"""Shared T3 engines (engine start is slow, so one per configuration for the whole folder; they
stop when its last test has run, freeing their memory for the folders after it)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import KV_CACHE_BYTES
from tests.paths import FIXTURE_CKPT
from reference.recorder import RECORDER
from vllm_chatterbox.config import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fixture_model_dir(tmp_path_factory):
    """The original's tiny checkpoint, unchanged, plus the override file with its dimensions."""
    directory = tmp_path_factory.mktemp("fixture-model")
    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"):
        (directory / name).symlink_to(FIXTURE_CKPT / name)
    tiny_config().save(directory)
    return directory


@pytest.fixture(scope="package")
def tts(fixture_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(fixture_model_dir, extra_logits_processors=[RECORDER], max_num_seqs=64,
                                   max_model_len=512, kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield model
    model.t3_engine.shutdown()


@pytest.fixture(scope="package")
def tts_constrained(fixture_model_dir):
    """Tiny token budget (every prompt is prefilled in chunks) and a KV cache too small for
    the batch, so requests are preempted and recomputed."""
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(
        fixture_model_dir, extra_logits_processors=[RECORDER], max_num_seqs=8, max_model_len=384,
        max_num_batched_tokens=32, enable_chunked_prefill=True, num_gpu_blocks_override=14,
        disable_log_stats=False,
    )
    yield model
    model.t3_engine.shutdown()


@pytest.fixture(scope="package")
def tts_bf16(fixture_model_dir):
    """The fast mode: T3 in bfloat16, a small engine of its own."""
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(fixture_model_dir, dtype="bfloat16", extra_logits_processors=[RECORDER],
                                   max_num_seqs=8, max_model_len=512, kv_cache_memory_bytes=64 << 20)
    yield model
    model.t3_engine.shutdown()
