"""Turbo voice front end vs the original's ``prepare_conditionals`` (``tiny-turbo/ref/voice_*.npz``).

Loudness (LUFS, gain) 1e-6 relative (measured 5e-9); normalised samples 1e-7 (measured 3e-8); VE embedding from the wav
1e-4; prompt mel 2e-4 (below); x-vector from the wav 1e-3; tokens exact (none of them lies within 1e-4
of an FSQ rounding boundary here, index.json).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.paths import TURBO_AUDIO, TURBO_CKPT, TURBO_REF
from vllm_chatterbox.config import tiny_turbo_config
from vllm_chatterbox.voice.audio import load_audio
from vllm_chatterbox.voice.builder import VoiceBuilder, turbo_voice_options
from vllm_chatterbox.voice.loudness import integrated_loudness, normalize_loudness
from vllm_chatterbox.voice.voice import Voice

torch.set_num_threads(1)

WAVS = {"builtin": TURBO_AUDIO / "builtin_voice_src_24k.wav", "voice2": TURBO_AUDIO / "voice2_long_24k.wav"}


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(TURBO_REF / f"voice_{name}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def builder() -> VoiceBuilder:
    config = tiny_turbo_config()
    return VoiceBuilder.from_files(TURBO_CKPT / "ve.safetensors", TURBO_CKPT / "s3gen_meanflow.safetensors",
                                   config, options=turbo_voice_options(config))


@pytest.mark.parametrize("name", WAVS)
def test_loudness_normalisation(name):
    ref = load(name)
    wav, rate = load_audio(WAVS[name])
    assert integrated_loudness(wav, rate) == pytest.approx(float(ref["loudness_lufs"]), rel=1e-6)
    normalized = normalize_loudness(wav, rate)
    assert normalized.dtype == np.float32
    if "wav24_normalized" in ref:
        # Our loudness differs from the recorded one by ~1e-7 LUFS (filter design in float64),
        # which moves the float32 gain by an ulp: samples agree to 3e-8. With the recorded
        # gain the multiplication itself is bit-equal (float32, as NumPy 1.26 did it).
        np.testing.assert_allclose(normalized, ref["wav24_normalized"], rtol=0, atol=1e-7)
        np.testing.assert_array_equal(wav * np.float32(ref["gain_linear"]), ref["wav24_normalized"])
    gain = float(np.max(np.abs(normalized)) / np.max(np.abs(wav)))
    assert gain == pytest.approx(float(ref["gain_linear"]), rel=1e-6)


def test_silence_is_left_unchanged():
    silence = np.zeros(24000 * 6, dtype=np.float32)
    assert normalize_loudness(silence, 24000) is silence


@pytest.mark.parametrize("name", WAVS)
def test_voice_matches_prepare_conditionals(builder, name):
    ref = load(name)
    voice = builder.build(WAVS[name])
    assert (voice.speaker_emb - torch.from_numpy(ref["ve_speaker_emb"])).abs().max() <= 1e-4
    # The 3e-8 sample differences of the normalisation reach the log-mel of the quietest bins
    # as up to 7e-5 (measured).
    assert (voice.prompt_feat - torch.from_numpy(ref["gen_prompt_feat"])).abs().max() <= 2e-4
    assert (voice.embedding - torch.from_numpy(ref["xvector"])).abs().max() <= 1e-3
    assert voice.cond_prompt_speech_tokens.shape == ref["t3_cond_prompt_tokens"].shape
    assert voice.prompt_token.shape == ref["gen_prompt_token"].shape


@pytest.mark.parametrize("name", WAVS)
def test_voice_tokens_match_prepare_conditionals(builder, name):
    """Exact since the S3 tokenizer's attention LayerNorm eps is 1e-5 (s3tokenizer 0.3.0); with
    the old 1e-6 the FSQ values moved by 3.3e-3 here and 2 of 203 tokens flipped."""
    ref = load(name)
    voice = builder.build(WAVS[name])
    assert torch.equal(voice.cond_prompt_speech_tokens, torch.from_numpy(ref["t3_cond_prompt_tokens"]).long())
    assert torch.equal(voice.prompt_token, torch.from_numpy(ref["gen_prompt_token"]).long())


def test_builtin_voice_reproduces_conds_pt(builder):
    built = builder.build(WAVS["builtin"])
    expected = Voice.load(TURBO_CKPT / "conds.pt")
    assert built.cond_prompt_speech_tokens.shape == (1, 203) and built.prompt_token.shape == (1, 202)
    assert (built.speaker_emb - expected.speaker_emb).abs().max() <= 1e-4


def test_voice2_prompt_is_capped_at_375_tokens(builder):
    assert builder.build(WAVS["voice2"]).cond_prompt_speech_tokens.shape == (1, 375)


def test_short_reference_is_refused(builder):
    wav, rate = load_audio(WAVS["builtin"])
    with pytest.raises(ValueError, match="more than 5 s"):
        builder.build(wav[: 5 * rate], rate)


def test_without_loudness_normalisation_the_voice_differs(builder):
    normalised = builder.build(WAVS["voice2"])
    raw = builder.build(WAVS["voice2"], norm_loudness=False)
    assert not torch.equal(normalised.prompt_feat, raw.prompt_feat)
