"""The Turbo / Nano T3 prompt, built as ``T3.inference_turbo`` builds it.

Rows (one per position, length 1 + P + T + 1, no CFG branch)::

    [ spkr_enc(speaker_emb) | speech_emb(prompt tokens, P <= 375) | text_emb(text ids) | speech_emb(start) ]

No learned T3 positions, no perceiver, no emotion row, no start/stop text tokens: GPT-2 adds its
own absolute positions in the worker. The voice's exaggeration is stored but ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.voice.voice import Voice

PREFIX_KEYS = ("cond_enc.spkr_enc.weight", "cond_enc.spkr_enc.bias", "text_emb.weight", "speech_emb.weight")


class _CondEncoder(nn.Module):
    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_embed_size, cfg.hidden_size)


class GPT2PromptBuilder(nn.Module):
    def __init__(self, cfg: TurboT3Config):
        super().__init__()
        self.cfg = cfg
        self.cond_enc = _CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab_size, cfg.hidden_size)
        self.speech_emb = nn.Embedding(cfg.speech_vocab_size, cfg.hidden_size)

    @classmethod
    def from_file(cls, t3_path: str | Path, cfg: TurboT3Config) -> "GPT2PromptBuilder":
        builder = cls(cfg)
        expected = builder.state_dict()
        state = {}
        with safe_open(str(t3_path), framework="pt") as f:
            missing = [k for k in PREFIX_KEYS if k not in f.keys()]
            if missing:
                raise ValueError(f"{t3_path}: missing Turbo T3 tensors {missing}")
            for key in PREFIX_KEYS:
                tensor = f.get_tensor(key).to(torch.float32)
                if tensor.shape != expected[key].shape:
                    raise ValueError(f"{t3_path}: {key} has shape {tuple(tensor.shape)}, "
                                     f"config expects {tuple(expected[key].shape)}")
                state[key] = tensor
        builder.load_state_dict(state)
        return builder.eval()

    @torch.inference_mode()
    def conditioning(self, voice: Voice) -> torch.Tensor:
        """Speaker row + reference speech-token rows, (1 + P, D)."""
        prompt = voice.cond_prompt_speech_tokens.reshape(-1)
        if prompt.numel() > self.cfg.speech_cond_prompt_len:
            raise ValueError(f"voice has {prompt.numel()} prompt speech tokens, at most "
                             f"{self.cfg.speech_cond_prompt_len} allowed")
        if prompt.numel() and (int(prompt.min()) < 0 or int(prompt.max()) >= self.cfg.speech_vocab_size):
            raise ValueError(f"voice prompt speech tokens outside [0, {self.cfg.speech_vocab_size})")
        speaker = self.cond_enc.spkr_enc(voice.speaker_emb.reshape(1, -1).float())
        return torch.cat([speaker, self.speech_emb(prompt)], dim=0)

    @torch.inference_mode()
    def prompt_embeds(self, conditioning: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """(1 + P + T + 1, D) prompt rows for one text."""
        if not text_ids:
            raise ValueError("text has no tokens")
        text = torch.tensor(text_ids, dtype=torch.int64)
        if int(text.min()) < 0 or int(text.max()) >= self.cfg.text_vocab_size:
            raise ValueError(f"text ids outside [0, {self.cfg.text_vocab_size})")
        start = self.speech_emb.weight[self.cfg.start_speech_token][None]
        return torch.cat([conditioning, self.text_emb(text), start], dim=0).contiguous()
