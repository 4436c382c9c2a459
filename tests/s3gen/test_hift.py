"""HiFT vocoder against the original's recorded outputs (tiny fixture, README §2d and §3)."""


import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.signal import get_window

from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.s3gen.hift import HiFTGenerator, stft_window, trim_fade

torch.set_num_threads(1)

from tests.paths import FIXTURE_DIR as FIXTURES
# (case, the global seed the fixture builder set before the original's HiFT call)
CASES = [("s3gen_30tok_n10", 1296), ("s3gen_90tok_n10", 1298)]
SAMPLES_PER_FRAME = 480


def _official_sd() -> dict[str, torch.Tensor]:
    sd = load_file(FIXTURES / "ckpt" / "s3gen.safetensors")
    return {k[len("mel2wav."):]: v for k, v in sd.items() if k.startswith("mel2wav.")}


@pytest.fixture(scope="module")
def hift_sd() -> dict[str, torch.Tensor]:
    return _official_sd()


@pytest.fixture(scope="module")
def hift(hift_sd) -> HiFTGenerator:
    m = HiFTGenerator(tiny_config().hift)
    m.load_official_state_dict(hift_sd)
    return m.eval()


def _case(name: str) -> dict[str, torch.Tensor]:
    data = np.load(FIXTURES / "ref" / f"{name}.npz")
    return {k: torch.from_numpy(data[k]) for k in ("mel", "f0", "sine_phase", "source", "wav",
                                                   "trim_fade")}


def _faded(wav: torch.Tensor) -> torch.Tensor:
    fade = trim_fade()
    return torch.cat([wav[:fade.numel()] * fade, wav[fade.numel():]])


def _lengths(*lengths: int) -> torch.Tensor:
    return torch.tensor(lengths, dtype=torch.long)


def test_trim_fade_and_window_match_the_original() -> None:
    fade = _case("s3gen_30tok_n10")["trim_fade"]
    assert torch.equal(trim_fade(960), fade)
    scipy_window = get_window("hann", 16, fftbins=True).astype(np.float32)
    assert torch.equal(stft_window(16), torch.from_numpy(scipy_window))


@pytest.mark.parametrize("name,seed", CASES)
def test_f0_matches_fixture(hift, name, seed) -> None:
    # README §3 allows 1e-3 Hz (f0 ~173 Hz). Measured 0.0 (same folded weights, same conv
    # shapes); our float64 predictor is 1.1e-5 Hz from the recorded fp32 values.
    case = _case(name)
    with torch.no_grad():
        f0 = hift.f0_predictor(case["mel"])
        f0_64 = copy.deepcopy(hift.f0_predictor).double()(case["mel"].double())
    assert (f0 - case["f0"]).abs().max() < 1e-4
    assert (f0_64 - case["f0"].double()).abs().max() < 1e-4


@pytest.mark.parametrize("name,seed", CASES)
def test_wav_from_recorded_source_matches_fixture(hift, name, seed) -> None:
    # README §3 allows 1e-5 (|wav| <= 0.18). Measured 1.2e-7 (own iSTFT's overlap-add order;
    # float64 run 1.0e-7).
    case = _case(name)
    frames = case["mel"].shape[-1]
    wav = hift.inference(case["mel"], _lengths(frames), sources=[case["source"]])[0]
    assert wav.shape == (SAMPLES_PER_FRAME * frames,)
    assert (_faded(wav) - case["wav"][0]).abs().max() < 1e-6


@pytest.mark.parametrize("name,seed", CASES)
def test_seeded_generator_reproduces_the_original_excitation(hift, name, seed) -> None:
    # The fixture builder seeded the global RNG before the original's HiFT call; a generator with
    # that seed replays the same draws (phases, then noise), so even the noisy source matches.
    case = _case(name)
    frames = case["f0"].shape[-1]
    with torch.no_grad():
        source = hift.excitation(case["f0"], [frames], [torch.Generator().manual_seed(seed)])
    # Same ops on the same f0: 1e-6 (measured 0.0).
    assert (source - case["source"]).abs().max() < 1e-6
    # Whole path from the mel. The excitation's phase integrates f0 over up to 86k samples, so
    # the wav inherits f0's last bit: the recorded f0 is 0.76 ulp from our float64 predictor's,
    # and the recorded wav is 1.4e-5 (mean 1.3e-6) from the wav that the float64 f0, rounded to
    # fp32, gives; a random +-1 ulp change of the recorded f0 moves the wav by 2.3e-5. Our fp32 f0
    # (0.89 ulp from float64) is bit-equal to the recording on AMD EPYC / AVX2 (wav 4.5e-8) and
    # 1 ulp off at some frames on Intel Xeon / AVX-512, where MKL's sgemm (which the predictor's
    # convolutions run on) sums in another order (wav max 1.3e-5, mean 1.2e-6). Bound: about
    # twice the recording's own error.
    wav = hift.inference(case["mel"], _lengths(frames),
                          generators=[torch.Generator().manual_seed(seed)])[0]
    diff = (_faded(wav) - case["wav"][0]).abs()
    assert diff.max() < 3e-5 and diff.mean() < 3e-6


@pytest.mark.parametrize("name,seed", CASES)
def test_sine_part_matches_given_the_recorded_phases(hift, name, seed) -> None:
    # Without noise, the excitation from the recorded f0 and phases differs from the recorded one
    # only by the original's voiced noise (std 0.003 per harmonic) through Linear(9, 1) and tanh.
    case = _case(name)
    f0, frames = case["f0"], case["f0"].shape[-1]
    noise = torch.zeros(1, 9, SAMPLES_PER_FRAME * frames)
    with torch.no_grad():
        sine = hift.m_source(f0, case["sine_phase"], noise)
        expected_std = (0.003 * hift.m_source.l_linear.weight.norm() * (1 - sine**2).mean()).item()
    residual = case["source"] - sine
    assert abs(residual.mean().item()) < 0.1 * expected_std
    assert residual.std().item() == pytest.approx(expected_std, rel=0.05)
    assert residual.abs().max() < 6 * expected_std


def test_own_noise_statistics_are_sane(hift) -> None:
    case = _case("s3gen_30tok_n10")
    f0, frames = case["f0"], case["f0"].shape[-1]
    num_samples = SAMPLES_PER_FRAME * frames
    phases, noise = hift.m_source.draw_noise(num_samples, torch.Generator().manual_seed(7),
                                              torch.device("cpu"))
    assert phases.shape == (9, 1) and noise.shape == (9, num_samples)
    assert phases.abs().max() <= np.pi
    assert abs(noise.mean().item()) < 0.01 and noise.std().item() == pytest.approx(1.0, rel=0.02)
    # A fresh draw differs from the recorded source only by phases and noise: every harmonic's
    # amplitude stays 0.1, so the excitation's overall level matches the recorded one.
    with torch.no_grad():
        source = hift.excitation(f0, [frames], [torch.Generator().manual_seed(7)])
    assert source.std().item() == pytest.approx(case["source"].std().item(), rel=0.2)
    assert source.abs().max() < 1


def test_same_seed_same_waveform_other_seed_differs(hift) -> None:
    mel = _case("s3gen_30tok_n10")["mel"][..., :20]
    runs = [hift.inference(mel, _lengths(20), generators=[torch.Generator().manual_seed(s)])[0]
            for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() > 1e-3


def test_both_key_spellings_load_to_identical_outputs(hift_sd) -> None:
    legacy = {}
    for key, value in hift_sd.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        legacy[key] = value
    assert legacy.keys() != hift_sd.keys()
    a = HiFTGenerator(tiny_config().hift)
    a.load_official_state_dict(hift_sd)
    b = HiFTGenerator(tiny_config().hift)
    b.load_official_state_dict(legacy)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    case = _case("s3gen_30tok_n10")
    out = [m.inference(case["mel"], _lengths(59), sources=[case["source"]])[0] for m in (a, b)]
    assert torch.equal(out[0], out[1])


def test_official_state_dict_round_trips(hift, hift_sd) -> None:
    exported = hift.official_state_dict()
    assert exported.keys() == hift_sd.keys()
    for key, value in exported.items():
        assert value.shape == hift_sd[key].shape, key
    reloaded = HiFTGenerator(tiny_config().hift)
    reloaded.load_official_state_dict(exported)
    for key, value in hift.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=1e-6, atol=1e-7)


def test_strict_loading_names_the_bad_keys(hift_sd) -> None:
    m = HiFTGenerator(tiny_config().hift)
    broken = dict(hift_sd)
    del broken["conv_post.bias"]
    broken["conv_post.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"conv_post\.bias.*conv_post\.extra"):
        m.load_official_state_dict(broken)
    half = dict(hift_sd)
    del half["conv_pre.parametrizations.weight.original0"]
    with pytest.raises(ValueError, match="conv_pre"):
        m.load_official_state_dict(half)


def _batch_of_three() -> tuple[torch.Tensor, list[int]]:
    """Three mels of different lengths, padded with garbage (not zeros) past each length."""
    long_mel = _case("s3gen_90tok_n10")["mel"][0]
    items = [long_mel[:, 100:137], long_mel[:, :61], long_mel[:, 20:43]]
    lengths = [x.shape[-1] for x in items]
    mel = torch.randn(3, 80, max(lengths), generator=torch.Generator().manual_seed(3)) * 5
    for i, x in enumerate(items):
        mel[i, :, :x.shape[-1]] = x
    return mel, lengths


def test_batched_equals_one_at_a_time_with_sources(hift) -> None:
    # Padding must be invisible: per-item results within 1e-5 (measured ~1.3e-7: batched convs
    # round differently from batch-1 convs).
    mel, lengths = _batch_of_three()
    g = torch.Generator().manual_seed(11)
    sources = [0.2 * torch.randn(1, 1, SAMPLES_PER_FRAME * n, generator=g) for n in lengths]
    batched = hift.inference(mel, _lengths(*lengths), sources=sources)
    for i, n in enumerate(lengths):
        alone = hift.inference(mel[i:i + 1, :, :n], _lengths(n), sources=[sources[i]])[0]
        assert batched[i].shape == alone.shape == (SAMPLES_PER_FRAME * n,)
        assert (batched[i] - alone).abs().max() < 1e-5, i


def test_batched_equals_one_at_a_time_with_generators(hift) -> None:
    # Each item's draws come from its own generator, f0 is predicted per item; measured ~1.1e-7.
    mel, lengths = _batch_of_three()
    seeds = [21, 22, 23]
    batched = hift.inference(mel, _lengths(*lengths),
                              generators=[torch.Generator().manual_seed(s) for s in seeds])
    for i, (n, seed) in enumerate(zip(lengths, seeds)):
        alone = hift.inference(mel[i:i + 1, :, :n], _lengths(n),
                                generators=[torch.Generator().manual_seed(seed)])[0]
        assert (batched[i] - alone).abs().max() < 1e-5, i


def test_bad_inputs_raise_value_error(hift) -> None:
    mel = torch.zeros(2, 80, 10)
    with pytest.raises(ValueError, match="mel must be"):
        hift.inference(torch.zeros(2, 79, 10), _lengths(10, 10))
    with pytest.raises(ValueError, match="mel must be"):
        hift.inference(torch.zeros(80, 10), _lengths(10))
    with pytest.raises(ValueError, match="mel_lengths must be"):
        hift.inference(mel, _lengths(10))
    with pytest.raises(ValueError, match="mel_lengths must be"):
        hift.inference(mel, torch.tensor([10.0, 10.0]))
    with pytest.raises(ValueError, match="mel_lengths must lie"):
        hift.inference(mel, _lengths(10, 11))
    with pytest.raises(ValueError, match="mel_lengths must lie"):
        hift.inference(mel, _lengths(10, 0))
    with pytest.raises(ValueError, match="generators"):
        hift.inference(mel, _lengths(10, 10), generators=[None])
    with pytest.raises(ValueError, match="sources"):
        hift.inference(mel, _lengths(10, 10), sources=[torch.zeros(1, 1, 4800)])
    with pytest.raises(ValueError, match=r"sources\[1\] must hold 4800"):
        hift.inference(mel, _lengths(10, 10),
                        sources=[torch.zeros(1, 1, 4800), torch.zeros(1, 1, 4000)])
