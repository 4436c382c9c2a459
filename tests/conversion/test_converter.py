"""VoiceConverter against the original's ChatterboxVC recordings, and what it adds: any length,
batches, streams, Turbo, and clear errors before any work. No T3 engine is started here.

Tolerances (as tests/s3gen): tokens and the target's S3Gen conditioning exact; mel from the
recorded noise 1e-5 (measured 2.0e-6); waveform from (mel, recorded excitation) 1e-6 (measured 9e-8).
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from tests.conversion.conftest import BUILTIN_WAV, VOICE2_WAV, speech_with_pauses
from tests.paths import FIXTURE_REF
from vllm_chatterbox.conversion import VoiceConverter
from vllm_chatterbox.conversion.source import plan_pieces
from vllm_chatterbox.voice.voice import Voice
from vllm_chatterbox.watermark import detect, is_marked

MEL_TOL = 1e-5
WAV_TOL = 1e-6
# case -> (source, target: None = the built-in voice)
CASES = {"vc_builtin_to_voice2": (BUILTIN_WAV, VOICE2_WAV), "vc_voice2_to_builtin": (VOICE2_WAV, None)}


def _case(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURE_REF / f"{name}.npz") as data:
        return dict(data)


def test_conversion_loads_neither_t3_nor_vllm(model_dir):
    """A fresh process: load, clone, convert; vLLM and the text-to-speech front door stay unimported
    (no engine, no GBs). The variant table's T3 code modules may load: they import no vLLM."""
    code = (f"import sys; from vllm_chatterbox.conversion import VoiceConverter; "
            f"c = VoiceConverter.from_dir({str(model_dir)!r}, device='cpu'); "
            f"c.convert({str(BUILTIN_WAV)!r}, {str(VOICE2_WAV)!r}, n_timesteps=1); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'transformers') "
            "or m == 'vllm_chatterbox.tts'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", CASES)
def test_equal_to_the_originals_voice_conversion(converter, name):
    source, target = CASES[name]
    case = _case(name)
    tokens = converter.source_tokens(source)
    assert tokens == case["source_tokens"][0].tolist()
    assert len(tokens) == int(case["source_tokens_len"][0])

    voice = converter.resolve_voice(target)
    np.testing.assert_array_equal(voice.prompt_token.numpy(), case["prompt_token"])
    np.testing.assert_allclose(voice.prompt_feat.numpy(), case["prompt_feat"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(voice.embedding.numpy(), case["xvector"], atol=1e-6, rtol=0)

    mel, = converter.s3gen.tokens_to_mel([tokens], [voice], n_timesteps=10,
                                         noise=[torch.from_numpy(case["cfm_noise_z"])])
    torch.testing.assert_close(mel, torch.from_numpy(case["mel"][0]), atol=MEL_TOL, rtol=0)
    wav, = converter.s3gen.vocode([mel], sources=[torch.from_numpy(case["source"])])
    torch.testing.assert_close(wav, torch.from_numpy(case["wav_pre_watermark"][0]), atol=WAV_TOL, rtol=0)

    # convert() is S3Gen on exactly those tokens and that voice (its noise from the seed).
    converted = converter.convert(source, target, seed=7, watermark=False)
    expected, = converter.s3gen.inference([case["source_tokens"][0]], [voice], n_timesteps=10, seeds=[7])
    np.testing.assert_array_equal(converted, expected)
    assert converted.dtype == np.float32 and converted.shape == case["wav_pre_watermark"][0].shape


def test_every_form_of_source_and_voice_gives_the_same_audio(converter, tmp_path):
    expected = converter.convert(BUILTIN_WAV, VOICE2_WAV, seed=3)
    voice = converter.resolve_voice(VOICE2_WAV)
    voice.save(tmp_path / "v.pt")
    samples, rate = soundfile.read(BUILTIN_WAV, dtype="float32")
    data = BUILTIN_WAV.read_bytes()
    for source, target, sample_rate in ((str(BUILTIN_WAV), voice, None), (data, tmp_path / "v.pt", None),
                                        (io.BytesIO(data), str(VOICE2_WAV), None), (samples, voice, rate)):
        np.testing.assert_array_equal(converter.convert(source, target, seed=3, sample_rate=sample_rate), expected)


def test_a_list_converts_together_and_equals_each_alone(converter):
    sources = [BUILTIN_WAV, VOICE2_WAV, BUILTIN_WAV]
    voices = [VOICE2_WAV, None, None]
    together = converter.convert(sources, voices, seed=[1, 2, 3], n_timesteps=3)
    assert isinstance(together, list) and len(together) == 3
    for wav, source, voice, seed in zip(together, sources, voices, (1, 2, 3)):
        np.testing.assert_array_equal(wav, converter.convert(source, voice, seed=seed, n_timesteps=3))


@pytest.fixture(scope="module")
def long_source(clips):
    """About 50 s of sentences and pauses."""
    rng = np.random.default_rng(5)
    wav, _ = speech_with_pauses(clips, list(rng.uniform(0.3, 0.9, 11)))
    return wav


# The options of the long source's conversions that streams are checked against.
LONG_OPTIONS = dict(sample_rate=16000, seed=4, n_timesteps=2, max_piece_seconds=10)


@pytest.fixture(scope="module")
def long_unmarked(converter, long_source) -> np.ndarray:
    """``long_source`` converted once, unmarked, with LONG_OPTIONS: what its streams must equal (the
    three tests comparing with it each converted it again)."""
    return converter.convert(long_source, progress=False, watermark=False, **LONG_OPTIONS)


def test_a_long_source_is_converted_in_pieces_on_its_timeline(converter, long_source, capsys):
    voice = converter.builtin_voice
    pieces = plan_pieces(long_source, 12)
    assert len(pieces) >= 4
    wav = converter.convert(long_source, sample_rate=16000, seed=11, n_timesteps=2, max_piece_seconds=12,
                          watermark=False)
    assert "convert" in capsys.readouterr().err  # the progress bar
    gap = 480 * (voice.prompt_feat.shape[1] - 2 * voice.prompt_token.shape[1])
    whole_tokens = -(-(long_source.size // 160) // 4)
    assert wav.size == 960 * whole_tokens - gap, "the length of the whole source converted at once"

    # Each piece is what S3Gen makes of that piece alone, at the piece's place (fades aside).
    tokens = [converter._piece_tokens(long_source, p) for p in pieces]
    assert [len(t) for t in tokens] == [p.tokens for p in pieces]
    for j, (piece, piece_tokens) in enumerate(zip(pieces, tokens)):
        alone, = converter.s3gen.inference([piece_tokens], [voice], n_timesteps=2, seeds=[11 + j])
        start = 960 * piece.first_token
        inner = slice(1200, alone.size - 1200)
        np.testing.assert_array_equal(wav[start:start + alone.size][inner], alone[inner])


def test_stream_equals_convert_and_yields_before_the_end(converter, long_source, long_unmarked, monkeypatch):
    converted = []
    piece = converter._convert_piece
    monkeypatch.setattr(converter, "_convert_piece", lambda job, i, steps: converted.append(i) or piece(job, i, steps))
    stream = converter.convert_stream(long_source, watermark=False, **LONG_OPTIONS)
    first = next(stream)
    total = len(plan_pieces(long_source, 10))
    assert first.size > 0 and len(converted) <= 2 < total
    np.testing.assert_array_equal(np.concatenate([first, *stream]), long_unmarked)


def test_output_carries_the_watermark_as_the_originals_unless_asked_not_to(converter, long_source, long_unmarked):
    """The original's ChatterboxVC marks every output; so do convert and the streams, by default."""
    options, unmarked = LONG_OPTIONS, long_unmarked
    marked = converter.convert(long_source, progress=False, **options)
    assert not is_marked(detect(unmarked, 24000)) and is_marked(detect(marked, 24000))
    streamed = np.concatenate(list(converter.convert_stream(long_source, **options)))
    assert is_marked(detect(streamed, 24000))
    # The stream marker works on windows of the stream; the whole-file mark differs by its measured
    # junction tolerance (vllm_chatterbox/watermark/streaming.py), far below the mark itself.
    assert streamed.size == marked.size
    assert np.abs(streamed - marked).max() <= 5e-3 < np.abs(marked - unmarked[:marked.size]).max()
    streamed = asyncio.run(_collect(converter.aconvert_stream(long_source, **options)))
    assert is_marked(detect(np.concatenate(streamed), 24000))


async def _collect(stream):
    return [wav async for wav in stream]


def test_closing_a_stream_stops_its_work(converter, long_source, monkeypatch):
    converted = []
    piece = converter._convert_piece
    monkeypatch.setattr(converter, "_convert_piece", lambda job, i, steps: converted.append(i) or piece(job, i, steps))
    stream = converter.convert_stream(long_source, sample_rate=16000, n_timesteps=1, max_piece_seconds=5)
    next(stream)
    stream.close()
    converter._worker.submit(lambda: None).result()  # whatever was queued has run or was cancelled
    assert len(converted) <= 2 < len(plan_pieces(long_source, 5))


def test_async_stream_equals_convert_and_stops_when_closed(converter, long_source, long_unmarked, monkeypatch):
    options = dict(LONG_OPTIONS, watermark=False)

    async def collect(limit=None):
        pieces = []
        stream = converter.aconvert_stream(long_source, **options)
        async for wav in stream:
            pieces.append(wav)
            if limit and len(pieces) == limit:
                await stream.aclose()
                break
        return pieces

    np.testing.assert_array_equal(np.concatenate(asyncio.run(collect())), long_unmarked)
    converted = []
    piece = converter._convert_piece
    monkeypatch.setattr(converter, "_convert_piece", lambda job, i, steps: converted.append(i) or piece(job, i, steps))
    asyncio.run(collect(limit=1))
    converter._worker.submit(lambda: None).result()
    assert len(converted) <= 2 < len(plan_pieces(long_source, 10))


def _fail(*args, **kwargs):
    raise AssertionError("work started before the input was checked")


@pytest.mark.parametrize("call,message", [
    (lambda c: c.convert(np.zeros(16000, dtype=np.float32), sample_rate=16000), "silent"),
    (lambda c: c.convert(np.ones(800, dtype=np.float32) * 0.1, sample_rate=16000), "too short"),
    (lambda c: c.convert(b"not audio"), "not a readable audio file"),
    (lambda c: c.convert(np.ones(16000, dtype=np.float32) * 0.1), "sample_rate is required"),
    (lambda c: c.convert(np.ones(8000, dtype=np.float32) * 0.1, sample_rate=2000), "sample rate 2000 Hz"),
    (lambda c: c.convert([BUILTIN_WAV, b"x"]), "source 1: .*not a readable audio file"),
    (lambda c: c.convert([BUILTIN_WAV, VOICE2_WAV], seed=[1]), "seed: got 1 values for 2 sources"),
    (lambda c: c.convert(BUILTIN_WAV, seed=-1), "seed must be"),
    (lambda c: c.convert(BUILTIN_WAV, n_timesteps=0), "n_timesteps"),
    (lambda c: c.convert(BUILTIN_WAV, max_piece_seconds=60), "max_piece_seconds"),
    (lambda c: c.convert(BUILTIN_WAV, crossfade_ms=-1), "crossfade_ms"),
    (lambda c: c.convert(BUILTIN_WAV, progress="yes"), "progress"),
    (lambda c: c.convert(BUILTIN_WAV, 42), "voice must be"),
    (lambda c: c.convert(BUILTIN_WAV, "missing.pt"), "voice file not found"),
    (lambda c: c.convert([]), "non-empty list"),
    (lambda c: c.convert(3.5), "source must be"),
    (lambda c: c.convert_stream([BUILTIN_WAV]), "one source"),
    (lambda c: c.convert_stream(BUILTIN_WAV, language="en"), "unknown option"),
    (lambda c: c.convert_stream(BUILTIN_WAV, watermark="yes"), "watermark must be"),
    (lambda c: c.convert(BUILTIN_WAV, watermark=1), "watermark must be"),
    (lambda c: c.aconvert_stream(BUILTIN_WAV, n_timesteps=1.5), "n_timesteps"),
])
def test_bad_input_is_a_clear_error_before_any_work(converter, monkeypatch, call, message):
    monkeypatch.setattr(converter.s3gen, "inference", _fail)
    monkeypatch.setattr(converter, "_piece_tokens", _fail)
    with pytest.raises(ValueError, match=message):
        call(converter)


def test_a_voice_for_another_model_is_refused(converter):
    voice = converter.builtin_voice
    wrong = Voice(speaker_emb=voice.speaker_emb, cond_prompt_speech_tokens=voice.cond_prompt_speech_tokens,
                  exaggeration=0.5, prompt_token=voice.prompt_token, prompt_feat=voice.prompt_feat,
                  embedding=torch.zeros(1, 7))
    with pytest.raises(ValueError, match=r"embedding must have shape \(1, 192\)"):
        converter.convert(BUILTIN_WAV, wrong)


def test_turbo_converts_with_its_two_step_meanflow_s3gen(turbo_dir, monkeypatch):
    converter = VoiceConverter.from_dir(turbo_dir, device="cpu")
    assert converter.config.estimator.meanflow
    steps = []
    inference = converter.s3gen.inference
    monkeypatch.setattr(converter.s3gen, "inference",
                        lambda *a, **k: steps.append(k["n_timesteps"]) or inference(*a, **k))
    wav = converter.convert(BUILTIN_WAV, seed=1, watermark=False)
    tokens = converter.source_tokens(BUILTIN_WAV)
    voice = converter.builtin_voice
    assert steps == [2]
    assert wav.size == 480 * (2 * (voice.prompt_token.shape[1] + len(tokens)) - voice.prompt_feat.shape[1])
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0


def test_batched_pieces_equal_one_at_a_time_to_float_rounding(model_dir, long_source):
    """With a GPU-sized cap the pieces of several sources share padded S3Gen batches."""
    batched = VoiceConverter.from_dir(model_dir, device="cpu")
    batched.max_batch_frames = 8192
    calls = []
    inference = batched.s3gen.inference
    batched.s3gen.inference = lambda tokens, *a, **k: calls.append(len(tokens)) or inference(tokens, *a, **k)
    sources = [long_source[:12 * 16000], BUILTIN_WAV]
    together = batched.convert(sources, seed=[5, 6], sample_rate=[16000, None], n_timesteps=2, max_piece_seconds=5,
                               progress=False, watermark=False)
    assert max(calls) > 1
    batched.max_batch_frames = 1
    for wav, source, seed, rate in zip(together, sources, (5, 6), (16000, None)):
        alone = batched.convert(source, seed=seed, sample_rate=rate, n_timesteps=2, max_piece_seconds=5,
                                watermark=False)
        np.testing.assert_allclose(wav, alone, atol=5e-5, rtol=0)
