"""CAMPPlus (``speaker_encoder.*`` of s3gen.safetensors) against the original's x-vector of voice2."""

from __future__ import annotations

import copy

import pytest
import torch

from vllm_chatterbox.config import CAMPPlusConfig
from vllm_chatterbox.voice.campplus import CAMPPlus

from .conftest import KALDI_FBANK_BOUND, assert_matches_recording, strip_prefix

torch.set_num_threads(1)


def test_keys_equal_official_file(campplus, s3gen_state):
    official = strip_prefix(s3gen_state, "speaker_encoder.")
    ours = campplus.state_dict()
    assert set(ours) == set(official)
    assert all(ours[k].shape == official[k].shape for k in official)


def test_full_size_layout():
    # Released sizes (growth 32, bottleneck 128, 128 initial channels) give the documented widths.
    state = CAMPPlus(CAMPPlusConfig()).state_dict()
    assert state["xvector.tdnn.linear.weight"].shape == (128, 320, 5)
    assert state["xvector.transit1.linear.weight"].shape == (256, 512, 1)
    assert state["xvector.transit3.linear.weight"].shape == (512, 1024, 1)
    assert state["xvector.dense.linear.weight"].shape == (192, 1024, 1)
    assert "xvector.dense.nonlinear.batchnorm.weight" not in state  # affine-free last BatchNorm


def test_features_match_fixture(campplus, ref):
    feats = campplus.features(torch.from_numpy(ref["ref16_torchaudio"][0]))
    # As test_features.test_kaldi_fbank_matches_fixture (measured numbers: KALDI_FBANK_BOUND).
    assert_matches_recording(feats, ref["campplus_fbank"][0], KALDI_FBANK_BOUND)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_xvector_from_recorded_fbank(campplus, ref, dtype):
    with torch.inference_mode():
        xvec = copy.deepcopy(campplus).to(dtype)(torch.from_numpy(ref["campplus_fbank"]).to(dtype))
    assert xvec.shape == (1, 192)
    # README 3 allows 1e-4. Measured 4.1e-8 in fp32 and 5.2e-8 in fp64 (x-vector values ~1):
    # the gap is the recording's fp32 rounding, so 1e-6 leaves no room for a formula change.
    assert (xvec.double() - torch.from_numpy(ref["xvector"]).double()).abs().max().item() <= 1e-6


def test_xvector_from_wav(campplus, ref):
    xvec = campplus.inference(torch.from_numpy(ref["ref16_torchaudio"]))
    # README 3 allows 1e-3 from the wav. Measured 6.0e-8 (fp64 run: 5.3e-8).
    assert (xvec - torch.from_numpy(ref["xvector"])).abs().max().item() <= 1e-6


def test_rejects_batches_and_1d(campplus):
    for bad in (torch.zeros(16000), torch.zeros(2, 16000)):
        with pytest.raises(ValueError, match="shape"):
            campplus.inference(bad)
