"""Turbo T3 on a CPU: the engine process with glibc's transparent huge pages (the default, see
``t3/threads.py``) against the same engine without them.

Not a test. Two engines on the same full-size random Turbo checkpoint (fp32, ``--threads``
compute threads each), alive at once: "4k" started with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0``
(the baseline: glibc's default, what the engine had before), "thp" with the default
``glibc.malloc.hugetlb=1``. Page size changes no arithmetic: both give the same tokens, which
the script checks. For each ``--concurrency`` N, N seeded requests of ``--tokens`` tokens run at
once on one engine, then on the other, ``--reps`` times (every text once before on both, so both
find the same prefix KV cached). Printed: T3 tokens/s median [min..max], thp / 4k, and how much
of each engine process's memory is in huge pages.

    PYTHONPATH=. python bench/turbo_hugepages.py --concurrency 1 8
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.latency import ONE_TEXT, TEXTS  # noqa: E402
from bench.turbo_forward import timed_generate, turbo_bench_arguments  # noqa: E402
from vllm_chatterbox.t3.engine import T3Engine  # noqa: E402
from vllm_chatterbox.t3.threads import scoped_environment  # noqa: E402

MIN_FREE_GIB = 12  # two full-size engines


def engine_processes() -> set[int]:
    """This process's vLLM engine-core processes."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join(p.cmdline())}


def huge_pages_gib(pids: set[int]) -> str:
    sizes = []
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = dict(line.split(":", 1) for line in rollup if ":" in line)
        sizes.append((int(fields["AnonHugePages"].split()[0]) / 2**20, int(fields["Rss"].split()[0]) / 2**20))
    return ", ".join(f"{huge:.2f} of {rss:.2f} GiB" for huge, rss in sizes)


def main() -> None:
    args, model_dir = turbo_bench_arguments(__doc__.splitlines()[0], MIN_FREE_GIB)
    from vllm_chatterbox.tts import ChatterboxTTS

    seqs = max(8, *args.concurrency)
    before = engine_processes()
    tts = ChatterboxTTS.from_dir(model_dir, t3_threads=args.threads, max_num_seqs=seqs)  # "thp": the default
    thp_pids = engine_processes() - before
    engines = {"thp": tts.t3_engine}
    try:
        with scoped_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}):
            engines["4k"] = T3Engine(tts.variant.engine_spec(tts.config), tts.files.t3, threads=args.threads,
                                     cpu_sharing="overlap", max_num_seqs=seqs)
        four_k_pids = engine_processes() - before - thp_pids
        print(f"Turbo T3, full-size random weights, fp32, CPU, engine threads {args.threads}, {args.tokens} tokens "
              f"per request, {args.reps} alternating reps; load average at start {os.getloadavg()}")
        print("| requests at once | 4k pages tok/s | huge pages tok/s | thp / 4k |")
        print("|---:|---:|---:|---:|")
        for concurrency in args.concurrency:
            texts = [ONE_TEXT] if concurrency == 1 else [TEXTS[i % len(TEXTS)] for i in range(concurrency)]
            for engine in engines.values():
                timed_generate(engine, tts, texts, 4)  # the texts' prefix KV in both caches
            rates: dict[str, list[float]] = {"4k": [], "thp": []}
            for _ in range(args.reps):
                tokens = {}
                for side in rates:
                    rate, tokens[side] = timed_generate(engines[side], tts, texts, args.tokens)
                    rates[side].append(rate)
                if tokens["4k"] != tokens["thp"]:
                    raise SystemExit("the two engines gave different tokens")
            base, thp = (statistics.median(rates[s]) for s in ("4k", "thp"))
            spread = {s: f"{statistics.median(v):.2f} [{min(v):.2f}..{max(v):.2f}]" for s, v in rates.items()}
            print(f"| {concurrency} | {spread['4k']} | {spread['thp']} | {thp / base:.3f} |", flush=True)
        print(f"engine memory in huge pages: thp {huge_pages_gib(thp_pids)}; 4k {huge_pages_gib(four_k_pids)}")
        print(f"load average at end {os.getloadavg()}")
    finally:
        if "4k" in engines:
            engines["4k"].shutdown()
        tts.close()


if __name__ == "__main__":
    main()
