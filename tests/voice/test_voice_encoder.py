"""Voice encoder (ve.safetensors) against the original's recorded embeddings of voice2."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vllm_chatterbox.config import VoiceEncoderConfig
from vllm_chatterbox.voice.voice_encoder import VoiceEncoder

from .conftest import CKPT

torch.set_num_threads(1)


def test_keys_equal_official_file(voice_encoder):
    official = load_file(str(CKPT / "ve.safetensors"))
    ours = voice_encoder.state_dict()
    assert set(ours) == set(official)
    assert all(ours[k].shape == official[k].shape for k in official)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_from_recorded_mel(voice_encoder, ref, dtype):
    emb = copy.deepcopy(voice_encoder).to(dtype).embed_mel(torch.from_numpy(ref["ve_mel_trimmed"]).to(dtype))
    assert emb.shape == (1, 256)
    # README 3 allows 1e-5. Measured 0.0 in fp32 and 2.7e-8 in fp64 (the recording's rounding).
    assert (emb.double() - torch.from_numpy(ref["ve_embed_utt"]).double()).abs().max().item() <= 1e-6


def test_embedding_from_wav(voice_encoder, ref):
    emb = voice_encoder.embed_utterance(ref["ref16_librosa"])
    # README 3 allows 1e-4 from the wav (trim + mel recomputed here). Measured 1.5e-8.
    assert (emb - torch.from_numpy(ref["ve_speaker_emb"])).abs().max().item() <= 1e-6
    assert torch.linalg.norm(emb).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(voice_encoder.embed_utterance(torch.from_numpy(ref["ref16_librosa"])), emb)


def _expected_windows(n_frames: int, step: int = 77, win: int = 160, coverage: float = 0.8) -> int:
    """Facts sheet 4.2, written out independently."""
    n, rem = divmod(max(n_frames - win + step, 0), step)
    return n + 1 if n == 0 or (rem + win - step) / win >= coverage else n


@pytest.mark.parametrize("n_frames", [1, 100, 160, 237, 250, 313, 401, 1000])
def test_partials_layout(n_frames):
    ve = VoiceEncoder(VoiceEncoderConfig())
    mel = torch.arange(n_frames * 40, dtype=torch.float32).reshape(n_frames, 40) + 1
    windows = ve.partials(mel)
    n = _expected_windows(n_frames)
    assert windows.shape == (n, 160, 40)
    padded = torch.cat([mel, torch.zeros(max(0, 160 + 77 * (n - 1) - n_frames), 40)])
    for w in range(n):
        assert torch.equal(windows[w], padded[77 * w: 77 * w + 160])


def test_recorded_mel_uses_four_partials(voice_encoder, ref):
    # 401 frames -> 4 windows of 160 frames at step 77 (391 frames used, the last 10 dropped).
    assert voice_encoder.partials(torch.from_numpy(ref["ve_mel_trimmed"])).shape == (4, 160, 40)


def test_rejects_silent_or_empty_input(voice_encoder):
    for wav in (np.zeros(16000, dtype=np.float32), np.zeros(0, dtype=np.float32)):
        with pytest.raises(ValueError, match="empty or silent"):
            voice_encoder.embed_utterance(wav)
