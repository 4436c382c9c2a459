"""A voice: everything T3 and S3Gen need for one speaker at one exaggeration.

Stored on disk in the official ``conds.pt`` format (``{"t3": T3Cond fields, "gen": S3Gen
reference dict}``), so the released model's built-in voice is simply its ``conds.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Voice:
    speaker_emb: torch.Tensor  # (1, 256) float32, voice-encoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # (1, P) int64, S3 tokens of the first 6 s
    exaggeration: float  # emotion_adv scalar
    prompt_token: torch.Tensor  # (1, Tp) int64, S3Gen prompt tokens
    prompt_feat: torch.Tensor  # (1, Tm, 80) float32, 24 kHz log-mel of the reference
    embedding: torch.Tensor  # (1, 192) float32, CAMPPlus x-vector

    def __post_init__(self) -> None:
        if not math.isfinite(self.exaggeration):
            raise ValueError(f"exaggeration must be a finite number, got {self.exaggeration}")

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
        torch.save(self.to_conds_dict(), str(path))

    @classmethod
    def load(cls, path: str | Path) -> "Voice":
        path = Path(path)
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"voice file not found: {path}") from None
        except Exception as exc:  # torch raises several unrelated types for corrupt files
            raise ValueError(f"{path}: not a readable conds.pt voice file ({exc})") from exc
        return cls.from_conds_dict(data, source=str(path))

    @classmethod
    def from_conds_dict(cls, data: dict, source: str = "conds") -> "Voice":
        try:
            t3, gen = data["t3"], data["gen"]
            speaker_emb = t3["speaker_emb"]
            prompt_tokens = t3["cond_prompt_speech_tokens"]
            emotion = t3.get("emotion_adv")
            prompt_token = gen["prompt_token"]
            prompt_feat = gen["prompt_feat"]
            embedding = gen["embedding"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: missing entry {exc} of the conds.pt format") from None
        if t3.get("clap_emb") is not None:
            raise ValueError(f"{source}: clap_emb must be None")
        exaggeration = 0.5 if emotion is None else float(torch.as_tensor(emotion).reshape(-1)[0])
        return cls(
            speaker_emb=torch.as_tensor(speaker_emb, dtype=torch.float32).reshape(1, -1),
            cond_prompt_speech_tokens=torch.as_tensor(prompt_tokens).to(torch.int64).reshape(1, -1),
            exaggeration=exaggeration,
            prompt_token=torch.as_tensor(prompt_token).to(torch.int64).reshape(1, -1),
            prompt_feat=torch.as_tensor(prompt_feat, dtype=torch.float32).reshape(1, -1, prompt_feat.shape[-1]),
            embedding=torch.as_tensor(embedding, dtype=torch.float32).reshape(1, -1),
        )
