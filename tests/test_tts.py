"""``ChatterboxTTS`` without a vLLM engine: what is decided before any request is sent."""

import logging

import numpy as np
import pytest
import torch

from tests.conftest import NoEngine
from tests.paths import FIXTURE_AUDIO, FIXTURE_CKPT
from vllm_chatterbox.config import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fixture-model")
    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"):
        (directory / name).symlink_to(FIXTURE_CKPT / name)
    tiny_config().save(directory)
    return directory


@pytest.fixture(scope="module")
def tts(model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("vllm_chatterbox.tts.T3Engine", NoEngine)
        yield ChatterboxTTS.from_dir(model_dir, device="cpu")


def test_close_stops_engine_and_threads_once(model_dir, monkeypatch):
    from vllm_chatterbox.tts import ChatterboxTTS

    monkeypatch.setattr("vllm_chatterbox.tts.T3Engine", NoEngine)
    with ChatterboxTTS.from_dir(model_dir, device="cpu") as tts:
        vocoder_thread = tts._stream_vocoder._thread
        assert vocoder_thread.is_alive() and not tts.closed
    assert tts.closed and tts.t3_engine.shutdowns == 1
    assert not vocoder_thread.is_alive(), "the stream vocoder thread outlived close()"
    tts.close()
    assert tts.t3_engine.shutdowns == 1, "close() is idempotent"


def test_default_exaggeration_is_the_voices_own(tts):
    """A voice cloned (or saved) at 0.7 speaks at 0.7 unless the call says otherwise."""
    voice = tts.voice_from_audio(FIXTURE_AUDIO / "voice2_24k.wav", exaggeration=0.7)
    assert voice.exaggeration == pytest.approx(0.7)

    def embeds(**kwargs):
        return tts.prepare_t3_requests("Hello there.", voice, **kwargs)[0].prompt_embeds

    default, at_07, at_05 = embeds(), embeds(exaggeration=0.7), embeds(exaggeration=0.5)
    torch.testing.assert_close(default, at_07, rtol=0, atol=0)
    assert (default - at_05).abs().max() > 1e-3, "an explicit exaggeration must still win"


def test_builtin_voice_keeps_its_conds_exaggeration(tts, tmp_path):
    voice = tts.builtin_voice.with_exaggeration(1.5)
    voice.save(tmp_path / "v.pt")
    from_file = tts.prepare_t3_requests("Hi.", str(tmp_path / "v.pt"))[0].prompt_embeds
    explicit = tts.prepare_t3_requests("Hi.", None, exaggeration=1.5)[0].prompt_embeds
    torch.testing.assert_close(from_file, explicit, rtol=0, atol=0)


def test_numpy_scalars_are_accepted_for_every_parameter(tts):
    numpy = tts.prepare_t3_requests(
        ["Hello.", "There."], exaggeration=np.float32(0.25), cfg_weight=np.float64(0.3), temperature=np.float32(0.5),
        top_p=np.float32(0.9), min_p=np.float32(0.1), repetition_penalty=np.float32(1.5),
        max_new_tokens=np.int64(17), seed=[np.int64(5), np.uint32(6)])
    plain = tts.prepare_t3_requests(
        ["Hello.", "There."], exaggeration=float(np.float32(0.25)), cfg_weight=0.3,
        temperature=float(np.float32(0.5)), top_p=float(np.float32(0.9)), min_p=float(np.float32(0.1)),
        repetition_penalty=1.5, max_new_tokens=17, seed=[5, 6])
    for a, b in zip(numpy, plain):
        torch.testing.assert_close(a.prompt_embeds, b.prompt_embeds, rtol=0, atol=0)
        assert a.params == b.params
        assert type(a.params.max_new_tokens) is int and type(a.params.seed) is int
        assert type(a.params.temperature) is float


def test_unknown_characters_warn_once_per_call_naming_them(tts, caplog):
    with caplog.at_level(logging.WARNING, logger="vllm_chatterbox"):
        tts.prepare_t3_requests(["Hi 😀 there.", "Bell\x07 and 😀 again, ₪."])
    warnings = [r.getMessage() for r in caplog.records if "[UNK]" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for shown in ("😀", "U+0007", "₪"):
        assert shown in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vllm_chatterbox"):
        tts.prepare_t3_requests("Only known letters here.")
    assert not [r for r in caplog.records if "[UNK]" in r.getMessage()]


def test_speech_tokens_per_item_are_capped_at_the_models_maximum(tts):
    limit = tts.config.t3.max_speech_tokens
    with pytest.raises(ValueError, match=f"item 1: {limit + 1} speech tokens; the model's maximum is {limit} "):
        tts.speech_tokens_to_audio([[1, 2, 3], [5] * (limit + 1)])


def test_a_batchs_frames_are_capped_by_splitting_it(tts, monkeypatch):
    """Long items are not padded into one huge S3Gen batch: each flow/vocoder call holds at most
    DEFAULT_MAX_BATCH_FRAMES (batch size x longest item) frames, the cap a GPU uses (a CPU runs one
    clip per call). (This held before the per-item cap too; the test keeps it.)"""
    from vllm_chatterbox.s3gen.model import DEFAULT_MAX_BATCH_FRAMES, S3Gen

    s3gen = tts.s3gen
    monkeypatch.setattr(S3Gen, "default_max_batch_frames", DEFAULT_MAX_BATCH_FRAMES)
    calls = []

    def flow_batch(items, n_timesteps):
        calls.append([it.frames for it in items])
        return [torch.zeros(80, it.frames - it.voice.prompt_feat.shape[1]) for it in items]

    monkeypatch.setattr(s3gen, "_flow_batch", flow_batch)
    monkeypatch.setattr(s3gen, "vocode", lambda mels, **kwargs: [torch.zeros(480 * m.shape[-1]) for m in mels])
    lengths = [1500, 40, 1500, 1500, 700, 1500, 1500, 1500]
    wavs = tts.speech_tokens_to_audio([[7] * n for n in lengths])
    assert len(wavs) == len(lengths)
    assert sum(len(c) for c in calls) == len(lengths) and len(calls) >= 4
    assert all(len(c) * max(c) <= DEFAULT_MAX_BATCH_FRAMES for c in calls), calls


def test_convert_delegates_to_a_converter_sharing_the_models_networks(tts):
    """Voice conversion reuses the loaded S3Gen and voice builder and never reaches T3."""
    from vllm_chatterbox.conversion import VoiceConverter

    assert tts.converter.s3gen is tts.s3gen and tts.converter.voice_builder is tts.voice_builder
    source, target = FIXTURE_AUDIO / "builtin_voice_src_24k.wav", FIXTURE_AUDIO / "voice2_24k.wav"
    wav = tts.convert(source, target, seed=2, n_timesteps=2, watermark=False)
    alone = VoiceConverter(tts.s3gen, tts.voice_builder, tts.builtin_voice, tts.config)
    np.testing.assert_array_equal(wav, alone.convert(source, target, seed=2, n_timesteps=2, watermark=False))
    streamed = np.concatenate(list(tts.convert_stream(source, target, seed=2, n_timesteps=2, watermark=False)))
    np.testing.assert_array_equal(streamed, wav)


def test_warm_voice_is_a_no_op_for_the_original_models(tts):
    """Their conditioning is one KV block shared only by prompts of one length: nothing to warm,
    and nothing reaches vLLM (NoEngine would fail the test)."""
    assert tts.warm_voice() == 0
    assert tts.warm_voice(FIXTURE_AUDIO / "voice2_24k.wav") == 0
    with pytest.raises(ValueError, match="voice must be None, a Voice"):
        tts.warm_voice(123)
