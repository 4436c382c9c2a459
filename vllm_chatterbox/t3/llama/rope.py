"""Llama-3 scaled rotary embedding tables for T3.

The vLLM model runs every request at shifted RoPE positions (see ``t3/llama/positions.py``), far
from the small positions the original uses. RoPE only depends on position differences, but an
fp32 angle ``position * inv_freq`` loses precision as the position grows, so the tables are
computed in float64 and rounded once: rotations at any position are then as exact as the
original's at its own positions.
"""

from __future__ import annotations

import math

import torch

from vllm_chatterbox.config import T3Config


def llama3_inv_freq(cfg: T3Config) -> torch.Tensor:
    """Inverse frequencies exactly as transformers computes them for rope_type "llama3" (fp32)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    low_freq_wavelen = cfg.rope_original_max_position / cfg.rope_low_freq_factor
    high_freq_wavelen = cfg.rope_original_max_position / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / cfg.rope_factor, inv_freq)
    smooth = (cfg.rope_original_max_position / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(cfg: T3Config, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) tables of shape (num_positions, head_dim // 2), float32."""
    inv_freq = llama3_inv_freq(cfg).to(torch.float64)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().to(torch.float32), angles.sin().to(torch.float32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x: (N, heads, head_dim); cos/sin: (N, head_dim // 2), float32.

    The rotation runs in float32 whatever x's dtype and is rounded once, so a bf16 model is not
    also rotated by bf16-rounded cos/sin (angles off by up to 2^-8)."""
    half = x.shape[-1] // 2
    x32 = x.float()
    x1, x2 = x32[..., :half], x32[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
