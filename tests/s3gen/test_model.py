"""S3Gen front door: recorded cases end to end, batching, determinism, loading, input errors.

Tolerances: mel from the recorded noise 1e-5 (measured <= 2.9e-6; the README's 1e-4 would hide
an eps-level estimator change, see test_flow); waveform from (mel, recorded source) 1e-6
(measured 1.2e-7; README 1e-5). A padded batch differs from one-at-a-time
runs only in fp32 summation order: mels agree to ~2e-6; the random-weight vocoder amplifies
that (exp magnitudes), so waveforms are compared at 5e-5 (measured ~6e-6).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.s3gen.model import S3Gen, length_groups

torch.set_num_threads(1)

S3GEN_CASES = ("s3gen_30tok_n10", "s3gen_90tok_n10", "s3gen_30tok_n4")
CFM_SEEDS = {"s3gen_30tok_n10": 1295, "s3gen_90tok_n10": 1297, "s3gen_30tok_n4": 1299}
MEL_TOL = 1e-5
WAV_TOL = 1e-6
BATCH_MEL_TOL = 1e-5
BATCH_WAV_TOL = 5e-5


def _steps(case) -> int:
    return len(case["t_span"]) - 1


@pytest.mark.parametrize("name", S3GEN_CASES)
def test_mel_from_recorded_noise(model, builtin_voice, load_case, name):
    case = load_case(name)
    mel, = model.tokens_to_mel([case["speech_tokens"][0].tolist()], [builtin_voice], n_timesteps=_steps(case),
                               noise=[torch.from_numpy(case["cfm_noise_z"])])
    torch.testing.assert_close(mel, torch.from_numpy(case["mel"][0]), atol=MEL_TOL, rtol=0)


@pytest.mark.parametrize("name", S3GEN_CASES)
def test_generator_draws_the_originals_noise(model, builtin_voice, load_case, name):
    """A generator seeded like the original's global RNG gives the same CFM noise, hence the same mel."""
    case = load_case(name)
    mel, = model.tokens_to_mel([torch.from_numpy(case["speech_tokens"])], [builtin_voice], n_timesteps=_steps(case),
                               generators=[torch.Generator().manual_seed(CFM_SEEDS[name])])
    torch.testing.assert_close(mel, torch.from_numpy(case["mel"][0]), atol=MEL_TOL, rtol=0)


@pytest.mark.parametrize("name", S3GEN_CASES[:2])
def test_waveform_from_recorded_source(model, builtin_voice, load_case, name):
    case = load_case(name)
    source = torch.from_numpy(case["source"])
    expected = torch.from_numpy(case["wav"][0])
    torch.testing.assert_close(torch.from_numpy(case["trim_fade"]), model.trim_fade, atol=0, rtol=0)

    wav, = model.vocode([torch.from_numpy(case["mel"][0])], sources=[source])
    torch.testing.assert_close(wav, expected, atol=WAV_TOL, rtol=0)
    assert not wav[:480].any(), "trim fade zeroes the first 20 ms"

    # End to end from tokens (our own mel, recorded noise and source).
    mel, = model.tokens_to_mel([case["speech_tokens"][0]], [builtin_voice], n_timesteps=_steps(case),
                               noise=[torch.from_numpy(case["cfm_noise_z"][0])])
    wav, = model.vocode([mel], sources=[source])
    torch.testing.assert_close(wav, expected, atol=WAV_TOL, rtol=0)


def _requests(builtin_voice, voice2):
    gen = torch.Generator().manual_seed(11)
    tokens = [torch.randint(0, 6561, (n,), generator=gen).tolist() for n in (4, 37, 12, 25)]
    return tokens, [builtin_voice, voice2, voice2, builtin_voice]


def _generators(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.mark.parametrize("max_batch_frames", [8192, 500])
def test_batched_equals_one_at_a_time(model, builtin_voice, voice2, max_batch_frames):
    """4 items, 2 voices, different lengths; 500 frames forces several length groups."""
    tokens, voices = _requests(builtin_voice, voice2)
    batched = model.inference(tokens, voices, n_timesteps=3, generators=_generators(100, 4),
                              max_batch_frames=max_batch_frames)
    mels = model.tokens_to_mel(tokens, voices, n_timesteps=3, generators=_generators(100, 4),
                               max_batch_frames=max_batch_frames)
    for i, (toks, voice, gen) in enumerate(zip(tokens, voices, _generators(100, 4))):
        alone, = model.inference([toks], [voice], n_timesteps=3, generators=[gen])
        frames = 2 * (voice.prompt_token.shape[1] + len(toks)) - voice.prompt_feat.shape[1]
        assert isinstance(batched[i], np.ndarray) and batched[i].dtype == np.float32
        assert batched[i].shape == alone.shape == (480 * frames,)
        np.testing.assert_allclose(batched[i], alone, atol=BATCH_WAV_TOL, rtol=0)

        mel_alone, = model.tokens_to_mel([toks], [voice], n_timesteps=3, generators=_generators(100 + i, 1))
        torch.testing.assert_close(mels[i], mel_alone, atol=BATCH_MEL_TOL, rtol=0)


def test_cpu_default_is_one_clip_per_batch_and_equal(model, builtin_voice, voice2, monkeypatch):
    """On a CPU a call without a cap runs each clip alone (bench/s3gen.py: batching is slower
    there); the waveforms equal one explicitly batched call."""
    tokens, voices = _requests(builtin_voice, voice2)
    batch_sizes = []
    flow_batch = model._flow_batch
    monkeypatch.setattr(model, "_flow_batch", lambda items, steps: batch_sizes.append(len(items)) or flow_batch(items, steps))
    default = model.inference(tokens, voices, n_timesteps=3, generators=_generators(100, 4))
    assert batch_sizes == [1, 1, 1, 1]
    batch_sizes.clear()
    batched = model.inference(tokens, voices, n_timesteps=3, generators=_generators(100, 4), max_batch_frames=8192)
    assert batch_sizes == [4]
    for a, b in zip(default, batched):
        np.testing.assert_allclose(a, b, atol=BATCH_WAV_TOL, rtol=0)


def test_fixed_generators_are_deterministic(model, builtin_voice, voice2):
    tokens, voices = _requests(builtin_voice, voice2)
    first = model.inference(tokens, voices, n_timesteps=2, generators=_generators(5, 4))
    again = model.inference(tokens, voices, n_timesteps=2, generators=_generators(5, 4))
    other = model.inference(tokens, voices, n_timesteps=2, generators=_generators(50, 4))
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - c).max() > 1e-3

    torch.manual_seed(3)
    global_rng = model.inference(tokens[:1], voices[:1], n_timesteps=2)
    torch.manual_seed(3)
    np.testing.assert_array_equal(global_rng[0], model.inference(tokens[:1], voices[:1], n_timesteps=2)[0])


def testlength_groups_sort_and_cap():
    assert length_groups([300, 100, 200, 100], 400) == [[1, 3], [2], [0]]
    assert length_groups([300, 100, 200, 100], 10_000) == [[1, 3, 2, 0]]
    assert length_groups([900], 100) == [[0]]  # an item longer than the cap still runs, alone


def _legacy_spelling(state_dict):
    renamed = {}
    for key, value in state_dict.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        renamed[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    return renamed


def test_loads_both_weight_norm_spellings(model, official_state_dict, builtin_voice):
    assert any(".parametrizations.weight.original1" in k for k in official_state_dict)
    legacy = _legacy_spelling(official_state_dict)
    assert any(k.endswith(".weight_v") for k in legacy)
    from_legacy = S3Gen.from_file(legacy, tiny_config())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(from_legacy.state_dict()[key], value, atol=0, rtol=0)


def test_official_state_dict_round_trip(model, official_state_dict):
    exported = model.official_state_dict()
    needed = {k: tuple(v.shape) for k, v in official_state_dict.items() if k.startswith(("flow.", "mel2wav."))}
    assert {k: tuple(v.shape) for k, v in exported.items()} == needed
    reloaded = S3Gen.from_file(exported, tiny_config())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, atol=1e-6, rtol=1e-6)


def test_loading_errors_name_the_keys(official_state_dict):
    missing = dict(official_state_dict)
    del missing["flow.encoder.after_norm.weight"]
    with pytest.raises(ValueError, match="flow.encoder.after_norm.weight"):
        S3Gen.from_file(missing, tiny_config())

    meanflow = dict(official_state_dict)
    meanflow["flow.decoder.estimator.time_embed_mixer.weight"] = torch.zeros(128, 256)
    with pytest.raises(ValueError, match="time_embed_mixer"):
        S3Gen.from_file(meanflow, tiny_config())

    stray = dict(official_state_dict)
    stray["t3.something"] = torch.zeros(1)
    with pytest.raises(ValueError, match="t3.something"):
        S3Gen.from_file(stray, tiny_config())

    with pytest.raises(ValueError, match="shapes"):
        S3Gen.from_file(official_state_dict, dataclasses.replace(
            tiny_config(), flow=dataclasses.replace(tiny_config().flow, linear_units=96)))

    with pytest.raises(ValueError, match="not found"):
        S3Gen.from_file("/nonexistent/s3gen.safetensors", tiny_config())


def test_bad_inputs_raise_clear_errors(model, builtin_voice):
    voices = [builtin_voice, builtin_voice]
    with pytest.raises(ValueError, match=r"item 1: token id 6561 at position 2"):
        model.inference([[1, 2, 3], [4, 5, 6561]], voices)
    with pytest.raises(ValueError, match=r"item 0: token id -1"):
        model.tokens_to_mel([[-1, 2]], voices[:1])
    with pytest.raises(ValueError, match="item 1: empty token list"):
        model.inference([[1, 2], []], voices)
    with pytest.raises(ValueError, match="integers"):
        model.inference([torch.tensor([1.0, 2.0])], voices[:1])
    with pytest.raises(ValueError, match="n_timesteps"):
        model.inference([[1, 2]], voices[:1], n_timesteps=0)
    with pytest.raises(ValueError, match="2 token lists but 1 voices"):
        model.inference([[1], [2]], voices[:1])
    with pytest.raises(ValueError, match="token_lists is empty"):
        model.inference([], [])
    with pytest.raises(ValueError, match=r"noise\[0\] has shape \(80, 10\), expected \(80, 200\)"):
        model.inference([[1, 2, 3]], voices[:1], noise=[torch.zeros(80, 10)])
    with pytest.raises(ValueError, match="generators has 1 entries for 2 items"):
        model.inference([[1], [2]], voices, generators=[None])
    short_prompt = dataclasses.replace(builtin_voice, prompt_token=builtin_voice.prompt_token[:, :50])
    with pytest.raises(ValueError, match="nothing would be generated"):
        model.inference([[1]], [short_prompt])
