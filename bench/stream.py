"""Streaming: time to first audio and real-time factor under concurrent streams.

Not a test. Uses a random-weight model at the released size (``make_test_model(size="full")``,
fp32), created once under ``--model-dir`` (shared with the other benchmarks).

* baseline, in the same run: the one-shot latency of one utterance of ``--baseline-tokens``
  speech tokens (250 = 10 s of audio) through ``ChatterboxTTS.generate`` (T3, then S3Gen, all of it
  before the first sample can play);
* streams: at each ``--concurrency`` level, that many streams of the same utterance length
  arrive at Poisson times (mean gap ``--mean-gap`` s) and are consumed with ``astream``.

Per level: time to first audio (TTFA) p50/p95, total latency, aggregate audio seconds per wall
second, and underruns: a piece arriving after the audio before it has finished playing, for a
player that starts at the first piece. Random weights rarely emit the stop token, so every
request gets exactly ``--tokens`` tokens (``max_new_tokens``).

    python bench/stream.py                                   # from the repository root
    python bench/stream.py --concurrency 1 4 --tokens 100 --n-timesteps 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vllm_chatterbox.t3.engine import cache_root  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model  # noqa: E402

logger = logging.getLogger("bench.stream")

SAMPLE_RATE = 24000
TEXT = ("The lighthouse keeper climbed the stairs for the last time that winter, and the sea below "
        "was as calm as anyone had ever seen it.")


@dataclass
class StreamRun:
    submitted: float
    arrivals: list[float] = field(default_factory=list)  # wall time of each piece
    samples: list[int] = field(default_factory=list)

    @property
    def ttfa(self) -> float:
        return self.arrivals[0] - self.submitted

    @property
    def latency(self) -> float:
        return self.arrivals[-1] - self.submitted

    @property
    def audio_seconds(self) -> float:
        return sum(self.samples) / SAMPLE_RATE

    def underruns(self) -> tuple[int, float]:
        """(count, seconds of silence) for a player that starts at the first piece."""
        count, stalled, play_end = 0, 0.0, self.arrivals[0]
        for arrival, samples in zip(self.arrivals, self.samples):
            if arrival > play_end + 1e-3:
                count += 1
                stalled += arrival - play_end
            play_end = max(play_end, arrival) + samples / SAMPLE_RATE
        return count, stalled


async def run_level(tts, concurrency: int, args, rng: np.random.Generator) -> tuple[list[StreamRun], float]:
    gaps = rng.exponential(args.mean_gap, concurrency)
    gaps[0] = 0.0
    offsets = np.cumsum(gaps)
    start = time.perf_counter()

    async def one(index: int) -> StreamRun:
        await asyncio.sleep(float(offsets[index]))
        run = StreamRun(submitted=time.perf_counter())
        async for piece in tts.astream(TEXT, seed=index, max_new_tokens=args.tokens, n_timesteps=args.n_timesteps,
                                       max_chunk_tokens=args.max_chunk_tokens):
            run.arrivals.append(time.perf_counter())
            run.samples.append(piece.size)
        return run

    runs = await asyncio.gather(*(one(i) for i in range(concurrency)))
    return runs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=250, help="speech tokens per utterance (25 per second)")
    parser.add_argument("--baseline-tokens", type=int, default=250,
                        help="speech tokens of the one-shot baseline utterance (250 = 10 s, the issue's target)")
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--mean-gap", type=float, default=0.5, help="mean seconds between arrivals")
    parser.add_argument("--max-chunk-tokens", type=int, default=150)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="S3Gen threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    from vllm_chatterbox.tts import ChatterboxTTS

    model_dir = args.model_dir.expanduser()
    if not (model_dir / "t3_cfg.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    tts = ChatterboxTTS.from_dir(model_dir, max_num_seqs=max(args.concurrency), max_model_len=150 + 34 + 2 + max(args.tokens, args.baseline_tokens) + 8)
    try:
        tts.generate("Warm up.", max_new_tokens=8, n_timesteps=args.n_timesteps)
        started = time.perf_counter()
        one_shot = tts.generate(TEXT, seed=0, max_new_tokens=args.baseline_tokens, n_timesteps=args.n_timesteps)[0]
        one_shot_latency = time.perf_counter() - started
        logger.info("one-shot: %.2f s of audio in %.1f s", one_shot.size / SAMPLE_RATE, one_shot_latency)
        rng = np.random.default_rng(0)
        rows = []
        for concurrency in args.concurrency:
            runs, wall = asyncio.run(run_level(tts, concurrency, args, rng))
            ttfa = np.array([r.ttfa for r in runs])
            stalls = [r.underruns() for r in runs]
            rows.append((concurrency, np.percentile(ttfa, 50), np.percentile(ttfa, 95),
                         np.mean([r.latency for r in runs]), sum(r.audio_seconds for r in runs) / wall,
                         sum(c for c, _ in stalls), sum(s for _, s in stalls)))
            logger.info("concurrency %d done in %.1f s", concurrency, wall)
    finally:
        tts.t3_engine.shutdown()

    print(f"\nfull-size random model, fp32, {args.tokens} tokens ({args.tokens / 25:.0f} s) per utterance, "
          f"n_timesteps {args.n_timesteps}, {args.threads} S3Gen threads, mean arrival gap {args.mean_gap} s")
    print(f"one-shot latency (baseline, {args.baseline_tokens} tokens = {args.baseline_tokens / 25:.0f} s of audio "
          f"through generate): {one_shot_latency:.1f} s\n")
    print("| streams | TTFA p50 s | TTFA p95 s | TTFA p50 / one-shot | mean latency s | audio s per wall s | underruns | stalled s |")
    print("|---|---|---|---|---|---|---|---|")
    for concurrency, p50, p95, latency, throughput, underruns, stalled in rows:
        print(f"| {concurrency} | {p50:.2f} | {p95:.2f} | {p50 / one_shot_latency:.3f} | {latency:.1f} | "
              f"{throughput:.3f} | {underruns} | {stalled:.1f} |")
    first = rows[0]
    for concurrency, _, p95, *_ in rows[1:]:
        print(f"TTFA p95 at {concurrency} / TTFA p50 at {first[0]}: {p95 / first[1]:.2f}x")


if __name__ == "__main__":
    main()
