"""PerthNet, the network of Resemble AI's Perth implicit watermark, in plain torch.

Written for this project from the published architecture (``resemble-perth`` 1.0.1), to run
its released checkpoint. The network works on the normalised log magnitude of a 32 kHz
spectrogram (:mod:`vllm_chatterbox.watermark.spectral`), only on its lowest 128 bins (0-2 kHz):

- the embedder is one stack of 1-D convolutions over time (bins as channels): 1x1 in, five
  kernel-7 layers, 1x1 out, LeakyReLU(0.01) between them. Its output is a residual added to
  those bins, in the frames loud enough to hide it: a frame is loud when its magnitude summed
  over all bins exceeds 5 % of the loudest frame's sum;
- the detector has three such stacks (two outputs each: an attention logit and a score), run
  on the bins stretched in time to 1.25x, as they are, and squeezed to 0.75x (linear
  interpolation, corners aligned). Each stack's two outputs are averaged over the loud frames
  (the loudness mask resampled to the stack's length by nearest neighbour); the three scores
  are weighted by the softmax of the three attention values. The original's detection clips
  the result to [0, 1]: a confidence, about 1 for marked audio and 0 for unmarked.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import PerthConfig

PERTH_DISTRIBUTION = "resemble-perth"
PERTH_VERSION = "1.0.1"  # the release whose checkpoint and settings this module was written for
# Inside the installed package: the checkpoint and the settings it was trained with.
CHECKPOINT_PATH = "perth/perth_net/pretrained/implicit/perth_net_250000.pth.tar"
HPARAMS_PATH = "perth/perth_net/pretrained/implicit/hparams.yaml"
INSTALL_HINT = ("the Perth watermark loads its network weights from the resemble-perth package "
                f"(pip install 'resemble-perth=={PERTH_VERSION}'; it installs no other packages), "
                "or pass watermark=False / --no-watermark")

_KERNEL = 7
_HIDDEN_LAYERS = 5
_LEAKY_SLOPE = 0.01  # torch's LeakyReLU default, which the original uses


class ConvStack(nn.Module):
    """1x1 convolution in, five kernel-7 convolutions ('same' padding), 1x1 out."""

    def __init__(self, channels_in: int, hidden: int, channels_out: int):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv1d(channels_in, hidden, 1)]
            + [nn.Conv1d(hidden, hidden, _KERNEL, padding=_KERNEL // 2) for _ in range(_HIDDEN_LAYERS)]
            + [nn.Conv1d(hidden, channels_out, 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs[:-1]:
            x = F.leaky_relu(conv(x), _LEAKY_SLOPE)
        return self.convs[-1](x)


def loud_frames(magnitude: torch.Tensor, fraction: float) -> torch.Tensor:
    """(batch, 1, frames) float mask: 1 where a frame's summed magnitude exceeds ``fraction`` of
    the loudest frame's."""
    energy = magnitude.sum(dim=1)
    threshold = energy.max(dim=1).values * fraction
    return (energy > threshold[:, None]).float()[:, None]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(dim=2) / mask.sum(dim=2)


class PerthNet(nn.Module):
    def __init__(self, config: PerthConfig):
        super().__init__()
        self.config = config
        bins, hidden = config.marked_bins, config.hidden_size
        self.embedder = ConvStack(bins, hidden, bins)
        # Time scales of the detector's three views: stretched, as is, squeezed.
        self.detector_scales = (1.25, 1.0, 0.75)
        self.detectors = nn.ModuleList(ConvStack(bins, hidden, 2) for _ in self.detector_scales)

    def embed(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The marked normalised magnitude, (batch, freq_bins, frames) in and out."""
        bins = self.config.marked_bins
        mask = loud_frames(magnitude, self.config.loud_frame_fraction)
        residual = self.embedder(magnitude[:, :bins]) * mask
        marked = magnitude.clone()
        marked[:, :bins] += residual
        return marked

    def detect(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Raw detection score per item, (batch,); NaN for an item without a loud frame
        (digital silence), whose mean over no frames is undefined."""
        mask = loud_frames(magnitude, self.config.loud_frame_fraction)
        band = magnitude[:, :self.config.marked_bins]
        frames = band.shape[-1]
        attention, scores = [], []
        for scale, stack in zip(self.detector_scales, self.detectors):
            view = band if scale == 1.0 else F.interpolate(band, size=int(frames * scale), mode="linear",
                                                           align_corners=True)
            out = stack(view)
            view_mask = F.interpolate(mask, size=out.shape[-1], mode="nearest")
            attention.append(_masked_mean(out[:, :1], view_mask))
            scores.append(_masked_mean(out[:, 1:], view_mask))
        weights = torch.softmax(torch.cat(attention, dim=1), dim=1)
        return (torch.cat(scores, dim=1) * weights).sum(dim=1)


def installed_perth_file(relative: str) -> Path:
    """A file of the installed resemble-perth package, found without importing it (its
    ``__init__`` would try torchaudio and librosa)."""
    try:
        distribution = importlib.metadata.distribution(PERTH_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"resemble-perth is not installed: {INSTALL_HINT}") from None
    path = Path(distribution.locate_file(relative))
    if not path.is_file():
        raise RuntimeError(f"resemble-perth {distribution.version} has no {relative}: {INSTALL_HINT}")
    return path


def check_published_settings(hparams: dict, config: PerthConfig, source: str) -> None:
    """The checkpoint's own settings must be the ones this module computes with."""
    expected = {"sample_rate": config.sample_rate, "n_fft": config.n_fft, "hop_size": config.hop_size,
                "window_size": config.window_size, "window_fn": config.window_fn,
                "stft_magnitude_min": config.stft_magnitude_min, "max_wmark_freq": config.max_wmark_freq,
                "hidden_size": config.hidden_size}
    different = {k: (hparams.get(k), v) for k, v in expected.items() if hparams.get(k) != v}
    if different:
        raise RuntimeError(f"{source}: Perth settings {different} (found, supported) differ from resemble-perth "
                           f"{PERTH_VERSION}'s; this watermark implementation supports that release")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The published checkpoint's weights under this module's names.

    The checkpoint holds ``{"model": state_dict, "step": int}`` with the original's names
    (``encoder.layers.{i}.conv.*``, ``decoder.{slow,normal,fast}_layers.{i}.conv.*``, and
    torchaudio's window buffers, which are recomputed here instead)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise RuntimeError(f"{path}: not a readable Perth checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise RuntimeError(f"{path}: not a Perth checkpoint (no 'model' state dict)")
    renamed = {}
    prefixes = {"encoder.layers.": "embedder.convs.", "decoder.slow_layers.": "detectors.0.convs.",
                "decoder.normal_layers.": "detectors.1.convs.", "decoder.fast_layers.": "detectors.2.convs."}
    for name, tensor in checkpoint["model"].items():
        for old, new in prefixes.items():
            if name.startswith(old):
                renamed[new + name[len(old):].replace(".conv.", ".")] = tensor
                break
    return renamed


def load_perth_net(config: PerthConfig, checkpoint: str | Path | None = None,
                   device: str | torch.device = "cpu") -> PerthNet:
    """PerthNet with the published weights (default: the installed resemble-perth's), in eval mode."""
    import yaml

    if checkpoint is None:
        checkpoint = installed_perth_file(CHECKPOINT_PATH)
        hparams_file = installed_perth_file(HPARAMS_PATH)
        check_published_settings(yaml.safe_load(hparams_file.read_text()), config, str(hparams_file))
    network = PerthNet(config)
    state = load_state_dict(checkpoint)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise RuntimeError(f"{checkpoint}: weights do not fit PerthNet ({' '.join(str(exc).split())[:300]})") from None
    return network.to(device).eval()
