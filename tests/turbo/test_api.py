"""Turbo through the public API (``ChatterboxTTS.from_dir`` on the fixture in the official layout),
the layouts, and the test-model writer."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from tests.conftest import KV_CACHE_BYTES
from tests.paths import TURBO_AUDIO, TURBO_REF
from tests.t3.gpt2.recorder import read
from tests.t3.gpt2.test_t3 import run
from vllm_chatterbox.model_files import ModelFiles
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.variants import VARIANTS
from vllm_chatterbox.voice.audio import load_audio


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(TURBO_REF / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def test_from_dir_gives_the_turbo_class(turbo_tts):
    from vllm_chatterbox.turbo import ChatterboxTurboTTS
    from vllm_chatterbox.tts import ChatterboxTTS

    assert isinstance(turbo_tts, ChatterboxTurboTTS) and isinstance(turbo_tts, ChatterboxTTS)
    assert turbo_tts.files.variant == "turbo"
    assert turbo_tts.config.estimator.meanflow


def test_plain_greedy_tokens_equal_the_original(turbo_tts):
    """temperature 0 with every processor off = the original's argmax of the raw logits."""
    case = load("t3_mid_builtin")
    text = "the lighthouse keeper counted every step: one hundred and twelve."
    assert turbo_tts.text_token_ids(text) == case["text_ids"].tolist()
    tokens, = turbo_tts.generate_speech_tokens(text, temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                                               max_new_tokens=48)
    # As the original hands them to S3Gen: ids < 6561, then three silence tokens.
    assert tokens == [t for t in case["greedy_tokens_plain"].tolist() if t < 6561] + [4299] * 3


def test_speech_tokens_to_audio_with_the_recorded_noise(turbo_tts):
    """The e2e case's S3Gen input with its recorded x0: the original's mel, hence its length."""
    case = load("e2e_builtin")
    wav, = turbo_tts.speech_tokens_to_audio([case["tokens_to_s3gen"].tolist()], noise=[case["x0"][0]])
    assert wav.shape == case["wav_pre_watermark"][0].shape
    mel, = turbo_tts.s3gen.tokens_to_mel([case["tokens_to_s3gen"].tolist()], [turbo_tts.builtin_voice],
                                          noise=[torch.from_numpy(case["x0"][0])])
    torch.testing.assert_close(mel, torch.from_numpy(case["mel"][0]), atol=1e-4, rtol=0)


def test_voice_cloning_follows_turbos_reference_rules(turbo_tts):
    """Through the public API: references over 5 s, a 15 s / 375-token T3 prompt, exaggeration 0."""
    wav, rate = load_audio(TURBO_AUDIO / "voice2_long_24k.wav")
    with pytest.raises(ValueError, match="more than 5 s"):
        turbo_tts.voice_from_audio(wav[: 5 * rate], rate)
    voice = turbo_tts.voice_from_audio(wav, rate)
    assert voice.exaggeration == 0.0 and voice.cond_prompt_speech_tokens.shape == (1, 375)


def test_generate_end_to_end_and_seeds(turbo_tts):
    text = "Hi there [chuckle], this is the tiny turbo check: short and sweet."
    first = turbo_tts.generate([text, text], seed=[5, 5], max_new_tokens=30)
    assert first[0].dtype == np.float32 and first[0].size > 0 and np.isfinite(first[0]).all()
    np.testing.assert_array_equal(first[0], first[1])


def test_ignored_parameters_warn_like_the_original(turbo_tts, caplog):
    with caplog.at_level(logging.WARNING, logger="vllm_chatterbox.t3.gpt2.client"):
        turbo_tts.prepare_t3_requests("Hello.", cfg_weight=0.5, exaggeration=0.7, min_p=0.05)
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vllm_chatterbox.t3.gpt2.client"):
        turbo_tts.prepare_t3_requests("Hello.")
    assert not caplog.records


@pytest.mark.parametrize("bad, match", [
    ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"language": "es"}, "English only"), ({"bogus": 1}, "unknown parameter"),
])
def test_bad_parameters_are_refused_before_vllm(turbo_tts, bad, match):
    with pytest.raises(ValueError, match=match):
        turbo_tts.prepare_t3_requests("Hello.", **bad)


def test_turbo_defaults(turbo_tts):
    p = turbo_tts.prepare_t3_requests("Hello.")[0].params
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.max_new_tokens) == (0.8, 1000, 0.95, 1.2, 1001)


@pytest.mark.parametrize("variant", ["turbo", "nano"])
def test_make_test_model_layouts(tmp_path, variant):
    directory = make_test_model(tmp_path / variant, "tiny", seed=0, variant=variant)
    files = ModelFiles.from_dir(directory)
    assert files.variant == variant and files.t3.name == f"t3_{variant}_v1.safetensors"
    assert files.s3gen.name == "s3gen_meanflow.safetensors"
    with pytest.raises(ValueError, match="English only"):
        ModelFiles.from_dir(directory, variant=variant, multilingual=True)
    with pytest.raises(ValueError, match="missing"):
        ModelFiles.from_dir(directory, variant="nano" if variant == "turbo" else "turbo")


def test_full_size_nano_t3_shapes():
    from vllm_chatterbox.config import nano_t3_config
    from vllm_chatterbox.demo_model import random_turbo_t3_state_dict

    state = random_turbo_t3_state_dict(nano_t3_config(), torch.Generator().manual_seed(0))
    assert state["tfmr.h.11.attn.c_attn.weight"].shape == (768, 2304)
    assert "tfmr.h.12.ln_1.weight" not in state
    assert state["speech_head.bias"].shape == (6563,)


def test_tiny_nano_model_speaks_and_streams(tmp_path):
    """The written Nano layout runs end to end through the public API (random weights: noise),
    one-shot and streamed (Turbo's schedule; the stream has the one-shot's length)."""
    from vllm_chatterbox.tts import ChatterboxTTS

    directory = make_test_model(tmp_path / "nano", "tiny", seed=0, variant="nano")
    tts = ChatterboxTTS.from_dir(directory, max_num_seqs=4, kv_cache_memory_bytes=KV_CACHE_BYTES)
    try:
        wav, = tts.generate("Hello [laugh] there.", max_new_tokens=8, seed=1)
        # Its voice's prompt mel has two frames per prompt token, so each speech token (at most 8,
        # plus the 3 silence tokens) gives 2 mel frames = 960 samples.
        assert wav.size % 960 == 0 and 3 * 960 <= wav.size <= 11 * 960
        assert tts.variant.stream_schedule == VARIANTS["turbo"].stream_schedule
        pieces = list(tts.stream("Hello [laugh] there, and a little more.", max_new_tokens=40, seed=1))
        one_shot, = tts.generate("Hello [laugh] there, and a little more.", max_new_tokens=40, seed=1)
        streamed = np.concatenate(pieces)
        assert len(pieces) > 1 and streamed.shape == one_shot.shape
        # make_test_model's tiny S3Gen weights: measured 66.6 dB (67.8 dB for another text and seed).
        snr = 10 * np.log10(np.sum(one_shot ** 2) / np.sum((streamed - one_shot) ** 2))
        assert snr > 55, f"streamed vs one-shot SNR {snr:.1f} dB"
    finally:
        tts.t3_engine.shutdown()


def test_cli_make_test_model_variant(tmp_path):
    from vllm_chatterbox.cli import build_parser, main

    assert main(["make-test-model", str(tmp_path / "t"), "--variant", "turbo"]) == 0
    assert ModelFiles.from_dir(tmp_path / "t").variant == "turbo"
    speak = build_parser().parse_args(["speak", "hi", "-o", "x.wav", "--variant", "nano", "--top-k", "50"])
    assert (speak.variant, speak.top_k, speak.cfg_weight, speak.n_timesteps) == ("nano", 50, None, None)


def test_warm_voice_caches_the_conditioning_and_changes_no_token(turbo_tts, tmp_path):
    """After warm_voice, a new voice's first request reads its conditioning from vLLM's prefix
    cache and computes the logits and samples the tokens it does with nothing cached."""
    builtin = turbo_tts.builtin_voice
    # A voice no request has used: the built-in one with another speaker embedding.
    voice = dataclasses.replace(builtin, speaker_emb=builtin.speaker_emb + 0.01)
    request, = turbo_tts.prepare_t3_requests("The first words of a conversation.", voice, seed=3,
                                             max_new_tokens=24)
    engine = turbo_tts.t3_engine
    cold = run(engine, [("cold", dataclasses.replace(request, cache_salt="warm-voice-test-cold"), None, {})],
               tmp_path)["cold"]
    assert cold.num_cached_tokens == 0

    rows = turbo_tts.warm_voice(voice)
    block = engine.vllm_config.cache_config.block_size
    conditioning_rows = 1 + voice.cond_prompt_speech_tokens.shape[1]
    assert rows == conditioning_rows // block * block > 0
    warm = run(engine, [("warm", request, None, {})], tmp_path)["warm"]
    assert warm.num_cached_tokens == rows
    assert warm.token_ids == cold.token_ids and len(cold.token_ids) == 24
    cold_logits, warm_logits = (read(tmp_path, tag, "raw", 24) for tag in ("cold", "warm"))
    # Raw logits at every step, the prefill's included, bit for bit (measured: equal on this CPU).
    assert np.abs(cold_logits).max() > 0
    np.testing.assert_array_equal(warm_logits, cold_logits)
