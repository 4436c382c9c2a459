"""S3Gen's flow: speech tokens + voice prompt -> 80-bin mel frames at 50 Hz.

Tokens (prompt tokens of the voice followed by the tokens to speak) are embedded and encoded
by the upsampling conformer into ``mu`` (two frames per token). A conditional flow-matching
decoder integrates the estimator's velocity field from Gaussian noise with a fixed Euler
schedule (cosine time warp) and classifier-free guidance, conditioned on ``mu``, the projected
speaker x-vector and the voice's prompt mel in the first frames. Parameter names equal the
official ``flow.*`` keys (prefix-relative).

Items of different lengths are right-padded into one batch with a frame mask; the guidance
rows (all conditions zeroed) ride in the same estimator call as the conditioned rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vllm_chatterbox.config import EstimatorConfig, FlowConfig
from vllm_chatterbox.s3gen.estimator import ConditionalDecoder, attention_bias
from vllm_chatterbox.s3gen.flow_encoder import UpsampleConformerEncoder
from vllm_chatterbox.s3gen.meanflow import MeanflowEuler


@dataclass
class FlowInputs:
    """A padded batch ready for the CFM decoder; frame counts are per item."""

    mu: torch.Tensor  # (B, 80, L) encoder output projected to mel channels
    spks: torch.Tensor  # (B, 80) projected speaker embedding
    cond: torch.Tensor  # (B, 80, L) prompt mel in the first prompt_frames[i] frames, else 0
    mask: torch.Tensor  # (B, 1, L) 1.0 on the item's frames, 0.0 on padding
    frames: list[int]  # 2 * (prompt tokens + speech tokens)
    prompt_frames: list[int]  # prompt mel frames; the generated mel is frames [prompt, total)


def cosine_time_grid(n_timesteps: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n+1,) times 1 - cos(pi/2 * linspace(0, 1, n+1)): dense steps near t = 0 (noise)."""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


class ConditionalFlowMatching(nn.Module):
    """Euler solver with classifier-free guidance around the estimator (official ``flow.decoder``)."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.estimator = ConditionalDecoder(cfg)
        self.cfg_rate = cfg.inference_cfg_rate

    def forward(self, noise: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor, spks: torch.Tensor,
                cond: torch.Tensor, n_timesteps: int) -> torch.Tensor:
        """noise, mu, cond (B, 80, L); mask (B, 1, L); spks (B, 80) -> mel (B, 80, L)."""
        B, n_mels, L = mu.shape
        dtype = self.estimator.compute_dtype
        t_span = cosine_time_grid(n_timesteps, mu.device, mu.dtype)
        step_sizes = t_span[1:] - t_span[:-1]
        time_embs = self.estimator.time_embedding(t_span[:-1]).to(dtype)  # all steps at once: (n, 4C)

        # Rows [0, B) are conditioned, rows [B, 2B) are the unconditional guidance copies whose
        # mu / speaker / prompt channels stay zero. Only the first 80 channels change per step.
        # The estimator runs in its compute dtype; the solver state x stays in mu's (fp32).
        inputs = mu.new_zeros(2 * B, 4 * n_mels, L, dtype=dtype)
        inputs[:B, n_mels:2 * n_mels] = mu
        inputs[:B, 2 * n_mels:3 * n_mels] = spks.unsqueeze(-1)
        inputs[:B, 3 * n_mels:] = cond
        mask2 = torch.cat([mask, mask]).to(dtype)
        bias = attention_bias(mask2)

        x = noise
        for step in range(n_timesteps):
            inputs[:B, :n_mels] = x
            inputs[B:, :n_mels] = x
            velocity = self.estimator(inputs, mask2, time_embs[step:step + 1], bias).to(x.dtype)
            v_cond, v_uncond = velocity[:B], velocity[B:]
            x = x + step_sizes[step] * ((1.0 + self.cfg_rate) * v_cond - self.cfg_rate * v_uncond)
        return x


class CausalMaskedDiffWithXvec(nn.Module):
    def __init__(self, cfg: FlowConfig, estimator_cfg: EstimatorConfig):
        super().__init__()
        if estimator_cfg.in_channels != 4 * cfg.output_size:
            raise ValueError(f"estimator in_channels {estimator_cfg.in_channels} must be 4 x {cfg.output_size} mel bins")
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.encoder_size, cfg.output_size)
        self.decoder = MeanflowEuler(estimator_cfg) if estimator_cfg.meanflow else ConditionalFlowMatching(estimator_cfg)

    def project_speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 192) CAMPPlus x-vectors -> (B, 80)."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids right-padded, (B,) lengths -> mu (B, 80, ratio*T)."""
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]
        x = self.input_embedding(tokens) * valid.unsqueeze(-1).to(self.input_embedding.weight.dtype)
        h = self.encoder(x, lengths)
        return self.encoder_proj(h).transpose(1, 2)

    def prepare(self, speech_tokens: list[torch.Tensor], prompt_tokens: list[torch.Tensor],
                prompt_feats: list[torch.Tensor], embeddings: torch.Tensor,
                hold_back: list[bool] | None = None) -> FlowInputs:
        """Per item: speech tokens (Ts,), prompt tokens (Tp,), prompt mel (Tm, 80); embeddings (B, 192).

        ``hold_back[i]``: item i is a streamed piece that is not the last (the original's
        ``finalize=False``): its last ``pre_lookahead_len`` tokens only serve as look-ahead for
        the tokens before them, and their frames are dropped before the CFM.

        All tensors must already be on the model's device and valid (ids in range, Tm < 2(Tp+Ts))."""
        device = self.input_embedding.weight.device
        dtype = self.input_embedding.weight.dtype
        token_rows = [torch.cat([p, s]) for p, s in zip(prompt_tokens, speech_tokens)]
        n_tokens = [len(r) for r in token_rows]
        tokens = torch.zeros(len(token_rows), max(n_tokens), dtype=torch.long, device=device)
        for i, row in enumerate(token_rows):
            tokens[i, :len(row)] = row
        lengths = torch.tensor(n_tokens, device=device)

        mu = self.encode(tokens, lengths)
        ratio = self.cfg.token_mel_ratio
        if hold_back is not None and any(hold_back):
            n_tokens = [n - self.cfg.pre_lookahead_len if hold else n for n, hold in zip(n_tokens, hold_back)]
            lengths = torch.tensor(n_tokens, device=device)
            mu = mu[:, :, :ratio * max(n_tokens)]
        frames = [ratio * n for n in n_tokens]
        prompt_frames = [f.shape[0] for f in prompt_feats]
        cond = torch.zeros_like(mu)
        for i, feat in enumerate(prompt_feats):
            cond[i, :, :feat.shape[0]] = feat.to(dtype).transpose(0, 1)
        mask = (torch.arange(mu.shape[2], device=device) < ratio * lengths[:, None]).to(dtype).unsqueeze(1)
        spks = self.project_speaker(embeddings.to(dtype))
        return FlowInputs(mu=mu, spks=spks, cond=cond, mask=mask, frames=frames, prompt_frames=prompt_frames)

    def forward(self, inputs: FlowInputs, noise: torch.Tensor, n_timesteps: int) -> torch.Tensor:
        """noise (B, 80, L) -> the full mel (B, 80, L) including the prompt region (padding is 0)."""
        return self.decoder(noise * inputs.mask, inputs.mu, inputs.mask, inputs.spks, inputs.cond, n_timesteps)
