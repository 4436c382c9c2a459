"""Meanflow S3Gen (Turbo) vs the original's recordings (``tiny-turbo/ref/s3gen_*.npz``, ``e2e_builtin``).

Tolerances (fixture README §3): mu/spks/cond 1e-5, mel from x0 1e-4 (the original's fp32-vs-fp64
spread 1.6e-5), f0 1e-3 Hz, wav from (mel, source) 1e-5; a waveform through our own f0 and
excitation (seeded like the original) 1e-4, since the random vocoder amplifies mel rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.paths import TURBO_CKPT, TURBO_REF
from vllm_chatterbox.config import tiny_turbo_config
from vllm_chatterbox.s3gen.estimator import attention_bias
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.voice.voice import Voice

torch.set_num_threads(1)

CASES = {"s3gen_12tok": 4303, "s3gen_60tok": 4304}
COND_TOL = 1e-5
MEL_TOL = 1e-4
WAV_TOL = 1e-5
SEEDED_WAV_TOL = 1e-4


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(TURBO_REF / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def model() -> S3Gen:
    return S3Gen.from_file(TURBO_CKPT / "s3gen_meanflow.safetensors", tiny_turbo_config())


@pytest.fixture(scope="module")
def voice() -> Voice:
    return Voice.load(TURBO_CKPT / "conds.pt")


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


@pytest.mark.parametrize("name", CASES)
def test_flow_inputs_and_solver_steps(model, voice, name):
    case = load(name)
    tokens = _t(case["speech_tokens"]).long()
    inputs = model.flow.prepare([tokens], [voice.prompt_token[0]], [voice.prompt_feat[0]], voice.embedding)
    torch.testing.assert_close(inputs.mu, _t(case["mu"]), atol=COND_TOL, rtol=0)
    torch.testing.assert_close(inputs.spks, _t(case["spks_projected"]), atol=COND_TOL, rtol=0)
    torch.testing.assert_close(inputs.cond, _t(case["cond"]), atol=0, rtol=0)
    torch.testing.assert_close(inputs.mask, _t(case["mask"]), atol=0, rtol=0)

    estimator = model.flow.decoder.estimator
    t, r = _t(case["step_t"]), _t(case["step_r"])
    torch.testing.assert_close(estimator.mean_time_embedding(t, r), _t(case["time_mixer_out"]), atol=1e-5, rtol=0)
    x0 = _t(case["x0"])
    # The first Euler step (t 0 -> r 0.5) by hand, from the recorded solver input.
    stacked = torch.cat([x0, inputs.mu, inputs.spks.unsqueeze(-1).expand_as(x0), inputs.cond], dim=1)
    velocity = estimator(stacked, inputs.mask, estimator.mean_time_embedding(t[:1], r[:1]), attention_bias(inputs.mask))
    torch.testing.assert_close(x0 + 0.5 * velocity, _t(case["x_after_step1"]), atol=MEL_TOL, rtol=0)
    full = model.flow(inputs, x0, n_timesteps=2)
    torch.testing.assert_close(full, _t(case["mel_full"]), atol=MEL_TOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_mel_and_wav_from_recorded_noise_and_source(model, voice, name):
    case = load(name)
    mel, = model.tokens_to_mel([case["speech_tokens"].tolist()], [voice], noise=[_t(case["x0"])])
    torch.testing.assert_close(mel, _t(case["mel"][0]), atol=MEL_TOL, rtol=0)
    f0 = model.mel2wav.f0_predictor(_t(case["mel"]))
    torch.testing.assert_close(f0, _t(case["f0"]), atol=1e-3, rtol=0)
    wav, = model.vocode([_t(case["mel"][0])], sources=[_t(case["source"])])
    torch.testing.assert_close(wav, _t(case["wav"][0]), atol=WAV_TOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_seeded_run_draws_the_originals_noise(model, voice, name):
    """A generator seeded as the original's global RNG gives its x0 (both draws) and its waveform."""
    case = load(name)
    generator = torch.Generator().manual_seed(CASES[name])
    wav, = model.inference([case["speech_tokens"].tolist()], [voice], generators=[generator])
    np.testing.assert_allclose(wav, case["wav"][0], atol=SEEDED_WAV_TOL, rtol=0)


def test_batch_of_both_cases_equals_recordings(model, voice):
    cases = [load(name) for name in CASES]
    mels = model.tokens_to_mel([c["speech_tokens"].tolist() for c in cases], [voice, voice],
                               noise=[_t(c["x0"]) for c in cases], max_batch_frames=10**6)
    for mel, case in zip(mels, cases):
        torch.testing.assert_close(mel, _t(case["mel"][0]), atol=MEL_TOL, rtol=0)


def test_e2e_s3gen_part(model, voice):
    case = load("e2e_builtin")
    mel, = model.tokens_to_mel([case["tokens_to_s3gen"].tolist()], [voice], noise=[_t(case["x0"])])
    torch.testing.assert_close(mel, _t(case["mel"][0]), atol=MEL_TOL, rtol=0)
    wav, = model.vocode([mel], sources=[_t(case["source"])])
    torch.testing.assert_close(wav, _t(case["wav_pre_watermark"][0]), atol=SEEDED_WAV_TOL, rtol=0)


def test_regular_s3gen_file_is_refused_by_the_meanflow_model():
    from tests.paths import FIXTURE_CKPT

    with pytest.raises(ValueError, match="time_embed_mixer"):
        S3Gen.from_file(FIXTURE_CKPT / "s3gen.safetensors", tiny_turbo_config())
