"""The packed classifier-free-guidance layout: one vLLM sequence carries both branches of a request.

The original runs T3 on a batch of two sequences, conditional and unconditional. vLLM schedules
one sequence per request, so we pack the two branches side by side. This module owns that
contract; every other file imports it from here:

- a prompt row is ``[cond | uncond]``, width 2D (:func:`pack_rows`);
- inside the model each packed row is viewed as two rows of width D, cond first
  (:func:`branch_rows` / :func:`packed_rows`), so norms, MLPs and projections share weights;
- attention runs with 2H query heads and 2KV kv heads, cond heads first, so the paged KV cache
  holds both branches and grouped-query attention never mixes them;
- logits are ``[cond | uncond]``, width 2V (:func:`split_logits`); the guidance logits processor
  combines them and masks the uncond half;
- vLLM is shown a Llama config of these doubled sizes (:func:`vllm_hf_config`).

Exact learned speech positions, in the order a request meets them:

1. ``t3/llama/prefix.py`` builds the prompt ``[conditioning | text | BOS | BOS]`` with the original's
   text positions and the BOS rows' speech position 0 (both branches, packed here).
2. ``t3/llama/positions.py`` shifts each request's RoPE positions so its last prompt row sits at one
   fixed origin; RoPE depends only on position differences, so nothing changes numerically.
3. ``t3/llama/model.py::get_mrope_input_positions`` hands vLLM those shifted prompt positions
   (the M-RoPE hook, declared by ``mrope_section`` in :func:`vllm_hf_config`).
4. ``t3/llama/model.py::forward`` turns a decode position into the learned speech index
   ``position - origin`` and adds that embedding to the fed-back token, in both branches.
5. ``t3/llama/client.py`` salts the prefix cache with the prompt length, so requests whose rows are
   equal but whose shift differs never share KV blocks.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3.llama import positions

ARCHITECTURE = "ChatterboxT3ForCausalLM"


def pack_rows(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """(L, D) cond rows and (L, D) uncond rows -> packed (L, 2D)."""
    return torch.cat([cond, uncond], dim=-1).contiguous()


def branch_rows(packed: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Packed (N, 2D) -> (2N, D) rows ``[tok0 cond, tok0 uncond, tok1 cond, ...]``."""
    return packed.reshape(2 * packed.shape[0], hidden_size)


def packed_rows(rows: torch.Tensor) -> torch.Tensor:
    """(2N, W) branch rows -> packed (N, 2W); the inverse of :func:`branch_rows`."""
    return rows.reshape(rows.shape[0] // 2, 2 * rows.shape[1])


def split_logits(logits: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed (B, 2V) logits -> views of the cond (B, V) and uncond (B, V) halves."""
    return logits[:, :vocab_size], logits[:, vocab_size:]


def vllm_hf_config(cfg: T3Config) -> dict:
    """The Llama ``config.json`` vLLM is shown for the packed model: doubled widths, heads and
    vocabulary; ``t3`` carries the real (single-branch) :class:`T3Config`."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": 2 * cfg.hidden_size,
        "num_attention_heads": 2 * cfg.num_heads,
        "num_key_value_heads": 2 * cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.num_layers,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": 2 * cfg.speech_vocab_size,
        "max_position_embeddings": positions.rope_table_size(cfg),
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        # Declaring M-RoPE makes vLLM ask the model for prompt positions (the position shift).
        "mrope_section": [cfg.head_dim // 2, 0, 0],
        "tie_word_embeddings": False,
        # Without these vLLM takes Llama's defaults and ends requests on speech token 2.
        "bos_token_id": cfg.start_speech_token,
        "eos_token_id": cfg.stop_speech_token,
        "torch_dtype": "float32",
        "t3": asdict(cfg),
    }
