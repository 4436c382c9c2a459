"""The linear layers of a T3 decode step on CPU: vLLM's oneDNN call, our direct call, torch's F.linear.

Not a test. A decode step is almost all linear layers (24 layers; a Turbo step at batch 1 spent
~70 % of its forward in oneDNN matmuls in a py-spy profile of the engine-core process), so the
per-call cost matters at small batches. For each row count M (1: one Turbo request; 2: one
request of the original family, its cond/uncond rows; 8, 16: several requests) and each thread
count, the script times the linears of a whole decode step, every layer with its own weights so
that they stream from memory as in the model (Turbo / GPT-2 medium: qkv 1024->3072, out
1024->1024, fc 1024->4096, proj 4096->1024, with biases; the original family's Llama: qkv
1024->3072, o 1024->1024, gate_up 1024->8192, down 4096->1024, no biases) three ways, interleaved
in one process so the machine's noise hits all alike:

* ``vllm``: ``vllm._custom_ops.onednn_mm`` as vLLM's GPT-2 layers call it (an op packet that
  resolves its overload on every call);
* ``direct``: the same oneDNN handle through the resolved overload (``t3/gpt2/linear.py``; the
  results are bit for bit equal);
* ``F.linear``: torch's MKL path on the plain weight (what our Llama layers and the original's
  transformers models use).

    PYTHONPATH=. python bench/cpu_linear.py --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from vllm import _custom_ops as ops

from vllm_chatterbox.t3.gpt2.linear import DirectOneDnnLinearMethod

# (name, out_features, in_features, bias) per decoder layer.
LAYERS = {
    "turbo (GPT-2 medium)": [("qkv", 3072, 1024, True), ("out", 1024, 1024, True),
                             ("fc", 4096, 1024, True), ("proj", 1024, 4096, True)],
    "original (Llama 520M)": [("qkv", 3072, 1024, False), ("o", 1024, 1024, False),
                              ("gate_up", 8192, 1024, False), ("down", 1024, 4096, False)],
}


def layer(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A module holding a oneDNN handle made as vLLM makes it (``onednn_handle``)."""
    module = nn.Module()
    module.weight = nn.Parameter(weight.clone(), requires_grad=False)
    module.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
    DirectOneDnnLinearMethod().process_weights_after_loading(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8, 16])
    parser.add_argument("--layers", type=int, default=24, help="decoder layers, each with its own weights")
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions (median printed)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    direct = DirectOneDnnLinearMethod()
    print(f"torch {torch.__version__}, fp32, {args.layers} layers with their own weights (a decode step's "
          f"linears, the head excluded), {args.reps} interleaved repetitions, median ms")
    print("| model | threads | M | vllm ms | direct ms | F.linear ms | direct / vllm | F.linear / vllm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, shapes in LAYERS.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            # oneDNN fixes a primitive's threads when it first runs a shape: new handles per setting.
            linears = []  # (oneDNN module, plain weight, bias) for every linear of every layer
            for _ in range(args.layers):
                for _, out_features, in_features, has_bias in shapes:
                    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
                    bias = torch.randn(out_features, generator=generator) if has_bias else None
                    linears.append((layer(weight, bias), weight, bias))
            if not hasattr(linears[0][0], "onednn_handle"):
                raise SystemExit("vLLM does not use oneDNN for fp32 linears on this platform")
            for rows in args.rows:
                inputs = [torch.randn(rows, weight.shape[1], generator=generator) for _, weight, _ in linears]
                ways = {
                    "vllm": lambda: [ops.onednn_mm(m.onednn_handle, i, b) for (m, _, b), i in zip(linears, inputs)],
                    "direct": lambda: [direct.apply(m, i, b) for (m, _, b), i in zip(linears, inputs)],
                    "F.linear": lambda: [F.linear(i, w, b) for (_, w, b), i in zip(linears, inputs)],
                }
                assert all(torch.equal(a, b) for a, b in zip(ways["vllm"](), ways["direct"]()))
                times = {name: [] for name in ways}
                for _ in range(args.reps):
                    for name, way in ways.items():
                        start = time.perf_counter()
                        way()
                        times[name].append((time.perf_counter() - start) * 1e3)
                med = {name: statistics.median(values) for name, values in times.items()}
                print(f"| {model} | {threads} | {rows} | {med['vllm']:.2f} | {med['direct']:.2f} | "
                      f"{med['F.linear']:.2f} | {med['direct'] / med['vllm']:.3f} | {med['F.linear'] / med['vllm']:.3f} |",
                      flush=True)
            del linears


if __name__ == "__main__":
    main()
