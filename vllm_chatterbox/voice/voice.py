"""A voice: everything T3 and S3Gen need for one speaker at one exaggeration.

Stored on disk in the official ``conds.pt`` format (``{"t3": T3Cond fields, "gen": S3Gen
reference dict}``), so the released model's built-in voice is simply its ``conds.pt``.

Every voice is checked when it is made (built, loaded or constructed): tensors of the right
dtype and rank, finite values, speech tokens inside the S3 codebook, prompts of bounded size.
A bad voice is a ValueError naming the field, never NaN audio or a crash deep in a tensor op.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig, S3TokenizerConfig
from vllm_chatterbox.model_files import load_torch_file
from vllm_chatterbox.outputs import atomic_output
from vllm_chatterbox.params import check_number

# Speech tokens are S3 tokenizer codes.
SPEECH_TOKEN_COUNT = S3TokenizerConfig().codebook_size
# Prompts longer than the builder ever makes (10 s of reference, 25 tokens/s) are allowed up to
# 30 s; beyond that a hand-made voice would only cost S3Gen memory.
MAX_PROMPT_TOKENS = 30 * S3TokenizerConfig().token_rate

# field -> (dtype, rank, where it lives in conds.pt)
_FIELDS = {
    "speaker_emb": (torch.float32, 2, "t3.speaker_emb"),
    "cond_prompt_speech_tokens": (torch.int64, 2, "t3.cond_prompt_speech_tokens"),
    "prompt_token": (torch.int64, 2, "gen.prompt_token"),
    "prompt_feat": (torch.float32, 3, "gen.prompt_feat"),
    "embedding": (torch.float32, 2, "gen.embedding"),
}


def check_exaggeration(value: Any, label: str = "exaggeration") -> float:
    """A number in the same range ``generate`` accepts, [0, 2]."""
    if value is None:
        raise ValueError(f"{label} must be a number in [0.0, 2.0], got None")
    return check_number("exaggeration", value, "" if label == "exaggeration" else f" ({label})")


@dataclass(frozen=True)
class Voice:
    speaker_emb: torch.Tensor  # (1, 256) float32, voice-encoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # (1, P) int64, S3 tokens of the first 6 s
    exaggeration: float  # emotion_adv scalar
    prompt_token: torch.Tensor  # (1, Tp) int64, S3Gen prompt tokens
    prompt_feat: torch.Tensor  # (1, Tm, 80) float32, 24 kHz log-mel of the reference
    embedding: torch.Tensor  # (1, 192) float32, CAMPPlus x-vector

    def __post_init__(self) -> None:
        object.__setattr__(self, "exaggeration", check_exaggeration(self.exaggeration))
        for name, (dtype, rank, _) in _FIELDS.items():
            _check_tensor(name, getattr(self, name), dtype, rank)
        for name in ("cond_prompt_speech_tokens", "prompt_token"):
            tokens = getattr(self, name)
            if tokens.shape[1] > MAX_PROMPT_TOKENS:
                raise ValueError(f"voice {name} has {tokens.shape[1]} tokens; at most {MAX_PROMPT_TOKENS} (30 s)")
            if int(tokens.min()) < 0 or int(tokens.max()) >= SPEECH_TOKEN_COUNT:
                raise ValueError(f"voice {name} holds ids outside the speech tokens [0, {SPEECH_TOKEN_COUNT}) "
                                 f"(min {int(tokens.min())}, max {int(tokens.max())})")
        frames = self.prompt_feat.shape[1]
        if frames > 2 * MAX_PROMPT_TOKENS + 2:
            raise ValueError(f"voice prompt_feat has {frames} frames; at most {2 * MAX_PROMPT_TOKENS + 2} (30 s)")

    def check_dims(self, config: ChatterboxConfig) -> "Voice":
        """The widths a model expects: speaker embedding, x-vector and mel bins."""
        expected = {
            "speaker_emb": (1, config.t3.speaker_embed_size),
            "embedding": (1, config.flow.spk_embed_dim),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"voice {name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        if self.prompt_feat.shape[2] != config.flow.output_size:
            raise ValueError(f"voice prompt_feat must be (1, frames, {config.flow.output_size}), "
                             f"got {tuple(self.prompt_feat.shape)}")
        return self

    def with_exaggeration(self, exaggeration: float) -> "Voice":
        if float(exaggeration) == self.exaggeration:
            return self
        return dataclasses.replace(self, exaggeration=float(exaggeration))

    @property
    def t3_key(self) -> str:
        """Content hash of what the T3 prefix depends on (speaker, prompt tokens, exaggeration)."""
        digest = hashlib.sha256()
        digest.update(self.speaker_emb.detach().to(torch.float32).contiguous().numpy().tobytes())
        digest.update(self.cond_prompt_speech_tokens.detach().to(torch.int64).contiguous().numpy().tobytes())
        digest.update(repr(float(self.exaggeration)).encode())
        return digest.hexdigest()[:32]

    def to_conds_dict(self) -> dict:
        return {
            "t3": {
                "speaker_emb": self.speaker_emb,
                "clap_emb": None,
                "cond_prompt_speech_tokens": self.cond_prompt_speech_tokens,
                "cond_prompt_speech_emb": None,
                "emotion_adv": torch.full((1, 1, 1), float(self.exaggeration)),
            },
            "gen": {
                "prompt_token": self.prompt_token,
                "prompt_token_len": torch.tensor([self.prompt_token.shape[1]], dtype=torch.int64),
                "prompt_feat": self.prompt_feat,
                "prompt_feat_len": None,
                "embedding": self.embedding,
            },
        }

    def save(self, path: str | Path) -> None:
        """Write the voice as ``conds.pt``; a failed write leaves no partial file behind."""
        with atomic_output(path) as temporary, open(temporary, "wb") as f:
            # Saved through a file object, the archive's inner name does not depend on the
            # temporary file name.
            torch.save(self.to_conds_dict(), f)

    @classmethod
    def load(cls, path: str | Path) -> "Voice":
        path = Path(path)
        if not path.exists():
            raise ValueError(f"voice file not found: {path}")
        data = load_torch_file(path, "conds.pt voice file")
        return cls.from_conds_dict(data, source=str(path))

    @classmethod
    def from_conds_dict(cls, data: dict, source: str = "conds") -> "Voice":
        if not isinstance(data, dict) or not isinstance(data.get("t3"), dict) or not isinstance(data.get("gen"), dict):
            raise ValueError(f"{source}: not a conds.pt voice (expected a dict with 't3' and 'gen' dicts)")
        t3 = data["t3"]
        if t3.get("clap_emb") is not None:
            raise ValueError(f"{source}: clap_emb must be None")
        values = {}
        for name, (dtype, rank, key) in _FIELDS.items():
            part, entry = key.split(".")
            if entry not in data[part]:
                raise ValueError(f"{source}: missing entry {key} of the conds.pt format")
            values[name] = _as_tensor(data[part][entry], dtype, f"{source}: {key}")
        emotion = t3.get("emotion_adv")
        if emotion is None:
            exaggeration = 0.5
        else:
            emotion = _as_tensor(emotion, torch.float32, f"{source}: t3.emotion_adv")
            if emotion.numel() != 1:
                raise ValueError(f"{source}: t3.emotion_adv must hold one value, got shape {tuple(emotion.shape)}")
            exaggeration = float(emotion.reshape(()))
        try:
            return cls(
                speaker_emb=values["speaker_emb"].reshape(1, -1),
                cond_prompt_speech_tokens=values["cond_prompt_speech_tokens"].reshape(1, -1),
                exaggeration=check_exaggeration(exaggeration, "t3.emotion_adv"),
                prompt_token=values["prompt_token"].reshape(1, -1),
                prompt_feat=_as_prompt_feat(values["prompt_feat"], source),
                embedding=values["embedding"].reshape(1, -1),
            )
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


def _as_tensor(value: Any, dtype: torch.dtype, label: str) -> torch.Tensor:
    """A numeric tensor (or array) converted to ``dtype``; integers must be integer-typed."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{label} must be a numeric tensor, got an array of {value.dtype}")
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{label} must be a tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{label} must be a real-valued tensor, got {value.dtype}")
    if dtype == torch.int64 and value.dtype.is_floating_point:
        raise ValueError(f"{label} must hold integer token ids, got {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{label} is empty")
    return value.detach().to("cpu", dtype)


def _as_prompt_feat(feat: torch.Tensor, source: str) -> torch.Tensor:
    if feat.dim() not in (2, 3) or (feat.dim() == 3 and feat.shape[0] != 1):
        raise ValueError(f"gen.prompt_feat must be (1, frames, mels), got {tuple(feat.shape)}")
    return feat.reshape(1, -1, feat.shape[-1])


def _check_tensor(name: str, value: Any, dtype: torch.dtype, rank: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"voice {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != dtype:
        raise ValueError(f"voice {name} must be {dtype}, got {value.dtype}")
    if value.dim() != rank or value.shape[0] != 1:
        raise ValueError(f"voice {name} must have {rank} dimensions with a leading 1, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"voice {name} is empty (shape {tuple(value.shape)})")
    if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
        raise ValueError(f"voice {name} holds non-finite values (NaN or inf)")
