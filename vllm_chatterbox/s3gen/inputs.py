"""What S3Gen takes, checked and batched: token lists, voices, mels and noise seeds.

Shared by the one-shot model (``s3gen/model.py``) and the streaming vocoder (``s3gen/streaming.py``),
so bad input fails the same way on both paths: a ValueError naming the item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vllm_chatterbox.voice.voice import Voice


def random_seed() -> int:
    """A positional-noise seed from torch's global RNG (so ``torch.manual_seed`` reproduces it)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def check_stream_seed(seed: object, name: str = "seed") -> int:
    """A positional-noise seed (:mod:`vllm_chatterbox.s3gen.noise`), checked."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def token_tensor(tokens: Sequence[int] | torch.Tensor, index: int, vocab: int) -> torch.Tensor:
    """Item ``index``'s speech tokens as a 1-D int64 tensor of ids in [0, vocab)."""
    t = torch.as_tensor(tokens)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"item {index}: tokens must be 1-D (or (1, T)), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"item {index}: empty token list")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"item {index}: token ids must be integers, got {t.dtype}")
    t = t.to(torch.int64)
    bad = (t < 0) | (t >= vocab)
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        raise ValueError(f"item {index}: token id {int(t[pos])} at position {pos} is outside [0, {vocab}) "
                         f"(drop start/stop/special tokens before S3Gen)")
    return t


def check_voice(voice: Voice, index: int, vocab: int, n_mels: int, spk_dim: int) -> None:
    """The S3Gen side of item ``index``'s voice: prompt tokens, prompt mel and x-vector shapes and ids."""
    if voice.prompt_token.dim() != 2 or voice.prompt_token.shape[0] != 1:
        raise ValueError(f"voice of item {index}: prompt_token must be (1, Tp), got {tuple(voice.prompt_token.shape)}")
    if voice.prompt_feat.dim() != 3 or voice.prompt_feat.shape[0] != 1 or voice.prompt_feat.shape[2] != n_mels:
        raise ValueError(f"voice of item {index}: prompt_feat must be (1, Tm, {n_mels}), "
                         f"got {tuple(voice.prompt_feat.shape)}")
    if tuple(voice.embedding.shape) != (1, spk_dim):
        raise ValueError(f"voice of item {index}: embedding must be (1, {spk_dim}), got {tuple(voice.embedding.shape)}")
    if voice.prompt_token.numel() and (int(voice.prompt_token.min()) < 0 or int(voice.prompt_token.max()) >= vocab):
        raise ValueError(f"voice of item {index}: prompt tokens outside [0, {vocab})")


def pad_mels(mels: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Right-pad (80, T_i) mels to one (B, 80, max T) batch."""
    batch = torch.zeros(len(mels), mels[0].shape[0], max(m.shape[-1] for m in mels), device=device, dtype=dtype)
    for i, mel in enumerate(mels):
        batch[i, :, :mel.shape[-1]] = mel
    return batch
