"""vLLM's attention layer on a CPU without its per-call Python layers, for both T3 backbones.

On a CPU vLLM registers attention as two opaque ``torch.ops.vllm`` custom ops (for torch.compile,
which this engine does not use): every layer's call goes through the dispatcher back into Python,
looks the layer up in the forward context again and reaches the CPU backend's two kernels, the
KV cache update and the attention. :func:`cpu_attention` calls those kernels with the arguments
the backend passes, on the same tensors, so the results are bit for bit vLLM's
(``tests/t3/gpt2/test_forward.py``, ``tests/t3/llama/test_forward.py``).
:func:`direct_attention_supported` says when that holds; elsewhere (GPUs, tensor parallelism,
other attention backends, KV transfer, quantized KV caches) the models call vLLM's layer as it is.
"""

from __future__ import annotations

import functools

import torch
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.distributed.kv_transfer import has_kv_transfer_group
from vllm.forward_context import ForwardContext
from vllm.model_executor.layers.attention import Attention
from vllm.platforms import current_platform
from vllm.v1.attention.backend import AttentionType
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl


@functools.cache
def _cpu_attention_kernels():
    """(KV cache update, attention): the CPU build's kernels, looked up on first use (a CUDA build
    of vLLM has no such ops, and its models never call them)."""
    return torch.ops._C.cpu_attn_reshape_and_cache.default, torch.ops._C.cpu_attention_with_kv_cache.default


def eager_single_cpu_rank(enforce_eager: bool) -> bool:
    """Eager mode (no compiled custom ops) on a CPU, one tensor-parallel rank, no KV transfer: where
    a model may call vLLM's CPU kernels itself."""
    return (enforce_eager
            and current_platform.is_cpu()
            and get_tensor_model_parallel_world_size() == 1
            and not has_kv_transfer_group())


def direct_attention_supported(attn: Attention) -> bool:
    """Whether :func:`cpu_attention` computes what ``attn`` does: the CPU backend's decoder
    attention with a plain KV cache of its own."""
    impl = attn.impl
    return (type(impl) is CPUAttentionBackendImpl
            and impl.attn_type == AttentionType.DECODER
            and not impl.use_zentorch_sdpa
            and impl.sinks is None
            and not impl.is_fp8_kv_cache
            and attn.query_quant is None
            and attn.kv_sharing_target_layer_name is None
            and not attn.attn_backend.forward_includes_kv_cache_update)


def cpu_attention(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  context: ForwardContext) -> torch.Tensor:
    """``Attention.forward`` on the CPU backend: the KV cache update, then the attention kernel,
    called as ``CPUAttentionBackendImpl`` calls them."""
    impl: CPUAttentionBackendImpl = attn.impl
    name = attn.layer_name
    output = torch.empty((query.shape[0], attn.num_heads * attn.head_size_v), dtype=query.dtype, device=query.device)
    query = query.view(-1, attn.num_heads, attn.head_size)
    key = key.view(-1, attn.num_kv_heads, attn.head_size)
    value = value.view(-1, attn.num_kv_heads, attn.head_size_v)
    heads_output = output.view(-1, attn.num_heads, attn.head_size_v)
    metadata = context.attn_metadata
    if isinstance(metadata, dict):
        metadata = metadata[name]
    slot_mapping = context.slot_mapping.get(name)
    if slot_mapping is None and metadata is None:  # vLLM's warm-up and profiling runs
        return output
    # [num_blocks, num_kv_heads, block_size, 2 * head_size] -> keys and values, as the backend splits it.
    num_blocks, num_kv_heads, block_size, _ = attn.kv_cache.size()
    key_cache, value_cache = attn.kv_cache.view((num_blocks, num_kv_heads, block_size * 2, -1)).chunk(2, dim=2)
    reshape_and_cache, attention_with_kv_cache = _cpu_attention_kernels()
    if slot_mapping is not None:
        reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, attn.isa, attn._k_scale_float,
                          attn._v_scale_float, impl.kv_cache_dtype)
    if metadata is None:
        return output
    tokens = metadata.num_actual_tokens
    attention_with_kv_cache(query[:tokens], key_cache, value_cache, heads_output[:tokens], metadata.query_start_loc,
                            metadata.seq_lens, impl.scale, metadata.causal, impl.alibi_slopes, impl.sliding_window,
                            metadata.block_table, impl.logits_soft_cap, metadata.scheduler_metadata, None,
                            metadata.dynamic_causal, attn._k_scale_float, attn._v_scale_float, impl.kv_cache_dtype)
    return output
