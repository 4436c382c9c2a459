"""S3Gen in bfloat16 (``dtype="bfloat16"``): its deviation from the original's fp32 recordings is bounded.

Measured on the tiny fixtures (CPU, 2026-12-01): mel from the recorded noise, max |delta| 0.047 /
0.051 / 0.056 and mean |delta| 0.0092 / 0.0086 / 0.0095 (|mel| up to 6.7) for the 30-token,
90-token and 4-step cases; waveform from that mel and the recorded source 45.2 dB SNR against
the recorded waveform (the bf16 vocoder alone: 45.2 dB); end to end against the fp32 model on
the same seeds (own f0 and excitation) 33.2 / 36.2 dB. Turbo's meanflow: mel max 0.031 / 0.036,
mean 0.0069 / 0.0065, 43.1 / 42.9 dB. The bounds sit just above; the fp32 path's exactness is
tested (unchanged) in test_flow / test_model / test_hift.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.paths import FIXTURE_CKPT, TURBO_CKPT, TURBO_REF
from vllm_chatterbox.config import tiny_config, tiny_turbo_config
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.s3gen.streaming import StreamSchedule, new_stream, vocode_stream_chunks
from vllm_chatterbox.voice.voice import Voice

torch.set_num_threads(1)

MEL_MAX_TOL = 0.07
MEL_MEAN_TOL = 0.012
MIN_WAV_SNR_DB = 43.0
TURBO_MEL_MAX_TOL = 0.05
TURBO_MEL_MEAN_TOL = 0.009
TURBO_MIN_WAV_SNR_DB = 41.0
SEEDED_MIN_WAV_SNR_DB = 31.0  # bf16 vs fp32 model, own f0 and excitation: measured 33.2 / 36.2 dB


def snr_db(reference: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - x).pow(2).sum()))


@pytest.fixture(scope="module")
def bf16_model() -> S3Gen:
    return S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_config(), dtype="bfloat16")


def test_bf16_keeps_its_fp32_islands(bf16_model):
    estimator = bf16_model.flow.decoder.estimator
    assert bf16_model.compute_dtype == torch.bfloat16 and bf16_model.dtype == torch.float32
    assert estimator.down_blocks[0][1][0].attn1.to_q.weight.dtype == torch.bfloat16
    norms = [m for m in estimator.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert estimator.time_mlp.linear_1.weight.dtype == torch.float32
    hift = bf16_model.mel2wav
    assert hift.conv_pre.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in [*hift.f0_predictor.parameters(), *hift.m_source.parameters()])
    assert all(p.dtype == torch.float32 for p in bf16_model.flow.encoder.parameters())


@pytest.mark.parametrize("name", ["s3gen_30tok_n10", "s3gen_90tok_n10", "s3gen_30tok_n4"])
def test_bf16_mel_and_wav_stay_close_to_the_original(bf16_model, builtin_voice, load_case, name):
    case = load_case(name)
    mel, = bf16_model.tokens_to_mel([case["speech_tokens"][0].tolist()], [builtin_voice],
                                    n_timesteps=len(case["t_span"]) - 1,
                                    noise=[torch.from_numpy(case["cfm_noise_z"])])
    assert mel.dtype == torch.float32
    delta = (mel - torch.from_numpy(case["mel"][0])).abs()
    assert delta.max() < MEL_MAX_TOL and delta.mean() < MEL_MEAN_TOL, (float(delta.max()), float(delta.mean()))
    wav, = bf16_model.vocode([mel], sources=[torch.from_numpy(case["source"])])
    assert wav.dtype == torch.float32
    assert snr_db(torch.from_numpy(case["wav"][0]), wav) > MIN_WAV_SNR_DB


@pytest.mark.parametrize("name", ["s3gen_12tok", "s3gen_60tok"])
def test_bf16_meanflow_stays_close_to_the_original(name):
    model = S3Gen.from_file(TURBO_CKPT / "s3gen_meanflow.safetensors", tiny_turbo_config(), dtype="bfloat16")
    with np.load(TURBO_REF / f"{name}.npz") as data:
        case = dict(data)
    mel, = model.tokens_to_mel([case["speech_tokens"].tolist()], [Voice.load(TURBO_CKPT / "conds.pt")],
                               noise=[torch.from_numpy(case["x0"])])
    delta = (mel - torch.from_numpy(case["mel"][0])).abs()
    assert delta.max() < TURBO_MEL_MAX_TOL and delta.mean() < TURBO_MEL_MEAN_TOL, (float(delta.max()), float(delta.mean()))
    wav, = model.vocode([mel], sources=[torch.from_numpy(case["source"])])
    assert snr_db(torch.from_numpy(case["wav"][0]), wav) > TURBO_MIN_WAV_SNR_DB


def test_bf16_batched_and_seeded_paths_run(bf16_model, builtin_voice, voice2):
    """The batched path with seeded (positional) noise in bf16: fp32 audio of the right length,
    close to the fp32 model on the same seeds. Lower SNR than from a recorded source: each
    vocoder derives its excitation from its own mel (0.1-0.15 Hz f0 differences)."""
    fp32 = S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_config())
    tokens = [list(range(100, 130)), list(range(200, 212))]
    voices = [builtin_voice, voice2]
    ours = bf16_model.inference(tokens, voices, n_timesteps=4, seeds=[3, 4])
    exact = fp32.inference(tokens, voices, n_timesteps=4, seeds=[3, 4])
    for a, b in zip(ours, exact):
        assert a.dtype == np.float32 and a.shape == b.shape
        assert snr_db(torch.from_numpy(b), torch.from_numpy(a)) > SEEDED_MIN_WAV_SNR_DB


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="s3gen dtype must be one of"):
        S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_config(), dtype="float16")


def test_bf16_streaming_runs_and_one_final_piece_equals_the_one_shot(bf16_model, builtin_voice):
    tokens = list(range(300, 340))
    wav, = bf16_model.inference([tokens], [builtin_voice], n_timesteps=4, seeds=[9])
    state = new_stream(bf16_model, builtin_voice, n_timesteps=4, seed=9,
                       schedule=StreamSchedule(chunk_tokens=(10_000,)))
    piece, = vocode_stream_chunks(bf16_model, [(state, tokens, True)])
    np.testing.assert_array_equal(piece, wav)

    state = new_stream(bf16_model, builtin_voice, n_timesteps=4, seed=9)
    pieces = [vocode_stream_chunks(bf16_model, [(state, tokens[i:i + 10], i + 10 >= len(tokens))])[0]
              for i in range(0, len(tokens), 10)]
    assert state.finished and sum(len(p) for p in pieces) == len(wav)
    assert all(p.dtype == np.float32 for p in pieces)
