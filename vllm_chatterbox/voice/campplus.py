"""CAM++ speaker x-vector for S3Gen (16 kHz audio -> (1, 192)).

Kaldi fbank (mean-normalised) -> FCM head (2-D residual convs, frequency strided to 1/8) ->
TDNN -> three densely connected CAM blocks (context-aware masking) with transit layers ->
statistics pooling -> linear + affine-free BatchNorm. Keys are those under ``speaker_encoder.``
in ``s3gen.safetensors``; BatchNorms run on their stored statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import CAMPPlusConfig
from vllm_chatterbox.voice.features import kaldi_fbank

FCM_CHANNELS = 32
DENSE_BLOCKS = ((12, 1), (24, 2), (16, 2))  # (layers, dilation); kernel 3 everywhere
CAM_SEGMENT = 100  # frames per segment of the CAM context pooling


class ResBlock2d(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """2-D conv front end: (B, F, T) fbank -> (B, channels * F / 8, T)."""

    def __init__(self, feat_dim: int, channels: int = FCM_CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
        self.layer2 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x[:, None])))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class BatchNormReLU(nn.Module):
    """The original's ``nonlinear`` container: BatchNorm1d, then ReLU unless ``relu=False``."""

    def __init__(self, channels: int, relu: bool = True, affine: bool = True) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.batchnorm(x)
        return F.relu(x) if self.relu else x


class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, bias=False)
        self.nonlinear = BatchNormReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Local conv gated by a sigmoid of global + per-segment context."""

    def __init__(self, bn_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.linear_local(x)
        segments = F.avg_pool1d(x, CAM_SEGMENT, CAM_SEGMENT, ceil_mode=True)
        segments = segments.repeat_interleave(CAM_SEGMENT, dim=-1)[..., : x.shape[-1]]
        context = x.mean(-1, keepdim=True) + segments
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return local * gate


class CAMDenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bn_channels: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = BatchNormReLU(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = BatchNormReLU(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, growth, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseBlock(nn.Module):
    """Each layer's output is concatenated to its input (dense growth)."""

    def __init__(self, n_layers: int, in_channels: int, growth: int, bn_channels: int, dilation: int) -> None:
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"tdnnd{i + 1}", CAMDenseLayer(in_channels + i * growth, growth, bn_channels, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = BatchNormReLU(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = BatchNormReLU(out_channels, relu=False, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x[..., None])[..., 0])


class CAMPPlus(nn.Module):
    def __init__(self, cfg: CAMPPlusConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = FCM(cfg.feat_dim)
        bn_channels = cfg.bn_size * cfg.growth_rate
        xvector = nn.Sequential()
        xvector.add_module("tdnn", TDNNLayer(self.head.out_channels, cfg.init_channels, 5, stride=2))
        channels = cfg.init_channels
        for i, (n_layers, dilation) in enumerate(DENSE_BLOCKS, start=1):
            xvector.add_module(f"block{i}", CAMDenseBlock(n_layers, channels, cfg.growth_rate, bn_channels, dilation))
            channels += n_layers * cfg.growth_rate
            xvector.add_module(f"transit{i}", TransitLayer(channels, channels // 2))
            channels //= 2
        xvector.add_module("out_nonlinear", BatchNormReLU(channels))
        xvector.add_module("stats", StatsPool())
        xvector.add_module("dense", DenseLayer(channels * 2, cfg.embedding_size))
        self.xvector = xvector

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], cfg: CAMPPlusConfig) -> "CAMPPlus":
        model = cls(cfg)
        model.load_state_dict(state_dict)
        return model.eval()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, feat_dim) normalised fbank -> (B, embedding_size)."""
        return self.xvector(self.head(feats.transpose(1, 2)))

    def features(self, wav16: torch.Tensor) -> torch.Tensor:
        """(T, feat_dim) Kaldi fbank of a 1-D 16 kHz clip minus its mean over time."""
        fbank = kaldi_fbank(wav16, num_mel_bins=self.cfg.feat_dim)
        return fbank - fbank.mean(dim=0, keepdim=True)

    @torch.inference_mode()
    def inference(self, wav16: torch.Tensor) -> torch.Tensor:
        """(1, N) 16 kHz audio -> (1, embedding_size) x-vector."""
        if wav16.dim() != 2 or wav16.shape[0] != 1:
            raise ValueError(f"CAMPPlus.inference expects one clip of shape (1, N), got {tuple(wav16.shape)}")
        weight = self.head.conv1.weight
        feats = self.features(wav16[0].to(device=weight.device, dtype=torch.float32))
        return self(feats[None].to(weight.dtype))
