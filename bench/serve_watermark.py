"""What the server's watermark (on by default) costs a stream's time to first audio.

Not a test. Starts two servers on the same random-weight model, one marking (the default) and
one with ``--no-watermark`` (the baseline), and sends them the same streamed pcm requests (same
text and seed), alternating which server goes first, one request at a time. Reports time to
first audio (first body byte) and to the last byte, p50 and mean per server, and the ratios and
differences marked / unmarked. A marked stream holds back the last 0.1 s of its first piece
(the stream marker's look-ahead) and marks the rest before it leaves.

    PYTHONPATH=. python bench/serve_watermark.py --size tiny --requests 12
    PYTHONPATH=. python bench/serve_watermark.py --size full --requests 6 --max-new-tokens 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.serve import TEXTS, free_port
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.t3.engine import cache_root


def start_server(model_dir: Path, port: int, max_new_tokens: int, log: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "vllm_chatterbox.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-new-tokens", str(max_new_tokens), "--max-num-seqs", "8", "--kv-cache-gib", "0.5",
               "--max-model-len", "1024", *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(process, port: int, log: Path) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)


def one_stream(port: int, text: str, seed: int, n_timesteps: int | None) -> tuple[float, float, str]:
    body = {"input": text, "response_format": "pcm", "seed": seed}
    if n_timesteps is not None:
        body["n_timesteps"] = n_timesteps
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600) as http:
        started = time.perf_counter()
        first = None
        with http.stream("POST", "/v1/audio/speech", json=body) as response:
            response.raise_for_status()
            for _ in response.iter_raw():
                if first is None:
                    first = time.perf_counter() - started
        return first, time.perf_counter() - started, response.headers["x-chatterbox-watermark"]


def first_release_marking_ms(seconds: float, repeats: int = 20) -> float:
    """Median ms to mark a stream's first release of ``seconds`` (a fresh StreamMarker's first
    ``feed``), on one torch thread as the server's marking threads run it."""
    import numpy as np
    import torch

    from vllm_chatterbox.watermark import StreamMarker, load_watermarker

    torch.set_num_threads(1)
    watermarker = load_watermarker()
    audio = (np.random.default_rng(0).standard_normal(int(seconds * 24000)) * 0.1).astype(np.float32)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        StreamMarker(watermarker, 24000).feed(audio)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--requests", type=int, default=12, help="streams per server")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--n-timesteps", type=int, default=None, help="S3Gen steps (default: the model's)")
    args = parser.parse_args()

    if args.size == "full":
        model_dir = make_test_model(cache_root() / "bench-full", "full", seed=0)
    else:
        model_dir = make_test_model(cache_root() / "bench-tiny-watermark", "tiny", seed=0)
    print(f"settings: model {args.size} ({model_dir}), {args.requests} streams per server, one at a time, "
          f"alternating servers; pcm; max_new_tokens {args.max_new_tokens}; n_timesteps "
          f"{args.n_timesteps or 'model default'}; load average {os.getloadavg()[0]:.2f}", flush=True)
    logs = Path(cache_root()) / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {"marked": free_port(), "unmarked": free_port()}
    log_paths = {name: logs / f"serve-watermark-{name}.log" for name in ports}
    processes = {
        "marked": start_server(model_dir, ports["marked"], args.max_new_tokens, log_paths["marked"]),
        "unmarked": start_server(model_dir, ports["unmarked"], args.max_new_tokens, log_paths["unmarked"],
                                 "--no-watermark"),
    }
    results: dict[str, list[tuple[float, float]]] = {"marked": [], "unmarked": []}
    try:
        for name, process in processes.items():
            wait_ready(process, ports[name], log_paths[name])
        for name in processes:  # warm-up: first-use loading is not what is measured
            one_stream(ports[name], TEXTS[0], 0, args.n_timesteps)
        for i in range(args.requests):
            order = ("marked", "unmarked") if i % 2 == 0 else ("unmarked", "marked")
            text = TEXTS[i % len(TEXTS)]
            for name in order:
                first, total, header = one_stream(ports[name], text, 100 + i, args.n_timesteps)
                assert header == ("perth" if name == "marked" else "none"), header
                results[name].append((first, total))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=60)

    print(f"\n{'server':<22} {'TTFA p50 s':>11} {'TTFA mean s':>12} {'last byte p50 s':>16}")
    summary = {}
    for name, label in (("unmarked", "--no-watermark (base)"), ("marked", "marked (default)")):
        ttfa = [first for first, _ in results[name]]
        total = [last for _, last in results[name]]
        summary[name] = (statistics.median(ttfa), statistics.mean(ttfa), statistics.median(total))
        print(f"{label:<22} {summary[name][0]:>11.3f} {summary[name][1]:>12.3f} {summary[name][2]:>16.3f}")
    on, off = summary["marked"], summary["unmarked"]
    paired = [m[0] - u[0] for m, u in zip(results["marked"], results["unmarked"])]
    print(f"\nmarked / unmarked: TTFA p50 {on[0] / off[0]:.3f}x, mean {on[1] / off[1]:.3f}x, last byte p50 "
          f"{on[2] / off[2]:.3f}x; paired TTFA difference median {statistics.median(paired) * 1000:+.1f} ms "
          f"(same text and seed); load average {os.getloadavg()[0]:.2f}")
    # The original models' first piece is 15 tokens (0.6 s); Turbo's 10 (0.4 s).
    for seconds in (0.4, 0.6):
        print(f"marking a stream's first release of {seconds} s alone (StreamMarker.feed, 1 thread): median "
              f"{first_release_marking_ms(seconds):.1f} ms")


if __name__ == "__main__":
    main()
