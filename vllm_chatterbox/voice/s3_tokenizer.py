"""S3 speech tokenizer (speech_tokenizer_v2_25hz): 16 kHz audio -> 25 Hz tokens in [0, 6561).

Log-mel (100 Hz) -> two stride-2 convs (25 Hz) -> pre-LN transformer blocks whose attention
uses rotary positions and an FSMN memory (depthwise conv over the values) -> FSQ: 8 ternary
digits from tanh(Linear) rounded. Keys are those under ``tokenizer.`` in ``s3gen.safetensors``.
Batches are padded; masks make every row equal to running it alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import S3TokenizerConfig
from vllm_chatterbox.voice.features import s3_log_mel, slaney_mel_filterbank

FSQ_DIGITS = 8
FSQ_LEVELS = 3
FSQ_SCALE = 0.9990000128746033  # keeps tanh inside (-1, 1) before rounding (float32 of 0.999)
ROPE_THETA = 10000.0
MASK_VALUE = -1.0e10
MAX_MEL_FRAMES = 3000  # 30 s; the original switches to an overlapping-window scheme beyond this
OPTIONAL_BUFFERS = ("_mel_filters", "window")


def _rotary_tables(n_positions: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (n_positions, dim) for rotate-half RoPE; both halves share frequencies."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(n_positions, device=device).float(), inv_freq)
    rotation = torch.view_as_real(torch.polar(torch.ones_like(angles), angles))
    cos, sin = rotation[..., 0], rotation[..., 1]
    return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, D); cos/sin: (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[None, :, None] + rotated * sin[None, :, None]


class FSMNAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int, kernel_size: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        self.fsmn_block = nn.Conv1d(n_state, n_state, kernel_size, groups=n_state, bias=False)
        self.fsmn_pad = ((kernel_size - 1) // 2, kernel_size - 1 - (kernel_size - 1) // 2)

    def fsmn_memory(self, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Depthwise conv over time of the (masked) values plus the values themselves."""
        v = v * keep
        memory = self.fsmn_block(F.pad(v.transpose(1, 2), self.fsmn_pad)).transpose(1, 2)
        return (memory + v) * keep

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        B, T, C = x.shape
        head_dim = C // self.n_head
        q = _apply_rotary(self.query(x).view(B, T, self.n_head, head_dim), cos, sin)
        k = _apply_rotary(self.key(x).view(B, T, self.n_head, head_dim), cos, sin)
        v = self.value(x)
        memory = self.fsmn_memory(v, keep)
        scale = head_dim**-0.25  # applied to q and k separately, as the original does
        scores = (q.transpose(1, 2) * scale) @ (k.permute(0, 2, 3, 1) * scale) + bias
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        attended = weights @ v.view(B, T, self.n_head, head_dim).transpose(1, 2)
        return self.out(attended.transpose(1, 2).reshape(B, T, C)) + memory


class TokenizerBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, kernel_size: int, attention_norm_eps: float) -> None:
        super().__init__()
        self.attn = FSMNAttention(n_state, n_head, kernel_size)
        self.attn_ln = nn.LayerNorm(n_state, eps=attention_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state, eps=1e-5)

    def forward(self, x, bias, keep, cos, sin):
        x = x + self.attn(self.attn_ln(x), bias, keep, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


def _halve(lengths: torch.Tensor | int):
    """Output length of a kernel-3, stride-2, padding-1 conv."""
    return (lengths - 1) // 2 + 1


class TokenizerEncoder(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList(
            TokenizerBlock(cfg.n_state, cfg.n_head, cfg.fsmn_kernel_size, cfg.attention_norm_eps)
            for _ in range(cfg.n_layer)
        )
        self.n_head = cfg.n_head

    def forward(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) padded mels -> (B, T/4, n_state) hidden states, (B,) lengths."""
        frames = torch.arange(mels.shape[-1], device=mels.device)
        x = F.gelu(self.conv1(mels * (frames < mel_lens[:, None])[:, None]))
        lens = _halve(mel_lens)
        frames = torch.arange(x.shape[-1], device=mels.device)
        x = F.gelu(self.conv2(x * (frames < lens[:, None])[:, None]))
        lens = _halve(lens)
        valid = torch.arange(x.shape[-1], device=mels.device) < lens[:, None]  # (B, T)
        x = x.transpose(1, 2)
        keep = valid[:, :, None].to(x.dtype)
        bias = ((1.0 - valid.to(x.dtype)) * MASK_VALUE)[:, None, None, :]
        cos, sin = _rotary_tables(x.shape[1], x.shape[-1] // self.n_head, x.device)
        for block in self.blocks:
            x = block(x, bias, keep, cos.to(x.dtype), sin.to(x.dtype))
        return x, lens


class FSQCodebook(nn.Module):
    def __init__(self, n_state: int) -> None:
        super().__init__()
        self.project_down = nn.Linear(n_state, FSQ_DIGITS)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The continuous FSQ values (..., 8) in (-1, 1) that are rounded to ternary digits."""
        return self.project_down(hidden).float().tanh() * FSQ_SCALE


class FSQuantizer(nn.Module):
    def __init__(self, n_state: int) -> None:
        super().__init__()
        self._codebook = FSQCodebook(n_state)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._codebook.values(hidden)


class S3Tokenizer(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig) -> None:
        super().__init__()
        if cfg.codebook_size != FSQ_LEVELS**FSQ_DIGITS:
            raise ValueError(f"S3 tokenizer codebook must be 3^8 = 6561, got {cfg.codebook_size}")
        self.cfg = cfg
        self.encoder = TokenizerEncoder(cfg)
        self.quantizer = FSQuantizer(cfg.n_state)
        # Also stored in the official checkpoint; built here for files that lack them.
        self.register_buffer("_mel_filters", slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels))
        self.register_buffer("window", torch.hann_window(cfg.n_fft))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], cfg: S3TokenizerConfig) -> "S3Tokenizer":
        """Load from keys relative to ``tokenizer.``; the two front-end buffers may be absent."""
        model = cls(cfg)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if k not in OPTIONAL_BUFFERS]
        if missing or unexpected:
            raise ValueError(f"S3 tokenizer weights do not match: missing {missing}, unexpected {unexpected}")
        return model.eval()

    def log_mel(self, wav16: torch.Tensor) -> torch.Tensor:
        """(n_mels, N // hop) log-mel of a 1-D 16 kHz clip."""
        return s3_log_mel(
            wav16.to(self.window), self._mel_filters, self.window, self.cfg.n_fft, self.cfg.hop_length
        )

    @torch.inference_mode()
    def quantize(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) padded log-mels -> tokens (B, T'), lengths (B,); padding tokens are 0."""
        values, lens = self.fsq_values(mels, mel_lens)
        digits = values.round() + 1
        powers = FSQ_LEVELS ** torch.arange(FSQ_DIGITS, device=values.device, dtype=digits.dtype)
        tokens = (digits * powers).sum(dim=-1).long()
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lens[:, None]
        return tokens * valid, lens

    @torch.inference_mode()
    def fsq_values(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) padded log-mels -> continuous FSQ values (B, T', 8) before rounding, lengths."""
        if int(mel_lens.max()) > MAX_MEL_FRAMES:
            raise ValueError(
                f"S3 tokenizer input longer than {MAX_MEL_FRAMES // 100} s is not supported "
                f"({int(mel_lens.max())} mel frames)"
            )
        hidden, lens = self.encoder(mels, mel_lens)
        return self.quantizer.values(hidden), lens.long()

    @torch.inference_mode()
    def forward(self, wavs: list[torch.Tensor], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize 1-D 16 kHz clips; ``max_len`` caps the tokens (mels cut to 4 * max_len frames)."""
        return self.quantize(*self.padded_log_mels(wavs, max_len))

    def padded_log_mels(
        self, wavs: list[torch.Tensor], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) zero-padded log-mels of 1-D 16 kHz clips and their lengths (B,)."""
        if len(wavs) == 0:
            raise ValueError("S3 tokenizer needs at least one waveform")
        mels = []
        for wav in wavs:
            mel = self.log_mel(torch.as_tensor(wav).flatten())
            if max_len is not None:
                mel = mel[:, : 4 * max_len]
            if mel.shape[1] == 0:
                raise ValueError("waveform too short for the S3 tokenizer (no mel frames)")
            mels.append(mel)
        mel_lens = torch.tensor([m.shape[1] for m in mels], device=self.window.device)
        padded = torch.zeros(len(mels), self.cfg.n_mels, int(mel_lens.max()), device=self.window.device)
        for i, mel in enumerate(mels):
            padded[i, :, : mel.shape[1]] = mel
        return padded.to(self.window.dtype), mel_lens
