"""The upsampling conformer encoder of S3Gen's flow (speech tokens -> 50 Hz hidden frames).

Token embeddings (25 Hz) go through a linear embedding, a 3-token look-ahead convolution and
conformer layers with ESPnet relative-position attention, are upsampled x2 in time, embedded
again and run through more conformer layers. Parameter names equal the official
``flow.encoder.*`` keys (prefix-relative).

Batches are right-padded. Every operation is either per-frame, causal, or masked over keys,
except the look-ahead convolution, which is why padded frames are zeroed before it; a padded
batch therefore computes the same frames as running each item alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import FlowConfig


def relative_position_table(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ESPnet sinusoids for relative positions length-1 ... -(length-1): shape (1, 2*length-1, dim)."""
    position = torch.arange(0, length, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / dim))
    positive = torch.zeros(length, dim, device=device)
    negative = torch.zeros(length, dim, device=device)
    positive[:, 0::2] = torch.sin(position * div_term)
    positive[:, 1::2] = torch.cos(position * div_term)
    negative[:, 0::2] = torch.sin(-1 * position * div_term)
    negative[:, 1::2] = torch.cos(-1 * position * div_term)
    # Row m holds relative distance (length-1-m): positive distances descending, then negatives.
    table = torch.cat([torch.flip(positive, [0]), negative[1:]], dim=0)
    return table.unsqueeze(0).to(dtype)


class LinearEmbedding(nn.Module):
    """Linear + LayerNorm, then the x*sqrt(d) scaling of the relative positional encoding."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x) * self.scale
        return x, relative_position_table(x.shape[1], x.shape[2], x.device, x.dtype)


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (ESPnet flavour)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"encoder size {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.head_dim))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor, pos_table: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); key_padding (B, 1, 1, T) True where a key is padding; pos_table (1, 2T-1, D)."""
        B, T, _ = x.shape
        H, dk = self.n_heads, self.head_dim
        q = self.linear_q(x).view(B, T, H, dk)
        k = self.linear_k(x).view(B, T, H, dk).transpose(1, 2)
        v = self.linear_v(x).view(B, T, H, dk).transpose(1, 2)
        p = self.linear_pos(pos_table).view(1, 2 * T - 1, H, dk).transpose(1, 2)

        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)).contiguous()
        # Relative shift: score (i, j) needs table row (T-1-i+j), i.e. a diagonal band of the
        # (T, 2T-1) matrix; a strided view reads it without copying.
        sB, sH = position.stride(0), position.stride(1)
        position = position.as_strided((B, H, T, T), (sB, sH, 2 * T - 2, 1), position.storage_offset() + T - 1)

        scores = (content + position) / math.sqrt(dk)
        scores = scores.masked_fill(key_padding, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, T, H * dk)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-LN layer: x += MHA(LN(x)); x += FFN(LN(x)) (no macaron, no convolution module)."""

    def __init__(self, dim: int, n_heads: int, hidden: int):
        super().__init__()
        self.self_attn = RelPositionAttention(dim, n_heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor, pos_table: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), key_padding, pos_table)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    """Residual conv that lets each token see `lookahead` future tokens (zero beyond the end)."""

    def __init__(self, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))
        h = F.leaky_relu(self.conv1(h))
        h = self.conv2(F.pad(h, (2, 0)))
        return x + h.transpose(1, 2)


class Upsample(nn.Module):
    """Nearest-neighbour x`stride` in time followed by a causal conv (kernel 2*stride+1)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(x.transpose(1, 2), scale_factor=float(self.stride), mode="nearest")
        h = self.conv(F.pad(h, (2 * self.stride, 0)))
        return h.transpose(1, 2)


def _key_padding(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, 1, T) bool, True at padded key positions."""
    return (torch.arange(T, device=lengths.device) >= lengths[:, None]).view(-1, 1, 1, T)


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        dim = cfg.encoder_size
        self.embed = LinearEmbedding(cfg.input_size, dim)
        self.pre_lookahead_layer = PreLookaheadLayer(dim, cfg.pre_lookahead_len)
        self.encoders = nn.ModuleList(
            ConformerLayer(dim, cfg.attention_heads, cfg.linear_units) for _ in range(cfg.num_blocks))
        self.up_layer = Upsample(dim, cfg.token_mel_ratio)
        self.up_embed = LinearEmbedding(dim, dim)
        self.up_encoders = nn.ModuleList(
            ConformerLayer(dim, cfg.attention_heads, cfg.linear_units) for _ in range(cfg.num_up_blocks))
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)
        self.ratio = cfg.token_mel_ratio

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, input_size) token embeddings (zero at padding), lengths (B,) -> (B, ratio*T, D)."""
        T = x.shape[1]
        valid = (torch.arange(T, device=x.device) < lengths[:, None]).unsqueeze(-1)
        x, pos_table = self.embed(x)
        # Padded frames must read as the zeros a lone item sees past its end.
        x = self.pre_lookahead_layer(x * valid)
        key_padding = _key_padding(lengths, T)
        for layer in self.encoders:
            x = layer(x, key_padding, pos_table)

        x = self.up_layer(x)
        x, pos_table = self.up_embed(x)
        key_padding = _key_padding(lengths * self.ratio, x.shape[1])
        for layer in self.up_encoders:
            x = layer(x, key_padding, pos_table)
        return self.after_norm(x)
