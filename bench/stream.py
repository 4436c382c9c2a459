"""Streaming: time to first audio and real-time factor under concurrent streams, original or Turbo.

Not a test. Uses a random-weight model at the released size (``make_test_model(size="full")``,
fp32; ``--variant turbo``: the Turbo layout), created once under ``--model-dir`` (shared with the
other benchmarks: ``bench-full`` / ``bench-full-turbo`` in the package cache).

* baseline, in the same run: the one-shot latency of one utterance of ``--baseline-tokens``
  speech tokens (250 = 10 s of audio) through ``ChatterboxTTS.generate`` (T3, then S3Gen, all of it
  before the first sample can play);
* streams: at each ``--concurrency`` level, that many streams of the same utterance length
  arrive at Poisson times (mean gap ``--mean-gap`` s) and are consumed with ``astream``, with
  the model's piece schedule (``variants.py``) or ``--chunk-tokens``.

Per level: time to first audio (TTFA) p50/p95, total latency, real-time factor per stream (wall
seconds from request to last piece per second of audio: below 1 keeps up with playback), T3
tokens/s per stream, aggregate audio seconds per wall second, and underruns: a piece arriving
after the audio before it has finished playing, for a player that starts at the first piece.
Then where TTFA goes (p50 over the level's streams, from the stream vocoder's calls): T3's first
token (prefill), T3's first piece of tokens, the wait for the vocoder, the vocoder call that made
the first piece, and the hand-over. Beside them, measured just before the level with nothing
else running: T3 alone making the first piece's tokens (``generate_speech_tokens``) and the
vocoder call of a first piece alone; a ratio far above 1 means that side was starved (by the
other side or by other streams). Each stream speaks its own text (a numbered sentence before the
shared one), so only the voice's conditioning is shared in vLLM's prefix cache, as on a server
with one voice. Random weights rarely emit the stop token, so every request gets exactly
``--tokens`` tokens.

``--cpu-sharing alternate overlap`` runs every level once per mode on the same engine (switched
with ``ChatterboxTTS.cpu_sharing``; the same arrival times, texts of their own so the prefix
cache cannot favour the second) and prints each mode's tables, the ratios between the first
two, and how often and how long the engine held its steps (``t3/cpu_turns.py``).

    PYTHONPATH=. python bench/stream.py --variant turbo                 # 1/4/8 streams, issue 19's targets
    PYTHONPATH=. python bench/stream.py --variant turbo --cpu-sharing alternate overlap
    PYTHONPATH=. python bench/stream.py --concurrency 1 4 --tokens 100 --n-timesteps 4
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vllm_chatterbox.demo_model import make_test_model  # noqa: E402
from vllm_chatterbox.s3gen.streaming import StreamSchedule, new_stream, vocode_stream_chunks  # noqa: E402
from vllm_chatterbox.t3.engine import cache_root  # noqa: E402

logger = logging.getLogger("bench.stream")

SAMPLE_RATE = 24000
TEXT = ("The lighthouse keeper climbed the stairs for the last time that winter, and the sea below "
        "was as calm as anyone had ever seen it.")
# Stream i's chunks get seeds i * SEED_STRIDE + chunk, so a vocoder call's streams are known by seed.
SEED_STRIDE = 1000


@dataclass(frozen=True)
class VariantSetup:
    model_dir: str  # under the package cache
    make_variant: str  # make_test_model's variant
    concurrency: tuple[int, ...]
    n_timesteps: int
    # Targets: TTFA at 1 stream in seconds (None: none), TTFA / one-shot, TTFA p95 at `at` streams / TTFA at 1.
    ttfa_s: float | None
    ttfa_vs_one_shot: float
    p95_ratio: float
    at: int


SETUPS = {
    "original": VariantSetup("bench-full", "original", (1, 4, 8, 16), 10, None, 0.25, 2.0, 8),
    "turbo": VariantSetup("bench-full-turbo", "turbo", (1, 4, 8), 2, 2.5, 0.2, 3.0, 8),  # issue 19
}


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


class Timeline:
    """When each stream's tokens reached the stream vocoder, and the vocoder call that made its
    first piece (wraps the vocoder's ``push`` and its batched call, as the server's metrics do)."""

    def __init__(self, vocoder):
        self.reset()
        push, vocode = vocoder.push, vocoder._vocode

        def recording_push(state, tokens, final, sink):
            record = self.pushes[state.seed // SEED_STRIDE]
            record.append((time.perf_counter(), (record[-1][1] if record else 0) + len(tokens)))
            push(state, tokens, final, sink)

        def recording_vocode(s3gen, items, **options):
            fresh = [state for state, _, _ in items if state.pieces == 0]
            start = time.perf_counter()
            pieces = vocode(s3gen, items, **options)
            end = time.perf_counter()
            for state in fresh:
                if state.pieces and state.seed % SEED_STRIDE == 0:  # the stream's first chunk
                    self.first_piece.setdefault(state.seed // SEED_STRIDE, (start, end, len(items)))
            return pieces

        vocoder.push = recording_push
        vocoder._vocode = recording_vocode

    def reset(self) -> None:
        self.pushes: dict[int, list[tuple[float, int]]] = defaultdict(list)
        self.first_piece: dict[int, tuple[float, float, int]] = {}

    def breakdown(self, index: int, run: StreamRun, first_tokens: int) -> dict[str, float]:
        pushes = self.pushes[index]
        chunk_ready = next(t for t, total in pushes if total >= first_tokens)
        start, end, batch = self.first_piece[index]
        tokens = pushes[-1][1]
        return {
            "t3_first_token": pushes[0][0] - run.submitted,
            "t3_first_piece": chunk_ready - run.submitted,
            "vocoder_wait": start - chunk_ready,
            "first_piece_call": end - start,
            "batch": batch,
            "hand_over": run.arrivals[0] - end,
            "t3_tokens_per_s": (tokens - 1) / max(pushes[-1][0] - pushes[0][0], 1e-9),
        }


def text_for(level: int, index: int, run: int = 0) -> str:
    """A text of its own per stream, per run and per alone-measurement: vLLM's prefix cache shares only the voice."""
    return f"Request {run}-{level}-{index}. {TEXT}"


async def run_level(tts, concurrency: int, args, schedule: StreamSchedule,
                    rng: np.random.Generator, run_index: int) -> tuple[list[StreamRun], float]:
    gaps = rng.exponential(args.mean_gap, concurrency)
    gaps[0] = 0.0
    offsets = np.cumsum(gaps)
    start = time.perf_counter()

    async def one(index: int) -> StreamRun:
        await asyncio.sleep(float(offsets[index]))
        run = StreamRun(submitted=time.perf_counter())
        async for piece in tts.astream(text_for(concurrency, index, run_index), seed=index * SEED_STRIDE,
                                       max_new_tokens=args.tokens,
                                       n_timesteps=args.n_timesteps, max_chunk_tokens=args.max_chunk_tokens,
                                       schedule=schedule):
            run.arrivals.append(time.perf_counter())
            run.samples.append(piece.size)
        return run

    runs = await asyncio.gather(*(one(i) for i in range(concurrency)))
    return runs, time.perf_counter() - start


def alone(tts, schedule: StreamSchedule, n_timesteps: int, level: int, repeats: int = 2) -> tuple[float, float]:
    """(T3 making a first piece's tokens for a fresh text, the vocoder call of a first piece), each
    alone: best of ``repeats`` seconds."""
    first = schedule.chunk_tokens[0]
    tokens = torch.randint(0, 6561, (first,), generator=torch.Generator().manual_seed(0)).tolist()
    t3, s3gen = np.inf, np.inf
    for repeat in range(repeats):
        start = time.perf_counter()
        tts.generate_speech_tokens(text_for(-level, repeat), seed=repeat, max_new_tokens=first)
        t3 = min(t3, time.perf_counter() - start)
        state = new_stream(tts.s3gen, tts.builtin_voice, n_timesteps=n_timesteps, seed=1, schedule=schedule)
        start = time.perf_counter()
        vocode_stream_chunks(tts.s3gen, [(state, tokens, False)])
        s3gen = min(s3gen, time.perf_counter() - start)
    return t3, s3gen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(SETUPS), default="original")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the package cache's bench model")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="streams per level (default: original 1 4 8 16, turbo 1 4 8)")
    parser.add_argument("--tokens", type=int, default=250, help="speech tokens per utterance (25 per second)")
    parser.add_argument("--baseline-tokens", type=int, default=250,
                        help="speech tokens of the one-shot baseline utterance (250 = 10 s, the issues' targets)")
    parser.add_argument("--n-timesteps", type=int, default=None, help="S3Gen steps (default: the model's, 10 / 2)")
    parser.add_argument("--chunk-tokens", type=int, nargs="+", default=None,
                        help="the schedule's piece sizes in tokens (default: the model's schedule)")
    parser.add_argument("--mean-gap", type=float, default=0.5, help="mean seconds between arrivals")
    parser.add_argument("--max-chunk-tokens", type=int, default=150)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="S3Gen threads")
    parser.add_argument("--cpu-sharing", nargs="+", choices=("alternate", "overlap"), default=None,
                        help="run every level in each of these modes (default: the model's own mode only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    setup = SETUPS[args.variant]
    args.concurrency = args.concurrency or list(setup.concurrency)
    args.n_timesteps = args.n_timesteps or setup.n_timesteps
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from vllm_chatterbox.tts import ChatterboxTTS

    model_dir = (args.model_dir or cache_root() / setup.model_dir).expanduser()
    if not model_dir.is_dir():
        make_test_model(model_dir, size="full", seed=0, variant=setup.make_variant)
    options = {"max_num_seqs": max(args.concurrency)}
    if args.variant == "original":
        options["max_model_len"] = 150 + 34 + 2 + max(args.tokens, args.baseline_tokens) + 8
    tts = ChatterboxTTS.from_dir(model_dir, **options)
    modes = args.cpu_sharing or [tts.cpu_sharing]
    default_mode = tts.cpu_sharing
    schedule = tts.variant.stream_schedule
    if args.chunk_tokens:
        schedule = dataclasses.replace(schedule, chunk_tokens=tuple(args.chunk_tokens))
    timeline = Timeline(tts._stream_vocoder)
    hold = tts.t3_engine.cpu_hold
    rows: dict[str | None, list] = defaultdict(list)
    breakdowns: dict[str | None, list] = defaultdict(list)
    held: dict[str | None, list] = defaultdict(list)
    try:
        tts.generate("Warm up.", max_new_tokens=8, n_timesteps=args.n_timesteps)
        started = time.perf_counter()
        one_shot = tts.generate(TEXT, seed=0, max_new_tokens=args.baseline_tokens, n_timesteps=args.n_timesteps)[0]
        one_shot_latency = time.perf_counter() - started
        logger.info("one-shot: %.2f s of audio in %.1f s", one_shot.size / SAMPLE_RATE, one_shot_latency)
        run_index = 0
        for concurrency in args.concurrency:
            t3_alone, s3gen_alone = alone(tts, schedule, args.n_timesteps, concurrency)
            for mode in modes:
                if mode is not None:
                    tts.cpu_sharing = mode
                stats_before = hold.engine_stats() if hold is not None else (0, 0.0, 0)
                timeline.reset()
                run_index += 1
                rng = np.random.default_rng(concurrency)  # the same arrivals in every mode
                runs, wall = asyncio.run(run_level(tts, concurrency, args, schedule, rng, run_index))
                stats = hold.engine_stats() if hold is not None else (0, 0.0, 0)
                held[mode].append((concurrency, *(after - before for after, before in zip(stats, stats_before)), wall))
                ttfa = np.array([r.ttfa for r in runs])
                stalls = [r.underruns() for r in runs]
                rtf = np.array([r.latency / r.audio_seconds for r in runs])
                parts = [timeline.breakdown(i, r, schedule.chunk_tokens[0]) for i, r in enumerate(runs)]
                rows[mode].append((concurrency, np.percentile(ttfa, 50), np.percentile(ttfa, 95),
                                   np.mean([r.latency for r in runs]), np.median(rtf), rtf.max(),
                                   np.median([p["t3_tokens_per_s"] for p in parts]),
                                   sum(r.audio_seconds for r in runs) / wall,
                                   sum(c for c, _ in stalls), sum(s for _, s in stalls)))
                breakdowns[mode].append((concurrency, {k: float(np.median([p[k] for p in parts])) for k in parts[0]},
                                         float(np.median(ttfa)), t3_alone, s3gen_alone))
                logger.info("concurrency %d, cpu_sharing %s: done in %.1f s", concurrency, mode, wall)
    finally:
        tts.t3_engine.shutdown()

    print(f"\n{args.variant}: full-size random model ({model_dir}), fp32, {args.tokens} tokens "
          f"({args.tokens / 25:.0f} s) per utterance, n_timesteps {args.n_timesteps}, schedule: pieces after "
          f"{'/'.join(map(str, schedule.chunk_tokens))} tokens, {schedule.overlap_frames} overlap frames, context "
          f"{schedule.context_tokens} tokens; T3 engine threads {tts.t3_engine.threads}, {args.threads} S3Gen threads, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), cpu_sharing default {default_mode}, "
          f"measured {', '.join(map(str, modes))}; mean arrival gap {args.mean_gap} s; load average "
          f"{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    print(f"one-shot latency (baseline, {args.baseline_tokens} tokens = {args.baseline_tokens / 25:.0f} s of audio "
          f"through generate): {one_shot_latency:.1f} s")
    for mode in modes:
        print_mode(mode, rows[mode], breakdowns[mode], held[mode], one_shot_latency, schedule, setup)
    if len(modes) > 1:
        print_ratios(modes[0], modes[1], rows)


def print_mode(mode, rows, breakdowns, held, one_shot_latency: float, schedule: StreamSchedule,
               setup: VariantSetup) -> None:
    print(f"\n### cpu_sharing {mode}\n")
    print("| streams | TTFA p50 s | TTFA p95 s | TTFA p50 / one-shot | mean latency s | RTF per stream p50 (max) "
          "| T3 tokens/s per stream | audio s per wall s | underruns | stalled s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| one-shot (baseline) | {one_shot_latency:.1f} | | 1.000 | {one_shot_latency:.1f} | | | | | |")
    for concurrency, p50, p95, latency, rtf, rtf_max, tps, throughput, underruns, stalled in rows:
        print(f"| {concurrency} | {p50:.2f} | {p95:.2f} | {p50 / one_shot_latency:.3f} | {latency:.1f} "
              f"| {rtf:.2f} ({rtf_max:.2f}) | {tps:.1f} | {throughput:.3f} | {underruns} | {stalled:.1f} |")
    first_tokens = schedule.chunk_tokens[0]
    print("\nwhere TTFA goes (p50 over each level's streams, seconds; 'alone': measured just before the level, "
          "nothing else running)\n")
    print(f"| streams | T3 first token | T3 first {first_tokens} tokens | alone | vocoder wait "
          "| first-piece vocoder call | alone | streams in that call | hand-over | TTFA |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, part, ttfa, t3_alone, s3gen_alone in breakdowns:
        print(f"| {concurrency} | {part['t3_first_token']:.2f} | {part['t3_first_piece']:.2f} "
              f"| {t3_alone:.2f} ({part['t3_first_piece'] / t3_alone:.1f}x) | {part['vocoder_wait']:.2f} "
              f"| {part['first_piece_call']:.2f} | {s3gen_alone:.2f} ({part['first_piece_call'] / s3gen_alone:.1f}x) "
              f"| {part['batch']:.0f} | {part['hand_over']:.3f} | {ttfa:.2f} |")
    print("\nT3 engine steps held by S3Gen calls (t3/cpu_turns.py): "
          + "; ".join(f"{c} streams: {waits} steps waited {waited:.1f} s of {wall:.1f} s, {gave_up} bound(s) hit"
                      for c, waits, waited, gave_up, wall in held))
    first = rows[0]
    print()
    if first[0] == 1:
        if setup.ttfa_s is not None:
            print(f"TTFA at 1 stream: {first[1]:.2f} s (target <= {setup.ttfa_s} s: "
                  f"{'met' if first[1] <= setup.ttfa_s else 'NOT met'})")
        ratio = first[1] / one_shot_latency
        print(f"TTFA at 1 stream / one-shot latency: {ratio:.3f} (target <= {setup.ttfa_vs_one_shot}: "
              f"{'met' if ratio <= setup.ttfa_vs_one_shot else 'NOT met'})")
    for concurrency, _, p95, *_ in rows[1:]:
        target = (f" (target <= {setup.p95_ratio}x: {'met' if p95 / first[1] <= setup.p95_ratio else 'NOT met'})"
                  if concurrency == setup.at and first[0] == 1 else "")
        print(f"TTFA p95 at {concurrency} / TTFA p50 at {first[0]}: {p95 / first[1]:.2f}x{target}")


def print_ratios(mode: str, baseline: str, rows: dict) -> None:
    print(f"\n### {mode} / {baseline} (below 1: {mode} is faster; audio s per wall s: above 1 is better)\n")
    print("| streams | TTFA p50 | TTFA p95 | mean latency | RTF per stream p50 | T3 tokens/s per stream "
          "| audio s per wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for ours, base in zip(rows[mode], rows[baseline]):
        print(f"| {ours[0]} | {ours[1] / base[1]:.2f} | {ours[2] / base[2]:.2f} | {ours[3] / base[3]:.2f} "
              f"| {ours[4] / base[4]:.2f} | {ours[6] / base[6]:.2f} | {ours[7] / base[7]:.2f} |")

if __name__ == "__main__":
    main()
