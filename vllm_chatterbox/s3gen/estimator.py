"""The CFM velocity estimator of S3Gen (official ``ConditionalDecoder``): a causal 1-D U-Net.

Input channels are [x | mu | speaker | prompt mel] (4 x 80); a sinusoidal time embedding goes
through an MLP and is added inside every resnet block. With the released single channel stage
there is no down- or up-sampling: resnet + transformer blocks, 12 mid stages, then a skip-concat
stage and a final causal block. Parameter names equal the official
``flow.decoder.estimator.*`` keys (prefix-relative).

Padding: convolutions are causal (left padding only), LayerNorms act per frame and attention
masks padded keys, so right-padded batch items get the same values as when run alone.

Precision (:meth:`ConditionalDecoder.set_compute_dtype`): in bfloat16 the convolutions, linears
and attention run in bf16 while the LayerNorms (statistics and affine parameters) and the time
embedding MLP stay in fp32; the solver keeps its state and the velocity sum in fp32. In fp32 the
casts are no-ops, so the exact path computes exactly what it did without them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import EstimatorConfig

MASK_BIAS = -1.0e10  # additive attention bias for padded keys, as in the original


class CausalConv1d(nn.Conv1d):
    """Conv1d (stride 1) padded only on the left, so frame t sees frames <= t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)
        self.left_pad = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to fp32; fp32 / fp64 unchanged (the same tensor, no copy)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (with fp32 parameters) whatever the input's precision; the
    output has the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(upcast(x), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class ChannelLayerNorm(Fp32LayerNorm):
    """LayerNorm over the channel axis of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        # Official layout: 0 conv, 1 transpose, 2 LayerNorm, 3 transpose, 4 Mish; the
        # transposes live inside ChannelLayerNorm, Identity keeps the indices.
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3), nn.Identity(), ChannelLayerNorm(dim_out), nn.Identity(), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, head_dim: int):
        super().__init__()
        inner = n_heads * head_dim
        self.n_heads = n_heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, C); bias (B, 1, 1, T) additive key mask."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.n_heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out[0](out.transpose(1, 2).reshape(B, T, -1))


class GELUProjection(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # Index 1 is the (inference-inactive) dropout of the official layout.
        self.net = nn.Sequential(GELUProjection(dim, hidden), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LN self-attention + GELU feed-forward (diffusers ``BasicTransformerBlock`` layout)."""

    def __init__(self, dim: int, n_heads: int, head_dim: int):
        super().__init__()
        self.norm1 = Fp32LayerNorm(dim)
        self.attn1 = Attention(dim, n_heads, head_dim)
        self.norm3 = Fp32LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), bias)
        return x + self.ff(self.norm3(x))


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, time_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, time_dim)
        self.linear_2 = nn.Linear(time_dim, time_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(N,) times in [0, 1] -> (N, dim): [sin | cos] of scale*t at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    args = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((args.sin(), args.cos()), dim=-1).to(t.dtype)


class ConditionalDecoder(nn.Module):
    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        C = cfg.channels
        time_dim = 4 * C
        self.in_channels = cfg.in_channels
        self.time_mlp = TimestepEmbedding(cfg.in_channels, time_dim)
        self.down_blocks = nn.ModuleList([_stage_modules(cfg.in_channels, C, time_dim, cfg, CausalConv1d(C, C, 3))])
        self.mid_blocks = nn.ModuleList(_stage_modules(C, C, time_dim, cfg) for _ in range(cfg.num_mid_blocks))
        self.up_blocks = nn.ModuleList([_stage_modules(2 * C, C, time_dim, cfg, CausalConv1d(C, C, 3))])
        self.final_block = CausalBlock(C, C)
        self.final_proj = nn.Conv1d(C, cfg.out_channels, 1)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.final_proj.weight.dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run in ``dtype`` with the fp32 islands of :meth:`fp32_modules` kept in fp32."""
        self.to(dtype)
        for module in self.fp32_modules():
            module.float()

    def fp32_modules(self) -> list[nn.Module]:
        """LayerNorms and the time-embedding MLP (it runs once per call, on n_timesteps rows)."""
        return [self.time_mlp, *(m for m in self.modules() if isinstance(m, nn.LayerNorm))]

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N, 4*channels) in t's dtype; computed once per call for all solver steps."""
        return self.time_mlp(sinusoidal_time_embedding(t, self.in_channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, 320, T) = [noisy mel | mu | spks | cond]; mask (B, 1, T) float; time_emb (1 or B, 4C);
        bias (B, 1, 1, T) from :func:`attention_bias`. Returns the velocity (B, 80, T), zero at padding."""
        resnet, blocks, conv = self.down_blocks[0]
        x = _run_stage(resnet, blocks, x, mask, time_emb, bias)
        skip = x
        x = conv(x * mask)
        for resnet, blocks in self.mid_blocks:
            x = _run_stage(resnet, blocks, x, mask, time_emb, bias)
        resnet, blocks, conv = self.up_blocks[0]
        x = _run_stage(resnet, blocks, torch.cat([x, skip], dim=1), mask, time_emb, bias)
        x = conv(x * mask)
        x = self.final_block(x, mask)
        return self.final_proj(x * mask) * mask


def attention_bias(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T) float 0/1 mask -> (B, 1, 1, T) additive bias (0 valid, -1e10 padded)."""
    return ((1.0 - mask) * MASK_BIAS).unsqueeze(1)


def _stage_modules(dim: int, dim_out: int, time_dim: int, cfg: EstimatorConfig, *extra: nn.Module) -> nn.ModuleList:
    blocks = nn.ModuleList(TransformerBlock(dim_out, cfg.num_heads, cfg.attention_head_dim) for _ in range(cfg.n_blocks))
    return nn.ModuleList([ResnetBlock(dim, dim_out, time_dim), blocks, *extra])


def _run_stage(resnet: ResnetBlock, blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor,
               time_emb: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    x = resnet(x, mask, time_emb).transpose(1, 2)
    for block in blocks:
        x = block(x, bias)
    return x.transpose(1, 2)
