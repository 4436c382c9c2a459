"""HTTP load on ``vllm-chatterbox serve``: N concurrent clients with Poisson arrivals.

Not a test. Starts the server in a subprocess on a random-weight model at the released size
(``make_test_model(size="full")``, built once under ``~/.cache/vllm_chatterbox/bench-full``),
then for each client count runs that many clients, each sending its requests after exponential
pauses (a Poisson process per client), streaming 24 kHz pcm. Reports time to first audio (first
body byte) p50/p95, total latency p50/p95, seconds of audio per wall second, and errors.

    PYTHONPATH=. python bench/serve.py --clients 1 4 8 16 --requests 2 --max-new-tokens 50

``--ray 1 2`` runs the same load, after the single-process server (the baseline), on
``serve --ray`` with 1 and then 2 replicas (a local Ray; each replica reserves
``--replica-cpus``), printing the ratio to the baseline and how many responses each replica made
(``X-Chatterbox-Replica``). ``--size tiny`` uses the tiny test model.
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
from collections import Counter
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
    replicas: Counter = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_new_tokens: int, log: Path, ray_replicas: int | None = None,
                 replica_cpus: float = 1.0, threads: tuple[int | None, int | None] = (None, None)) -> subprocess.Popen:
    command = [sys.executable, "-m", "vllm_chatterbox.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-queue", "256", "--max-new-tokens", str(max_new_tokens), "--max-num-seqs", "32",
               "--kv-cache-gib", "1", "--max-model-len", "1024"]
    for flag, value in zip(("--t3-threads", "--s3gen-threads"), threads):
        if value is not None:
            command += [flag, str(value)]
    env = dict(os.environ)
    if ray_replicas is not None:
        command += ["--ray", "--replicas", str(ray_replicas), "--replica-cpus", str(replica_cpus)]
        env.setdefault("RAY_agent_register_timeout_ms", "300000")  # Ray's node agent starts slowly on a busy VM
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
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
            level.replicas[response.headers.get("x-chatterbox-replica", "-")] += 1
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


def run_mode(label: str, args, model_dir: Path, ray_replicas: int | None) -> list[Level]:
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{port}.log"
    print(f"\n{label}: starting the server (log: {log}) ...", flush=True)
    server = start_server(model_dir, port, args.max_new_tokens, log, ray_replicas, args.replica_cpus,
                          (args.t3_threads, args.s3gen_threads))
    url = f"http://127.0.0.1:{port}"
    levels = []
    try:
        for _ in range(ray_replicas or 1):  # warm-up: each replica's first request (routing is random)
            asyncio.run(run_level(url, 1, 1, 0, args.seed))
        for clients in args.clients:
            levels.append(asyncio.run(run_level(url, clients, args.requests, args.mean_pause, args.seed + clients)))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=180)
    return levels


def print_table(label: str, levels: list[Level], baseline: list[Level] | None) -> None:
    print(f"\n{label}\n")
    print("| clients | requests | errors | TTFA p50 s | TTFA p95 s | latency p50 s | latency p95 s "
          "| audio s | wall s | audio s per wall s | vs single server | responses per replica |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, level in enumerate(levels):
        done = len(level.latency)
        rate = level.audio_seconds / level.wall
        ratio = rate / (baseline[i].audio_seconds / baseline[i].wall) if baseline else 1.0
        spread = " ".join(str(n) for _, n in level.replicas.most_common())
        print(f"| {level.clients} | {done + level.errors} | {level.errors} | {percentile(level.ttfa, 50):.2f} | "
              f"{percentile(level.ttfa, 95):.2f} | {percentile(level.latency, 50):.2f} | "
              f"{percentile(level.latency, 95):.2f} | {level.audio_seconds:.1f} | {level.wall:.1f} | "
              f"{rate:.3f} | {ratio:.2f}x | {spread} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full", help="random-weight model size")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the cache's bench-<size>")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--mean-pause", type=float, default=2.0, help="mean seconds between a client's requests")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="speech tokens per request (2 s of audio)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray", type=int, nargs="*", default=None, metavar="REPLICAS",
                        help="also run serve --ray with these replica counts (e.g. 1 2), after the single server")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    parser.add_argument("--t3-threads", type=int, default=None,
                        help="every server's and replica's T3 engine threads (default: the server's own; a Ray "
                             "replica's own default is its --replica-cpus, which Ray gives it as OMP_NUM_THREADS)")
    parser.add_argument("--s3gen-threads", type=int, default=None, help="likewise for S3Gen's torch threads")
    args = parser.parse_args()

    model_dir = args.model_dir or cache_root() / f"bench-{args.size}"
    if not (model_dir / "conds.pt").exists():
        print(f"building the {args.size} random model in {model_dir} ...", flush=True)
        make_test_model(model_dir, size=args.size, seed=0)
    print(f"{args.size} random weights, CPU ({os.cpu_count()} cores), pcm streaming, {args.max_new_tokens} speech "
          f"tokens per request, {args.requests} requests per client, mean pause {args.mean_pause} s; ray replicas: "
          f"{args.ray or 'none'} at {args.replica_cpus:g} CPU each; threads T3 {args.t3_threads or 'default'}, S3Gen "
          f"{args.s3gen_threads or 'default'}", flush=True)
    baseline = run_mode("single server", args, model_dir, None)
    results = [(f"serve --ray --replicas {n}", run_mode(f"ray x{n}", args, model_dir, n)) for n in args.ray or []]
    print_table("single server (vllm-chatterbox serve): the baseline", baseline, None)
    for label, levels in results:
        print_table(label, levels, baseline)


if __name__ == "__main__":
    main()
