"""Turbo T3 on a CPU: the lean GPT-2 forward (``t3/gpt2/forward.py``) against vLLM's own forward.

Not a test. One engine (full-size random Turbo checkpoint, fp32, ``--threads`` compute threads);
its model's forward is switched inside the engine process between vLLM's ``GPT2Model.forward``
("vllm", the baseline) and the lean forward ("lean", the default on a CPU), which compute the same
results bit for bit (``tests/t3/gpt2/test_forward.py``). For each ``--concurrency`` N, N seeded
requests of ``--tokens`` tokens each run at once, alternating baseline / lean ``--reps`` times so
the machine's noise hits both; every text was run once before, so both sides find the same
prefix KV cached. Printed: T3 tokens/s (prefill included), median [min..max], and lean / vllm.

    PYTHONPATH=. python bench/turbo_forward.py --concurrency 1 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.common import set_lean_forward  # noqa: E402
from bench.latency import MIN_FREE_GIB, ONE_TEXT, TEXTS  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model  # noqa: E402
from vllm_chatterbox.t3.engine import cache_root  # noqa: E402


def timed_generate(engine, tts, texts: list[str], tokens: int) -> tuple[float, list[list[int]]]:
    """(T3 tokens/s, the tokens) of seeded requests for ``texts`` run at once on ``engine``."""
    requests = tts.prepare_t3_requests(texts, max_new_tokens=tokens, seed=[100 + i for i in range(len(texts))])
    start = time.perf_counter()
    results = engine.generate(requests)
    seconds = time.perf_counter() - start
    return sum(len(r.token_ids) for r in results) / seconds, [list(r.token_ids) for r in results]


def turbo_bench_arguments(description: str, min_free_gib: float,
                          variant: str = "turbo") -> tuple[argparse.Namespace, Path]:
    """The engine benchmarks' options, checked memory and the full-size model's directory (made on
    first use); ``variant``: "turbo" or "original"."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path,
                        default=cache_root() / ("bench-full-turbo" if variant == "turbo" else "bench-full"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    free_gib = psutil.virtual_memory().available / 2**30
    if free_gib < min_free_gib:
        parser.error(f"only {free_gib:.1f} GiB of memory available (the engines need about {min_free_gib})")
    model_dir = args.model_dir.expanduser()
    weights = "t3_turbo_v1.safetensors" if variant == "turbo" else "t3_cfg.safetensors"
    if not (model_dir / weights).is_file():
        make_test_model(model_dir, size="full", seed=0, variant=variant)
    return args, model_dir


def compare_lean_forward(title: str, args: argparse.Namespace, model_dir: Path) -> None:
    """The table of both sides, for the model in ``model_dir`` (``set_lean_forward`` switches them)."""
    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(model_dir, t3_threads=args.threads, max_num_seqs=max(8, *args.concurrency))
    try:
        if not set_lean_forward(tts.t3_engine, True):
            raise SystemExit("the lean forward is not in use here (not a CPU, or an unsupported configuration)")
        print(f"{title}, full-size random weights, fp32, CPU, engine threads {args.threads}, {args.tokens} tokens "
              f"per request, {args.reps} alternating reps; load average at start {os.getloadavg()}")
        print("| requests at once | vllm forward tok/s | lean forward tok/s | lean / vllm |")
        print("|---:|---:|---:|---:|")
        for concurrency in args.concurrency:
            texts = [ONE_TEXT] if concurrency == 1 else [TEXTS[i % len(TEXTS)] for i in range(concurrency)]
            timed_generate(tts.t3_engine, tts, texts, 4)  # the texts' prefix KV in the cache, for both sides alike
            rates: dict[str, list[float]] = {"vllm": [], "lean": []}
            for _ in range(args.reps):
                for side in rates:
                    set_lean_forward(tts.t3_engine, side == "lean")
                    rates[side].append(timed_generate(tts.t3_engine, tts, texts, args.tokens)[0])
            base, lean = (statistics.median(rates[s]) for s in ("vllm", "lean"))
            spread = {s: f"{statistics.median(v):.2f} [{min(v):.2f}..{max(v):.2f}]" for s, v in rates.items()}
            print(f"| {concurrency} | {spread['vllm']} | {spread['lean']} | {lean / base:.3f} |", flush=True)
        print(f"load average at end {os.getloadavg()}")
    finally:
        set_lean_forward(tts.t3_engine, True)
        tts.close()


def main() -> None:
    args, model_dir = turbo_bench_arguments(__doc__.splitlines()[0], MIN_FREE_GIB)
    compare_lean_forward("Turbo T3", args, model_dir)


if __name__ == "__main__":
    main()
