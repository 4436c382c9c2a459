"""vLLM's unquantized linear layers on CPU, minus a per-call overhead of ~25 us.

On CPU (fp32, not AMD's zentorch platform) vLLM computes each linear layer with a oneDNN matmul
whose packed weights it made at load time, calling ``vllm._custom_ops.onednn_mm``; that goes
through ``torch.ops._C.onednn_mm``, an op packet that resolves its overload on every call. At
batch 1 a Turbo decode step makes 96 such calls. :class:`DirectOneDnnLinearMethod` makes the same
oneDNN handle the same way and calls the resolved overload: the same kernel on the same packed
weights, so the results are bit for bit vLLM's (``tests/t3/gpt2/test_linear.py``); elsewhere
(GPUs, bf16 with AMX, zentorch) it leaves vLLM's choice alone.
"""

from __future__ import annotations

import torch
from torch import nn
from vllm import _custom_ops as ops
from vllm.model_executor.layers.linear import UnquantizedLinearMethod
from vllm.model_executor.layers.utils import check_cpu_sgl_kernel
from vllm.platforms import CpuArchEnum, current_platform

# vLLM's own cache size for a handle's oneDNN primitives (one per input shape).
_PRIMITIVE_CACHE_SIZE = 32


def _vllm_uses_onednn(weight: torch.Tensor) -> bool:
    """Whether vLLM's CPU dispatch (``dispatch_cpu_unquantized_gemm``) would pick oneDNN here."""
    return (current_platform.is_cpu()
            and not current_platform.is_zen_cpu()
            and current_platform.get_cpu_architecture() != CpuArchEnum.POWERPC
            and ops._supports_onednn
            and not weight.is_meta
            and weight.ndim == 2
            and not check_cpu_sgl_kernel(weight.shape[0], weight.shape[1], weight.dtype))


class DirectOneDnnLinearMethod(UnquantizedLinearMethod):
    """``UnquantizedLinearMethod`` whose oneDNN path calls the resolved op directly."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if not _vllm_uses_onednn(layer.weight):
            super().process_weights_after_loading(layer)
            return
        handle = ops.create_onednn_mm(layer.weight.t(), _PRIMITIVE_CACHE_SIZE)
        layer.onednn_handle = handle  # owns the packed weights
        layer.weight = nn.Parameter(torch.empty(0, dtype=layer.weight.dtype), requires_grad=False)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        handle = getattr(layer, "onednn_handle", None)
        if handle is None:
            return super().apply(layer, x, bias)
        out = torch.empty((*x.shape[:-1], handle.n), dtype=x.dtype)
        torch.ops._C.onednn_mm.default(out, x.reshape(-1, handle.k), bias, handle.handler_tensor)
        return out


def use_direct_onednn(model: nn.Module) -> None:
    """Give every plain unquantized linear layer of ``model`` :class:`DirectOneDnnLinearMethod`
    (before its weights are loaded)."""
    for module in model.modules():
        if type(getattr(module, "quant_method", None)) is UnquantizedLinearMethod:
            module.quant_method = DirectOneDnnLinearMethod()
