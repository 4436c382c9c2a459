"""The T3 prompt, built exactly as the original builds it, as packed CFG embeddings.

Layout (one row per position, length L = 34 + Tt + 2)::

    cond  : [ conditioning(34) | text_emb(t_j) + text_pos[j] | BOS | BOS ]
    uncond: [ conditioning(34) |      0       + text_pos[j] | BOS | BOS ]
    BOS   = speech_emb(start_speech_token) + speech_pos[0]

The conditioning is speaker (1 row) | perceiver over the prompt speech tokens (32) | emotion (1).
The original appends the BOS row twice (once in its input builder, once as ``bos_embed``); so do
we. Rows are returned packed ``[cond | uncond]`` (width 2D, ``t3/llama/layout.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3.llama.layout import pack_rows
from vllm_chatterbox.voice.voice import Voice

# Tensors of t3_cfg.safetensors used on the client side.
PREFIX_KEYS_PREFIXES = ("cond_enc.", "text_emb.", "text_pos_emb.", "speech_emb.", "speech_pos_emb.")


class PerceiverAttention(nn.Module):
    """Pre-norm multi-head attention block shared by both perceiver passes (x1 attends to x2)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, n1, d = x1.shape
        n2 = x2.shape[1]
        h1, h2 = self.norm(x1), self.norm(x2)
        q = self.to_q(h1).view(b, n1, self.heads, -1).transpose(1, 2)
        k = self.to_k(h2).view(b, n2, self.heads, -1).transpose(1, 2)
        v = self.to_v(h2).view(b, n2, self.heads, -1).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return x1 + self.proj_out(out.transpose(1, 2).reshape(b, n1, d))


class Perceiver(nn.Module):
    """Resamples any number of prompt-speech embeddings to a fixed set of query rows."""

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, cfg.perceiver_queries, cfg.hidden_size))
        self.attn = PerceiverAttention(cfg.hidden_size, cfg.perceiver_heads, cfg.perceiver_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        query = self.pre_attention_query.expand(h.shape[0], -1, -1)
        cross = self.attn(query, h)
        return self.attn(cross, cross)


class CondEncoder(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_embed_size, cfg.hidden_size)
        self.emotion_adv_fc = nn.Linear(1, cfg.hidden_size, bias=False)
        self.perceiver = Perceiver(cfg)


class LearnedPositions(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(size, dim)


class LlamaPromptBuilder(nn.Module):
    """Holds the embedding tables and the conditioning encoder; builds prompt embeddings."""

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        self.cond_enc = CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab_size, cfg.hidden_size)
        self.text_pos_emb = LearnedPositions(cfg.text_pos_table_size, cfg.hidden_size)
        self.speech_emb = nn.Embedding(cfg.speech_vocab_size, cfg.hidden_size)
        self.speech_pos_emb = LearnedPositions(cfg.speech_pos_table_size, cfg.hidden_size)

    @classmethod
    def from_file(cls, t3_path: str | Path, cfg: T3Config) -> "LlamaPromptBuilder":
        builder = cls(cfg)
        state = {}
        with safe_open(str(t3_path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(PREFIX_KEYS_PREFIXES):
                    state[key] = f.get_tensor(key).to(torch.float32)
        builder.load_state_dict_checked(state, str(t3_path))
        return builder.eval()

    def load_state_dict_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ValueError(f"{source}: missing T3 tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for key, tensor in state.items():
            if key in expected and expected[key].shape != tensor.shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(tensor.shape)}, config expects {tuple(expected[key].shape)}"
                )
        self.load_state_dict({k: v for k, v in state.items() if k in expected})

    @torch.inference_mode()
    def conditioning(self, voice: Voice) -> torch.Tensor:
        """The 34 conditioning rows (cond_len, D) for one voice at its exaggeration."""
        speaker = self.cond_enc.spkr_enc(voice.speaker_emb.reshape(1, -1).float())
        prompt = voice.cond_prompt_speech_tokens.reshape(-1)
        if prompt.numel() > self.cfg.speech_cond_prompt_len:
            raise ValueError(
                f"voice has {prompt.numel()} prompt speech tokens, at most {self.cfg.speech_cond_prompt_len} allowed"
            )
        if prompt.numel() == 0:
            raise ValueError("voice has no prompt speech tokens")
        prompt_emb = self.speech_emb(prompt) + self.speech_pos_emb.emb(torch.arange(prompt.numel()))
        resampled = self.cond_enc.perceiver(prompt_emb[None])[0]
        emotion = self.cond_enc.emotion_adv_fc(torch.tensor([[float(voice.exaggeration)]]))
        return torch.cat([speaker, resampled, emotion], dim=0)

    @torch.inference_mode()
    def prompt_embeds(self, conditioning: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """Packed [cond | uncond] prompt rows (L, 2D); ``text_ids`` include start and stop."""
        text = torch.tensor(text_ids, dtype=torch.int64)
        text_pos = self.text_pos_emb.emb(torch.arange(text.numel()))
        bos = self.speech_emb.weight[self.cfg.start_speech_token] + self.speech_pos_emb.emb.weight[0]
        bos = bos[None].expand(2, -1)
        cond_rows = torch.cat([conditioning, self.text_emb(text) + text_pos, bos], dim=0)
        # Unconditional branch: text token embeddings zeroed, text positions kept.
        uncond_rows = torch.cat([conditioning, text_pos, bos], dim=0)
        return pack_rows(cond_rows, uncond_rows)
