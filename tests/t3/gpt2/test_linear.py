"""``t3/gpt2/linear.py``: the direct oneDNN call gives vLLM's own linear results bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vllm.model_executor.layers.linear import UnquantizedLinearMethod

from vllm_chatterbox.t3.gpt2.linear import DirectOneDnnLinearMethod, _vllm_uses_onednn, use_direct_onednn


def linear_layer(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    layer = nn.Module()
    layer.weight = nn.Parameter(weight.clone(), requires_grad=False)
    layer.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return layer


@pytest.mark.parametrize("out_features,in_features", [(96, 64), (3072, 1024)])
def test_direct_onednn_equals_vllms_linear(out_features, in_features):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    bias = torch.randn(out_features, generator=generator)
    if not _vllm_uses_onednn(weight):
        pytest.skip("vLLM does not use oneDNN for fp32 linears on this platform")
    ours, theirs = linear_layer(weight, bias), linear_layer(weight, bias)
    DirectOneDnnLinearMethod().process_weights_after_loading(ours)
    UnquantizedLinearMethod().process_weights_after_loading(theirs)
    assert ours.weight.numel() == 0  # the packed copy in the oneDNN handle is the only one kept
    for rows in (1, 2, 8, 37):
        x = torch.randn(rows, in_features, generator=generator)
        got = DirectOneDnnLinearMethod.apply(DirectOneDnnLinearMethod(), ours, x, ours.bias)
        want = UnquantizedLinearMethod().apply(theirs, x, theirs.bias)
        assert got.shape == (rows, out_features)
        assert torch.equal(got, want)
        torch.testing.assert_close(got, torch.nn.functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_use_direct_onednn_replaces_plain_methods_only():
    model = nn.Sequential(nn.Module(), nn.Module(), nn.Linear(2, 2))
    model[0].quant_method = UnquantizedLinearMethod()
    other = object()
    model[1].quant_method = other
    use_direct_onednn(model)
    assert type(model[0].quant_method) is DirectOneDnnLinearMethod
    assert model[1].quant_method is other
    assert not hasattr(model[2], "quant_method")
