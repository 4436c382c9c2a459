"""Turbo / Nano's distilled "meanflow" decoder for S3Gen's flow.

Against the regular decoder (``s3gen/flow.py``): the time grid is linear (no cosine warp), there
is no classifier-free guidance (one estimator row per item), and the estimator is told both ends
of each step: t and r = the next grid time are embedded alike and mixed by ``time_embed_mixer``
(official key ``flow.decoder.estimator.time_embed_mixer.weight``). Each step is
``x += (r - t) * v``; 2 steps by default.

The starting noise is drawn as the original draws it (:func:`meanflow_noise`): first noise for
the generated frames only, then noise for the whole sequence whose tail the first draw replaces.
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_chatterbox.config import EstimatorConfig
from vllm_chatterbox.s3gen.estimator import ConditionalDecoder, attention_bias


class MeanflowDecoder(ConditionalDecoder):
    def __init__(self, cfg: EstimatorConfig):
        super().__init__(cfg)
        time_dim = 4 * cfg.channels
        self.time_embed_mixer = nn.Linear(2 * time_dim, time_dim, bias=False)

    def fp32_modules(self) -> list[nn.Module]:
        return [*super().fp32_modules(), self.time_embed_mixer]

    def mean_time_embedding(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(N,) start times, (N,) end times -> (N, 4*channels)."""
        return self.time_embed_mixer(torch.cat([self.time_embedding(t), self.time_embedding(r)], dim=1))


class MeanflowEuler(nn.Module):
    """Euler solver of the meanflow decoder (official ``flow.decoder``), batched over items."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.estimator = MeanflowDecoder(cfg)

    def forward(self, noise: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor, spks: torch.Tensor,
                cond: torch.Tensor, n_timesteps: int) -> torch.Tensor:
        """noise, mu, cond (B, 80, L); mask (B, 1, L); spks (B, 80) -> mel (B, 80, L)."""
        n_mels = mu.shape[1]
        dtype = self.estimator.compute_dtype
        t_span = torch.linspace(0, 1, n_timesteps + 1, device=mu.device, dtype=mu.dtype)
        time_embs = self.estimator.mean_time_embedding(t_span[:-1], t_span[1:]).to(dtype)
        inputs = torch.cat([noise, mu, spks.unsqueeze(-1).expand_as(mu), cond], dim=1).to(dtype)
        mask = mask.to(dtype)
        bias = attention_bias(mask)
        x = noise
        for step in range(n_timesteps):
            inputs[:, :n_mels] = x
            velocity = self.estimator(inputs, mask, time_embs[step:step + 1], bias).to(x.dtype)
            x = x + (t_span[step + 1] - t_span[step]) * velocity
        return x


def meanflow_noise(n_mels: int, frames: int, generated_frames: int, generator: torch.Generator | None,
                   device: torch.device) -> torch.Tensor:
    """(n_mels, frames) starting noise, drawn in the original's order from one stream.

    The original first draws ``randn(1, 80, 2 * speech tokens)`` (the generated frames), then
    ``randn_like(mu)`` over the whole sequence, and overwrites that one's tail with the first
    draw; the prompt frames keep the second draw's values (they matter: the estimator attends
    over the whole sequence).
    """
    draw_device = generator.device if generator is not None else device
    tail = torch.randn((n_mels, generated_frames), generator=generator, device=draw_device)
    z = torch.randn((n_mels, frames), generator=generator, device=draw_device)
    z[:, frames - generated_frames:] = tail
    return z.to(device)
