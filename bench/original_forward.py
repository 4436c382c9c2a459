"""Original-family T3 on a CPU: attention through vLLM's CPU kernels called directly
(``t3/cpu_attention.py``) against vLLM's ``Attention`` layer.

Not a test. One engine (full-size random original checkpoint, fp32, ``--threads`` compute threads);
its model's ``lean_forward`` is switched inside the engine process between vLLM's ``Attention``
layer ("vllm", the baseline) and the direct kernel calls ("lean", the default on a CPU), which
compute the same results bit for bit (``tests/t3/llama/test_forward.py``). Everything else is
``bench/turbo_forward.py``'s: for each ``--concurrency`` N, N seeded requests of ``--tokens`` tokens
each (public default sampling: CFG 0.5, temperature 0.8) run at once, alternating baseline / lean
``--reps`` times; every text was run once before, so both sides find the same prefix KV cached.
Printed: T3 tokens/s (prefill included), median [min..max], and lean / vllm.

    PYTHONPATH=. python bench/original_forward.py --concurrency 1 8
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import MIN_FREE_GIB  # noqa: E402
from bench.turbo_forward import compare_lean_forward, turbo_bench_arguments  # noqa: E402


def main() -> None:
    args, model_dir = turbo_bench_arguments(__doc__.splitlines()[0], MIN_FREE_GIB, variant="original")
    compare_lean_forward("Original-family T3 (CFG)", args, model_dir)


if __name__ == "__main__":
    main()
