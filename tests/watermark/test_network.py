"""Loading the published network: every weight of the checkpoint is used, and a checkpoint or
settings this code was not written for is a clear error."""

import pytest
import torch

from vllm_chatterbox.config import PerthConfig
from vllm_chatterbox.watermark.network import (CHECKPOINT_PATH, check_published_settings, installed_perth_file,
                                               load_perth_net, load_state_dict)


def test_every_published_weight_is_loaded():
    checkpoint = torch.load(installed_perth_file(CHECKPOINT_PATH), map_location="cpu", weights_only=True)["model"]
    # torchaudio's window and time-stretch buffers are recomputed, not loaded.
    weights = {k for k in checkpoint if not k.startswith("ap.")}
    state = load_state_dict(installed_perth_file(CHECKPOINT_PATH))
    assert len(state) == len(weights) == 4 * 7 * 2
    assert sum(t.numel() for t in state.values()) == sum(checkpoint[k].numel() for k in weights)
    network = load_perth_net(PerthConfig())
    assert set(network.state_dict()) == set(state)
    assert not network.training


def test_a_broken_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "perth.pth.tar"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="not a readable Perth checkpoint"):
        load_perth_net(PerthConfig(), broken)
    torch.save({"model": {"encoder.layers.0.conv.weight": torch.zeros(3)}, "step": 1}, broken)
    with pytest.raises(RuntimeError, match="weights do not fit PerthNet"):
        load_perth_net(PerthConfig(), broken)


def test_other_settings_are_refused():
    settings = {"sample_rate": 32000, "n_fft": 2048, "hop_size": 320, "window_size": 2048, "window_fn": "hann",
                "stft_magnitude_min": 1e-9, "max_wmark_freq": 2000, "hidden_size": 256}
    check_published_settings(settings, PerthConfig(), "hparams.yaml")
    with pytest.raises(RuntimeError, match=r"hparams.yaml: Perth settings \{'hop_size': \(256, 320\)\}"):
        check_published_settings({**settings, "hop_size": 256}, PerthConfig(), "hparams.yaml")
