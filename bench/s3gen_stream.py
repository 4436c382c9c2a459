"""Streamed vs one-shot S3Gen at the released size: mel |delta|, waveform SNR, time to first chunk.

Not a test. Builds ``S3Gen`` at the released size with random weights (module init after
``torch.manual_seed(--seed)``: the S3Gen weights ``make_test_model(size="full", seed)`` writes;
``--variant turbo``: Turbo's meanflow S3Gen, 2 steps, no CFG) and a random built-in-like voice
(``demo_model.random_voice`` with ``--prompt-tokens`` prompt tokens, twice as many mel frames;
real voices have up to 250), then vocodes ``--tokens`` random speech tokens with one seed:

- one-shot: ``S3Gen.inference(..., seeds=[seed])`` (positional noise, as a stream draws it);
- streamed, per chunk schedule: tokens fed one at a time to ``vocode_stream_chunks`` (all of
  them already there, so this times S3Gen alone; T3's time to make the first chunk's tokens
  comes on top), the last call final.

Prints per schedule: pieces, the first piece's audio and the compute time of the call that made
it (S3Gen's time to first chunk), streamed vs one-shot mel max/mean |delta| over the whole
utterance and over the crossfaded frames at the joins, waveform SNR, and the total compute time
of the stream against the one-shot. The model's own schedule (``variants.py``) is marked.

    PYTHONPATH=. python bench/s3gen_stream.py --tokens 150 --threads 2
    PYTHONPATH=. python bench/s3gen_stream.py --variant turbo --prompt-tokens 250 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig, turbo_config
from vllm_chatterbox.demo_model import random_voice
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.s3gen.streaming import StreamSchedule, new_stream, vocode_stream_chunks
from vllm_chatterbox.variants import VARIANTS

SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 480
SCHEDULES = {
    "original": {
        "15/30/60": StreamSchedule(),
        "10/20/40": StreamSchedule(chunk_tokens=(10, 20, 40)),
        "25/50/100": StreamSchedule(chunk_tokens=(25, 50, 100)),
        "15/30/60, overlap 4 frames": StreamSchedule(overlap_frames=4),
        "15/30/60, context 25 tokens": StreamSchedule(context_tokens=25),
    },
    "turbo": {
        "8/16/32/64": StreamSchedule(chunk_tokens=(8, 16, 32, 64)),
        "10/20/40/80": StreamSchedule(chunk_tokens=(10, 20, 40, 80)),
        "12/24/48/96": StreamSchedule(chunk_tokens=(12, 24, 48, 96)),
        "15/30/60": StreamSchedule(),
        "10/20/40/80, overlap 4 frames": StreamSchedule(chunk_tokens=(10, 20, 40, 80), overlap_frames=4),
        "10/20/40/80, overlap 8 frames": StreamSchedule(chunk_tokens=(10, 20, 40, 80), overlap_frames=8),
        "10/30/60": StreamSchedule(chunk_tokens=(10, 30, 60)),
    },
}


def snr_db(signal: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / max(((signal - reference) ** 2).sum(), 1e-30)))


def stream(model: S3Gen, voice, tokens: list[int], schedule: StreamSchedule, seed: int, n_timesteps: int):
    state = new_stream(model, voice, n_timesteps=n_timesteps, seed=seed, schedule=schedule)
    pieces, first, total = [], None, np.zeros(2)
    for i, token in enumerate(tokens):
        start = np.array([time.perf_counter(), time.process_time()])
        piece, = vocode_stream_chunks(model, [(state, [token], i == len(tokens) - 1)])
        elapsed = np.array([time.perf_counter(), time.process_time()]) - start
        total += elapsed
        if len(piece):
            pieces.append(piece)
            if first is None:
                first = elapsed
    return state, pieces, first, total


def join_frames(pieces: list[np.ndarray], overlap: int) -> np.ndarray:
    """Mel frame indices crossfaded at the joins (each piece's first ``overlap`` frames after the first)."""
    starts = np.cumsum([len(p) // SAMPLES_PER_FRAME for p in pieces])[:-1]
    return np.unique(np.concatenate([np.arange(s, s + overlap) for s in starts])) if len(starts) else np.zeros(0, int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(SCHEDULES), default="original")
    parser.add_argument("--tokens", type=int, default=150, help="speech tokens (25 per second of audio)")
    parser.add_argument("--n-timesteps", type=int, default=None, help="default: the variant's (10; Turbo 2)")
    parser.add_argument("--prompt-tokens", type=int, default=100, help="the voice's S3Gen prompt tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="streams per schedule; times are the fastest (the machine may be shared)")
    parser.add_argument("--schedules", nargs="*", default=None, help="names from the variant's table (default: all)")
    args = parser.parse_args()
    table = SCHEDULES[args.variant]
    names = args.schedules or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown schedules {unknown}; choose from {list(table)}")
    model_schedule = VARIANTS["english" if args.variant == "original" else args.variant].stream_schedule
    n_timesteps = args.n_timesteps or (10 if args.variant == "original" else 2)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = ChatterboxConfig() if args.variant == "original" else turbo_config()
    model = S3Gen(config)
    gen = torch.Generator().manual_seed(args.seed)
    voice = random_voice(gen, ref_tokens=args.prompt_tokens)
    tokens = torch.randint(0, 6561, (args.tokens,), generator=gen).tolist()
    seed = args.seed + 1

    model.inference([tokens[:10]], [voice], n_timesteps=1, seeds=[seed])  # warm-up
    one_shot_wall, one_shot_cpu = np.inf, np.inf
    for _ in range(args.repeats):
        start = time.perf_counter(), time.process_time()
        mel, = model.tokens_to_mel([tokens], [voice], n_timesteps=n_timesteps, seeds=[seed])
        wav, = model.vocode([mel], seeds=[seed])
        one_shot_wall = min(one_shot_wall, time.perf_counter() - start[0])
        one_shot_cpu = min(one_shot_cpu, time.process_time() - start[1])
    wav = wav.numpy()
    audio_s = len(wav) / SAMPLE_RATE
    print(f"{args.variant} S3Gen ({'meanflow' if config.estimator.meanflow else 'CFM with CFG'}), random weights; "
          f"one-shot: {args.tokens} tokens -> {audio_s:.2f} s of audio in {one_shot_cpu:.1f} CPU s "
          f"({one_shot_wall:.1f} wall s; mel std {mel.std():.2f}); {args.threads} threads, "
          f"{n_timesteps} steps, voice prompt {voice.prompt_token.shape[1]} tokens; best of {args.repeats}")
    print("times: process CPU seconds (all threads), wall seconds in brackets; * = the model's schedule")
    print()
    print("| schedule | pieces | first piece audio s | S3Gen time to first chunk | mel max abs delta "
          "| mel mean abs delta | at joins max / mean | SNR dB | stream compute | vs one-shot (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        schedule = table[name]
        first_best, total_best = np.full(2, np.inf), np.full(2, np.inf)
        for _ in range(args.repeats):
            state, pieces, first, total = stream(model, voice, tokens, schedule, seed, n_timesteps)
            first_best, total_best = np.minimum(first_best, first), np.minimum(total_best, total)
        streamed = np.concatenate(pieces)
        assert streamed.shape == wav.shape
        delta = (state.mel - mel).abs()
        joins = delta[:, join_frames(pieces, schedule.overlap_frames)]
        mark = " *" if schedule == model_schedule else ""
        print(f"| {name}{mark} | {len(pieces)} | {len(pieces[0]) / SAMPLE_RATE:.2f} "
              f"| {first_best[1]:.2f} ({first_best[0]:.2f}) | {delta.max():.3f} | {delta.mean():.4f} "
              f"| {joins.max():.3f} / {joins.mean():.4f} | {snr_db(streamed, wav):.1f} "
              f"| {total_best[1]:.1f} ({total_best[0]:.1f}) | {total_best[1] / one_shot_cpu:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
