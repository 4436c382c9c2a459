"""T3's Llama backbone as a vLLM model, with classifier-free guidance packed into one sequence.

Each vLLM sequence carries both CFG branches of one request, in the layout of ``t3/llama/layout.py``:
hidden rows ``[cond | uncond]``, attention with 2H query and 2KV kv heads, logits
``[cond | uncond]``; the guidance logits processor combines them.

Prompt rows arrive as precomputed embeddings (``t3/llama/prefix.py``); fed-back speech tokens are
embedded here, both halves alike, plus their exact learned speech position (``t3/llama/positions.py``).

On a CPU in eager mode the attention layers call vLLM's CPU attention kernels directly
(``t3/cpu_attention.py``, bit for bit vLLM's ``Attention`` layer: ``tests/t3/llama/test_forward.py``);
``lean_forward`` says whether they do.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.forward_context import ForwardContext, get_forward_context
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.models.interfaces import SupportsMRoPE
from vllm.sequence import IntermediateTensors

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3.cpu_attention import cpu_attention, direct_attention_supported, eager_single_cpu_rank
from vllm_chatterbox.t3.cpu_turns import EngineTurn
from vllm_chatterbox.t3.llama import positions
from vllm_chatterbox.t3.llama.layout import branch_rows, packed_rows
from vllm_chatterbox.t3.llama.rope import apply_rope, rope_cos_sin

# Checkpoint tensors the worker needs; everything else in t3_cfg.safetensors (text embeddings,
# conditioning encoder) is used by the prompt builder in the client process.
_BACKBONE_PREFIX = "tfmr."
_WORKER_TENSORS = ("speech_emb.weight", "speech_pos_emb.emb.weight", "speech_head.weight")


class RMSNorm(nn.Module):
    """Llama RMSNorm, computed in float32 as transformers does."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class T3Attention(nn.Module):
    def __init__(self, cfg: T3Config, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=False)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.attn = Attention(
            2 * cfg.num_heads,
            cfg.head_dim,
            cfg.head_dim**-0.5,
            num_kv_heads=2 * cfg.num_kv_heads,
            cache_config=vllm_config.cache_config,
            prefix=f"{prefix}.attn",
        )

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                context: ForwardContext | None) -> torch.Tensor:
        """x: (2N, D) with rows [tok0 cond, tok0 uncond, tok1 cond, ...]; cos / sin: one row per row
        of x. ``context``: the forward context, to call the CPU attention kernels directly; None:
        vLLM's ``Attention`` layer."""
        n = x.shape[0] // 2
        qkv = self.qkv_proj(x)
        qk_size = self.q_size + self.kv_size
        # q and k heads of a row turn by the same angles: one rotation for both.
        qk = apply_rope(qkv[:, :qk_size].reshape(2 * n, -1, self.head_dim), cos, sin)
        # Pack each token's two branches side by side: cond heads, then uncond heads.
        q = qk[:, : self.num_heads].reshape(n, -1)
        k = qk[:, self.num_heads:].reshape(n, -1)
        v = qkv[:, qk_size:].reshape(n, -1)
        out = self.attn(q, k, v) if context is None else cpu_attention(self.attn, q, k, v, context)
        return self.o_proj(out.reshape(2 * n, self.q_size))


class T3MLP(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.intermediate_size = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(nn.functional.silu(gate).mul_(up))


class T3DecoderLayer(nn.Module):
    def __init__(self, cfg: T3Config, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = T3Attention(cfg, vllm_config, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = T3MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                context: ForwardContext | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, context)
        return x + self.mlp(self.post_attention_layernorm(x))


class ChatterboxT3ForCausalLM(nn.Module, SupportsMRoPE):
    """vLLM entry point. ``hf_config.t3`` holds the :class:`T3Config` fields."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        cfg = T3Config(**vllm_config.model_config.hf_config.t3)
        self.cfg = cfg
        self.hidden_size = cfg.hidden_size
        self.speech_vocab_size = cfg.speech_vocab_size
        self.speech_origin = positions.speech_origin(cfg)
        self.layers = nn.ModuleList(
            T3DecoderLayer(cfg, vllm_config, f"{prefix}layers.{i}") for i in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.speech_emb = nn.Embedding(cfg.speech_vocab_size, cfg.hidden_size)
        self.speech_pos_emb = nn.Embedding(cfg.speech_pos_table_size, cfg.hidden_size)
        self.speech_head = nn.Linear(cfg.hidden_size, cfg.speech_vocab_size, bias=False)
        # On a CPU: vLLM's CPU attention kernels called directly (module docstring).
        self.lean_forward = eager_single_cpu_rank(vllm_config.model_config.enforce_eager) and all(
            direct_attention_supported(layer.self_attn.attn) for layer in self.layers)
        cos, sin = rope_cos_sin(cfg, positions.rope_table_size(cfg))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # On a CPU with cpu_sharing="alternate": wait while S3Gen computes (t3/cpu_turns.py).
        self.cpu_turn = EngineTurn.from_environment()

    # --- vLLM interface -------------------------------------------------------------------

    def get_mrope_input_positions(self, input_tokens, mm_features) -> tuple[torch.Tensor, int]:
        prompt_len = len(input_tokens)
        shift = positions.prompt_position_shift(self.cfg, prompt_len)
        rope_positions = torch.arange(prompt_len, dtype=torch.int64) + shift
        return rope_positions.expand(3, -1).clone(), shift

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # A fed-back speech token enters both CFG branches identically.
        emb = self.speech_emb(input_ids)
        return torch.cat([emb, emb], dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if self.cpu_turn is not None:
            self.cpu_turn.wait()
        if inputs_embeds is None:
            inputs_embeds = self.embed_input_ids(input_ids)
        rope_positions = positions[0] if positions.dim() == 2 else positions
        n = inputs_embeds.shape[0]
        x = inputs_embeds.reshape(n, 2, self.hidden_size)
        # Rows after the prompt are speech tokens fed back; their learned index is their
        # distance from the origin (k-th fed-back token -> k + 1).
        speech_index = rope_positions - self.speech_origin
        is_speech = speech_index > 0
        speech_pos = self.speech_pos_emb(speech_index.clamp(min=0, max=self.speech_pos_emb.num_embeddings - 1))
        x = x + (speech_pos * is_speech[:, None].to(speech_pos.dtype))[:, None, :]
        x = branch_rows(x.reshape(n, 2 * self.hidden_size), self.hidden_size)
        row_positions = rope_positions.repeat_interleave(2)  # both branch rows of a token
        cos = self.rope_cos[row_positions]
        sin = self.rope_sin[row_positions]
        context = get_forward_context() if self.lean_forward else None
        for layer in self.layers:
            x = layer(x, cos, sin, context)
        return packed_rows(self.norm(x))

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.speech_head(branch_rows(hidden_states, self.hidden_size))
        return packed_rows(logits).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        # q/k/v and gate/up are fused here; collect the pieces before writing them.
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in weights:
            if name.startswith(_BACKBONE_PREFIX):
                name = name[len(_BACKBONE_PREFIX):]
                if name == "embed_tokens.weight":  # unused dummy table of the original
                    continue
                if name == "norm.weight" or name.startswith("layers."):
                    target, piece = _fused_target(name)
                    if piece is None:
                        self._copy(params, name, tensor, loaded)
                    else:
                        pending.setdefault(target, {})[piece] = tensor
            elif name in _WORKER_TENSORS:
                self._copy(params, name.replace(".emb.", "."), tensor, loaded)
        for target, pieces in pending.items():
            order = ("q", "k", "v") if target.endswith("qkv_proj.weight") else ("gate", "up")
            missing = [p for p in order if p not in pieces]
            if missing:
                raise ValueError(f"t3 checkpoint lacks {missing} for {target}")
            self._copy(params, target, torch.cat([pieces[p] for p in order], dim=0), loaded)
        return loaded

    @staticmethod
    def _copy(params: dict[str, nn.Parameter], name: str, tensor: torch.Tensor, loaded: set[str]) -> None:
        param = params.get(name)
        if param is None:
            raise ValueError(f"unexpected T3 weight {name!r}")
        if param.shape != tensor.shape:
            raise ValueError(f"T3 weight {name!r}: checkpoint shape {tuple(tensor.shape)}, model expects {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))
        loaded.add(name)


def _fused_target(name: str) -> tuple[str, str | None]:
    """Map an original Llama key to (our parameter, piece of a fused matrix or None)."""
    for piece in ("q", "k", "v"):
        suffix = f"self_attn.{piece}_proj.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)] + "self_attn.qkv_proj.weight", piece
    for piece in ("gate", "up"):
        suffix = f"mlp.{piece}_proj.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)] + "mlp.gate_up_proj.weight", piece
    return name, None
