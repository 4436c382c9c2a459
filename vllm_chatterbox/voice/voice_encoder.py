"""Speaker embedding for T3: a 3-layer LSTM over 40-bin mel partials (``ve.safetensors``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import VoiceEncoderConfig
from vllm_chatterbox.voice.features import trim_silence, voice_encoder_mel


class VoiceEncoder(nn.Module):
    def __init__(self, cfg: VoiceEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.embed_size)
        # Training-time similarity scaling; kept so the official file loads strictly.
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], cfg: VoiceEncoderConfig) -> "VoiceEncoder":
        model = cls(cfg)
        model.load_state_dict(state_dict)
        return model.eval()

    def forward(self, partials: torch.Tensor) -> torch.Tensor:
        """(B, partial_frames, n_mels) mels -> (B, embed_size) unit-norm embeddings."""
        _, (hidden, _) = self.lstm(partials)
        embeds = F.relu(self.proj(hidden[-1]))
        return embeds / torch.linalg.norm(embeds, dim=1, keepdim=True)

    def partials(self, mel: torch.Tensor) -> torch.Tensor:
        """Cut a (T, n_mels) mel into overlapping windows -> (n_partials, partial_frames, n_mels)."""
        cfg = self.cfg
        win = cfg.partial_frames
        step = int(np.round((cfg.sample_rate / cfg.partial_rate) / win))
        n_wins, remainder = divmod(max(mel.shape[0] - win + step, 0), step)
        # A last, incomplete window is kept when it would be mostly covered by real frames.
        if n_wins == 0 or (remainder + (win - step)) / win >= cfg.min_coverage:
            n_wins += 1
        target = win + step * (n_wins - 1)
        if target > mel.shape[0]:
            mel = F.pad(mel, (0, 0, 0, target - mel.shape[0]))
        else:
            mel = mel[:target]
        return mel.unfold(0, win, step).transpose(1, 2).contiguous()

    @torch.inference_mode()
    def embed_utterance(self, wav16: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Speaker embedding (1, embed_size) of a 16 kHz clip (silence-trimmed, partials averaged)."""
        wav = torch.as_tensor(wav16).to(device=self.proj.weight.device, dtype=torch.float32).flatten()
        if wav.numel() == 0 or not bool(wav.abs().max() > 0):
            raise ValueError("voice encoder input is empty or silent")
        wav = trim_silence(wav, top_db=self.cfg.trim_top_db)
        return self.embed_mel(voice_encoder_mel(wav, self.cfg))

    @torch.inference_mode()
    def embed_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Utterance embedding (1, embed_size) from a (T, n_mels) mel."""
        windows = self.partials(mel.to(self.proj.weight))
        mean = self(windows).mean(dim=0, keepdim=True)
        return mean / torch.linalg.norm(mean, dim=1, keepdim=True)
