"""vLLM's GPT-2 forward on a CPU without its per-call Python layers: the same kernels, on the same
tensors, in the same order.

At batch 1 a Turbo decode step runs 24 layers of small work (two layer norms, four linears, the
attention, a GELU, two residual adds), and vLLM reaches each kernel through several Python layers:
``nn.Module`` calls, ``CustomOp`` dispatch, the linear layers' tensor-parallel wrappers and, on a
CPU, the attention as two ``torch.ops.vllm`` custom ops that go back through the dispatcher into
Python and look the layer up in the forward context again (vLLM registers CPU attention as an
opaque op for torch.compile, which this engine does not use). :func:`gpt2_forward` walks the same
modules and calls what they would call: ``F.layer_norm`` with their parameters, their linear
method's ``apply``, ``NewGELU.forward_native``, and the CPU attention backend's two kernels
(``t3/cpu_attention.py``). The results are bit for bit vLLM's
(``tests/t3/gpt2/test_forward.py``). :func:`lean_forward_supported` says when that holds; elsewhere
(GPUs, tensor parallelism, other attention backends, KV transfer, quantized KV caches) the model
calls vLLM's forward as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.activation import NewGELU
from vllm.model_executor.layers.layernorm import LayerNorm
from vllm.model_executor.models.gpt2 import GPT2Block, GPT2Model
from vllm.platforms import CpuArchEnum, current_platform

from vllm_chatterbox.t3.cpu_attention import cpu_attention, direct_attention_supported, eager_single_cpu_rank


def _layer_norm_plain(norm: LayerNorm, dtype: torch.dtype) -> bool:
    """vLLM's ``LayerNorm`` computes a plain ``F.layer_norm`` for inputs of ``dtype``."""
    return type(norm) is LayerNorm and norm.weight is not None and norm.weight.dtype == dtype \
        and (norm.bias is None or norm.bias.dtype == dtype)


def lean_forward_supported(model: GPT2Model, dtype: torch.dtype, enforce_eager: bool) -> bool:
    """Whether :func:`gpt2_forward` computes exactly what ``model`` does: eager mode (no compiled
    custom ops) on an x86 / Arm CPU, one tensor-parallel rank, vLLM's own GPT-2 layers, the CPU
    attention backend with a plain KV cache."""
    blocks = list(model.h)
    return (eager_single_cpu_rank(enforce_eager)
            and current_platform.get_cpu_architecture() != CpuArchEnum.POWERPC  # NewGELU's own kernel there
            and model.start_layer == 0 and model.end_layer == len(blocks)
            and _layer_norm_plain(model.ln_f, dtype)
            and all(type(block) is GPT2Block
                    and _layer_norm_plain(block.ln_1, dtype) and _layer_norm_plain(block.ln_2, dtype)
                    and type(block.mlp.act) is NewGELU
                    and not any(linear.skip_bias_add for linear in _linears(block))
                    and direct_attention_supported(block.attn.attn)
                    for block in blocks))


def _linears(block: GPT2Block):
    return block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj


def _layer_norm(norm: LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _linear(layer, x: torch.Tensor) -> torch.Tensor:
    # What Column/RowParallelLinear.forward compute with one tensor-parallel rank and the bias added.
    return layer.quant_method.apply(layer, x, layer.bias)


def gpt2_forward(model: GPT2Model, input_ids: torch.Tensor | None, positions: torch.Tensor,
                 inputs_embeds: torch.Tensor | None) -> torch.Tensor:
    """``GPT2Model.forward`` on one pipeline rank, for a model :func:`lean_forward_supported` accepts."""
    context = get_forward_context()
    if inputs_embeds is None:
        inputs_embeds = model.embed_input_ids(input_ids)
    hidden = inputs_embeds + model.wpe(positions)
    for block in model.h:
        attn = block.attn
        qkv = _linear(attn.c_attn, _layer_norm(block.ln_1, hidden))
        query, key, value = qkv.chunk(chunks=3, dim=-1)
        hidden = _linear(attn.c_proj, cpu_attention(attn.attn, query, key, value, context)) + hidden
        mlp = block.mlp
        hidden = hidden + _linear(mlp.c_proj, mlp.act.forward_native(_linear(mlp.c_fc, _layer_norm(block.ln_2, hidden))))
    return _layer_norm(model.ln_f, hidden)
