"""Neural-source-filter excitation of the HiFT vocoder (``mel2wav.m_source``).

Frame-rate f0 becomes a 24 kHz excitation: 9 harmonic sines with random start phases in voiced
samples, Gaussian noise everywhere, merged to one channel by a linear layer and tanh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vllm_chatterbox.config import HiFTConfig


class SourceModule(nn.Module):
    def __init__(self, cfg: HiFTConfig, upsample_factor: int):
        super().__init__()
        self.num_harmonics = cfg.nb_harmonics + 1
        self.sampling_rate = cfg.sampling_rate
        self.sine_amp = cfg.nsf_alpha
        self.noise_std = cfg.nsf_sigma
        self.voiced_threshold = cfg.nsf_voiced_threshold
        self.upsample_factor = upsample_factor
        self.l_linear = nn.Linear(self.num_harmonics, 1)

    def draw_noise(self, num_samples: int, generator: torch.Generator | None,
                   device: torch.device) -> tuple[Tensor, Tensor]:
        """Random start phases (H, 1) in [-pi, pi) and standard-normal noise (H, num_samples).

        Draws exactly what the original draws for one item, in its order, so a generator seeded
        like the original's global RNG reproduces its excitation.
        """
        draw_device = generator.device if generator is not None else device
        shape = (1, self.num_harmonics, 1)
        low = torch.tensor(-math.pi, device=draw_device)
        high = torch.tensor(math.pi, device=draw_device)
        phases = low + torch.rand(shape, generator=generator, device=draw_device) * (high - low)
        noise = torch.randn((1, self.num_harmonics, num_samples), generator=generator,
                            device=draw_device)
        # The original also draws an unused noise tensor; drawing it keeps the RNG stream aligned.
        torch.randn((1, num_samples, 1), generator=generator, device=draw_device)
        return phases[0].to(device), noise[0].to(device)

    def forward(self, f0: Tensor, phases: Tensor, noise: Tensor) -> Tensor:
        """f0 (B, T) in Hz, phases (B, H, 1), noise (B, H, T * upsample_factor) -> (B, 1, N)."""
        # The sines are always computed in fp32 (the phase accumulates over many samples).
        f0, phases, noise = f0.float(), phases.float(), noise.float()
        f0 = F.interpolate(f0[:, None], scale_factor=self.upsample_factor, mode="nearest")
        harmonics = torch.arange(1, self.num_harmonics + 1, device=f0.device, dtype=f0.dtype)
        # Per-sample phase increment of each harmonic, in cycles.
        increments = f0 * harmonics[None, :, None] / self.sampling_rate
        theta = 2 * math.pi * (torch.cumsum(increments, dim=-1) % 1)
        return self._merge(f0, theta, phases, noise)

    def continued(self, f0: Tensor, start_cycles: Tensor, phases: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """One item's excitation, continuing an earlier piece: f0 (T,) in Hz, start_cycles (H,)
        float64 (each harmonic's accumulated phase in cycles where the piece starts), phases (H, 1),
        noise (H, T * upsample_factor) -> (source (N,), end_cycles (H,) float64).

        The phase is accumulated in float64, so cutting an item into pieces and carrying
        ``end_cycles`` along gives the same excitation as one call over the whole item.
        """
        f0_up = f0.float().repeat_interleave(self.upsample_factor)
        harmonics = torch.arange(1, self.num_harmonics + 1, device=f0.device, dtype=torch.float64)
        increments = f0_up.double()[None, :] * harmonics[:, None] / self.sampling_rate
        cycles = start_cycles.to(f0.device, torch.float64)[:, None] + torch.cumsum(increments, dim=-1)
        theta = (2 * math.pi * (cycles % 1)).float()
        source = self._merge(f0_up[None, None], theta[None], phases[None].float(), noise[None].float())
        return source[0, 0], cycles[:, -1]

    def _merge(self, f0: Tensor, theta: Tensor, phases: Tensor, noise: Tensor) -> Tensor:
        """f0 (B, 1, N) per sample, theta (B, H, N) radians, phases (B, H, 1), noise (B, H, N) -> (B, 1, N)."""
        # The fundamental always starts at phase 0.
        phases = torch.cat([torch.zeros_like(phases[:, :1]), phases[:, 1:]], dim=1)
        sines = self.sine_amp * torch.sin(theta + phases)
        voiced = (f0 > self.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        sines = sines * voiced + noise_amp * noise
        merged = torch.tanh(self.l_linear(sines.transpose(1, 2).to(self.l_linear.weight.dtype)))
        return merged.transpose(1, 2)
