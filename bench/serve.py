"""HTTP load on ``vllm-chatterbox serve``: N concurrent clients with Poisson arrivals.

Not a test. Starts the server in a subprocess on a random-weight model at the released size
(``make_test_model(size="full")``, built once under ``~/.cache/vllm_chatterbox/bench-full``),
then for each client count runs that many clients, each sending its requests after exponential
pauses (a Poisson process per client), streaming 24 kHz pcm. Reports time to first audio (first
body byte) p50/p95, total latency p50/p95, seconds of audio per wall second, and errors.

    PYTHONPATH=. python bench/serve.py --clients 1 4 8 16 --requests 2 --max-new-tokens 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from vllm_chatterbox.t3.engine import cache_root
from vllm_chatterbox.demo_model import make_test_model

TEXTS = [
    "The station is two streets north of the old market.",
    "Please remember to water the plants while I am away this weekend.",
    "A light rain fell over the harbour as the boats came home.",
    "Our meeting moved to Thursday afternoon, right after lunch.",
    "She opened the letter slowly and read it twice before answering.",
    "Turn left at the bakery, then follow the river until the bridge.",
]
BYTES_PER_SECOND = 24000 * 2  # pcm: 24 kHz, 16 bit


@dataclass
class Level:
    clients: int
    ttfa: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    errors: int = 0
    wall: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_new_tokens: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "vllm_chatterbox.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-queue", "256", "--max-new-tokens", str(max_new_tokens), "--max-num-seqs", "32",
               "--kv-cache-gib", "1", "--max-model-len", "1024"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/health"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(2)


async def one_request(http: httpx.AsyncClient, text: str, seed: int, level: Level) -> None:
    started = time.perf_counter()
    first = None
    received = 0
    try:
        async with http.stream("POST", "/v1/audio/speech", json={
                "input": text, "response_format": "pcm", "seed": seed}) as response:
            if response.status_code != 200:
                await response.aread()
                level.errors += 1
                return
            async for part in response.aiter_raw():
                if first is None:
                    first = time.perf_counter() - started
                received += len(part)
    except httpx.HTTPError:
        level.errors += 1
        return
    level.ttfa.append(first if first is not None else float("nan"))
    level.latency.append(time.perf_counter() - started)
    level.audio_seconds += received / BYTES_PER_SECOND


async def client(url: str, index: int, requests: int, mean_pause: float, level: Level, rng: random.Random) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        for i in range(requests):
            await asyncio.sleep(rng.expovariate(1 / mean_pause) if mean_pause > 0 else 0)
            await one_request(http, TEXTS[(index + i) % len(TEXTS)], 1000 * index + i, level)


async def run_level(url: str, clients: int, requests: int, mean_pause: float, seed: int) -> Level:
    level = Level(clients)
    rng = random.Random(seed)
    started = time.perf_counter()
    await asyncio.gather(*(client(url, i, requests, mean_pause, level, random.Random(rng.random()))
                           for i in range(clients)))
    level.wall = time.perf_counter() - started
    return level


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--mean-pause", type=float, default=2.0, help="mean seconds between a client's requests")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="speech tokens per request (2 s of audio)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not (args.model_dir / "conds.pt").exists():
        print(f"building the full-size random model in {args.model_dir} ...", flush=True)
        make_test_model(args.model_dir, size="full", seed=0)
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{port}.log"
    print(f"starting the server (log: {log}) ...", flush=True)
    server = start_server(args.model_dir, port, args.max_new_tokens, log)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(run_level(url, 1, 1, 0, args.seed))  # warm-up
        print(f"\nfull-size random weights, CPU, pcm streaming, {args.max_new_tokens} speech tokens per request, "
              f"{args.requests} requests per client, mean pause {args.mean_pause} s\n")
        print("| clients | requests | errors | TTFA p50 s | TTFA p95 s | latency p50 s | latency p95 s "
              "| audio s | wall s | audio s per wall s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for clients in args.clients:
            level = asyncio.run(run_level(url, clients, args.requests, args.mean_pause, args.seed + clients))
            done = len(level.latency)
            print(f"| {clients} | {done + level.errors} | {level.errors} | {percentile(level.ttfa, 50):.2f} | "
                  f"{percentile(level.ttfa, 95):.2f} | {percentile(level.latency, 50):.2f} | "
                  f"{percentile(level.latency, 95):.2f} | {level.audio_seconds:.1f} | {level.wall:.1f} | "
                  f"{level.audio_seconds / level.wall:.3f} |", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
