"""Reference audio -> Voice: reproduces the original's conds.pt and voice2 conditioning; caching."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.voice.audio import load_audio, resample_sinc_hann, resample_soxr_hq
from vllm_chatterbox.voice.builder import VoiceBuilder
from vllm_chatterbox.voice.voice import Voice

from .conftest import (
    BUILTIN_WAV,
    CKPT,
    PROMPT_MEL_BOUND,
    VOICE2_WAV,
    assert_matches_recording,
    assert_tokens_match,
    fsq_margins,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def builder() -> VoiceBuilder:
    return VoiceBuilder.from_files(CKPT / "ve.safetensors", CKPT / "s3gen.safetensors", tiny_config())


@pytest.fixture(scope="module")
def builtin(builder) -> Voice:
    return builder.build(BUILTIN_WAV)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def test_builtin_voice_reproduces_conds_pt(builder, builtin):
    expected = Voice.load(CKPT / "conds.pt")
    assert builtin.exaggeration == expected.exaggeration == 0.5
    # README 3 allows VE from the wav 1e-4, x-vector from the wav 1e-3. Measured: VE 3.0e-8,
    # x-vector 6e-8 (fp64 runs: 3e-8, 5e-8); the prompt mel's numbers are in PROMPT_MEL_BOUND.
    assert _max_diff(builtin.speaker_emb, expected.speaker_emb) <= 1e-6
    assert_matches_recording(builtin.prompt_feat, expected.prompt_feat, PROMPT_MEL_BOUND)
    assert _max_diff(builtin.embedding, expected.embedding) <= 1e-6
    # Tokens: exact (measured: all equal; the closest FSQ digit is 4.5e-4 from a rounding
    # boundary, above the 1e-4 band where README 3 allows a flip).
    wav24, _ = load_audio(BUILTIN_WAV)
    ref16 = torch.from_numpy(resample_soxr_hq(wav24, 24000, 16000))
    ref16_sinc = resample_sinc_hann(torch.from_numpy(wav24)[None], 24000, 16000)[0]
    assert builtin.cond_prompt_speech_tokens.shape == expected.cond_prompt_speech_tokens.shape == (1, 98)
    assert_tokens_match(builtin.cond_prompt_speech_tokens, expected.cond_prompt_speech_tokens,
                        fsq_margins(builder.tokenizer, ref16[:96000], max_len=150))
    # 195 mel frames vs 98 tokens from the tokenizer: truncated to 195 // 2 = 97, as the original.
    assert builtin.prompt_token.shape == expected.prompt_token.shape == (1, 97)
    assert_tokens_match(builtin.prompt_token, expected.prompt_token, fsq_margins(builder.tokenizer, ref16_sinc))
    # And the on-disk format round-trips.
    conds = builtin.to_conds_dict()
    assert torch.equal(conds["gen"]["prompt_token_len"], torch.tensor([97]))
    assert conds["t3"]["emotion_adv"].shape == (1, 1, 1)


def test_voice2_reproduces_recorded_conditioning(builder, ref):
    voice = builder.build(VOICE2_WAV, exaggeration=0.7)
    assert voice.exaggeration == 0.7
    assert _max_diff(voice.speaker_emb, torch.from_numpy(ref["ve_speaker_emb"])) <= 1e-6
    assert_matches_recording(voice.prompt_feat, ref["gen_prompt_feat"], PROMPT_MEL_BOUND)
    assert _max_diff(voice.embedding, torch.from_numpy(ref["xvector"])) <= 1e-6
    assert torch.equal(voice.cond_prompt_speech_tokens, torch.from_numpy(ref["t3_cond_prompt_tokens"]).long())
    assert torch.equal(voice.prompt_token, torch.from_numpy(ref["gen_prompt_token"]).long())


def test_built_tensors_are_ordinary_cpu_tensors(builtin):
    for t in (builtin.speaker_emb, builtin.prompt_feat, builtin.embedding, builtin.prompt_token):
        assert t.device.type == "cpu" and not t.is_inference()
    assert builtin.prompt_token.dtype == builtin.cond_prompt_speech_tokens.dtype == torch.int64


def test_from_loaded_state_dicts_reads_only_its_prefixes(builtin):
    ve_state = load_file(str(CKPT / "ve.safetensors"))
    s3gen_state = load_file(str(CKPT / "s3gen.safetensors"))
    only_voice = {k: v for k, v in s3gen_state.items() if k.startswith(("tokenizer.", "speaker_encoder."))}
    for s3gen in (s3gen_state, only_voice):
        voice = VoiceBuilder.from_files(ve_state, s3gen, tiny_config()).build(BUILTIN_WAV)
        assert torch.equal(voice.prompt_feat, builtin.prompt_feat)
        assert torch.equal(voice.prompt_token, builtin.prompt_token)
        assert torch.equal(voice.embedding, builtin.embedding)


def test_pt_file_and_missing_file(tmp_path, builtin):
    ve_pt = tmp_path / "ve.pt"
    torch.save(load_file(str(CKPT / "ve.safetensors")), ve_pt)
    voice = VoiceBuilder.from_files(ve_pt, CKPT / "s3gen.safetensors", tiny_config()).build(BUILTIN_WAV)
    assert torch.equal(voice.speaker_emb, builtin.speaker_emb)
    with pytest.raises(ValueError, match="not found"):
        VoiceBuilder.from_files(tmp_path / "missing.safetensors", CKPT / "s3gen.safetensors", tiny_config())


def test_other_sources_and_rates(builder, builtin, tmp_path):
    wav24, _ = load_audio(BUILTIN_WAV)
    from_array = builder.build(wav24, 24000)
    assert torch.equal(from_array.prompt_feat, builtin.prompt_feat)
    # A 44.1 kHz file goes through soxr to 24 kHz first, like librosa.load(sr=24000).
    path = tmp_path / "voice_44k.flac"
    soundfile.write(path, resample_soxr_hq(wav24, 24000, 44100), 44100)
    voice = builder.build(path)
    n24 = int(np.ceil(len(load_audio(path)[0]) * 24000 / 44100))
    assert voice.prompt_feat.shape == (1, n24 // 480, 80)
    assert voice.prompt_token.shape[1] <= voice.prompt_feat.shape[1] // 2
    assert voice.cond_prompt_speech_tokens.shape[1] <= 150
    assert torch.nn.functional.cosine_similarity(voice.embedding, builtin.embedding).item() > 0.95


def test_long_reference_is_cut_like_the_original(builder):
    wav24, _ = load_audio(VOICE2_WAV)
    long = np.tile(wav24, 3)  # 13.2 s: T3 prompt uses 6 s, S3Gen 10 s, the VE everything
    voice = builder.build(long, 24000)
    assert voice.cond_prompt_speech_tokens.shape == (1, 150)
    assert voice.prompt_feat.shape == (1, 500, 80)
    assert voice.prompt_token.shape == (1, 250)


def test_cache_hit_skips_recomputation(builder, monkeypatch):
    calls = []
    compute = builder._conditionals
    monkeypatch.setattr(builder, "_conditionals", lambda *a: calls.append(1) or compute(*a))
    builder._cache.clear()
    wav24, _ = load_audio(BUILTIN_WAV)
    first = builder.build(BUILTIN_WAV)
    again = builder.build(BUILTIN_WAV, exaggeration=0.9)
    same_audio = builder.build(wav24.copy(), 24000)
    assert len(calls) == 1
    assert again.exaggeration == 0.9 and first.exaggeration == 0.5
    assert again.speaker_emb is first.speaker_emb and same_audio.prompt_feat is first.prompt_feat
    builder.build(wav24[:-1], 24000)  # different content -> new entry
    assert len(calls) == 2


def test_cache_is_lru_bounded():
    builder = VoiceBuilder.from_files(CKPT / "ve.safetensors", CKPT / "s3gen.safetensors", tiny_config(), cache_size=1)
    wav24, _ = load_audio(BUILTIN_WAV)
    a = builder.build(wav24, 24000)
    builder.build(wav24[:-480], 24000)
    assert len(builder._cache) == 1
    assert builder.build(wav24, 24000).speaker_emb is not a.speaker_emb  # evicted, rebuilt


@pytest.mark.parametrize(
    "source,rate,match",
    [
        (np.zeros(24000, dtype=np.float32), 24000, "silent"),
        (np.full(24000, np.nan, dtype=np.float32), 24000, "non-finite"),
        (np.full(2400, 0.1, dtype=np.float32), 24000, "too short"),
        ("/nonexistent/voice.wav", None, "not found"),
    ],
)
def test_bad_audio_raises(builder, source, rate, match):
    with pytest.raises(ValueError, match=match):
        builder.build(source, rate)


@pytest.mark.parametrize("value,match", [
    (float("nan"), "exaggeration must be finite"),
    (2.5, r"exaggeration must be in \[0.0, 2.0\]"),
    (-0.1, r"exaggeration must be in \[0.0, 2.0\]"),
    (None, "exaggeration must be a number"),
    ("high", "exaggeration must be a number"),
])
def test_bad_exaggeration_raises(builder, value, match):
    """The same range as generate's exaggeration."""
    with pytest.raises(ValueError, match=match):
        builder.build(BUILTIN_WAV, exaggeration=value)


def test_numpy_exaggeration_is_a_number(builder):
    assert builder.build(BUILTIN_WAV, exaggeration=np.float32(0.25)).exaggeration == pytest.approx(0.25)


def test_a_voice_that_comes_out_non_finite_is_rejected(builder, monkeypatch):
    """Whatever the networks make of odd audio, a NaN voice never leaves the builder."""
    real = builder.voice_encoder.embed_utterance
    monkeypatch.setattr(builder.voice_encoder, "embed_utterance", lambda wav: real(wav) * float("nan"))
    builder._cache.clear()
    with pytest.raises(ValueError, match="reference audio gave an unusable voice: voice speaker_emb holds non-finite"):
        builder.build(_tone_for_builder(), 24000)


def _tone_for_builder():
    t = np.arange(24000 * 2) / 24000
    return (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
