"""Streamed vs one-shot S3Gen at the released size: mel |delta|, waveform SNR, time to first chunk.

Not a test. Builds ``S3Gen(ChatterboxConfig())`` with random weights (module init after
``torch.manual_seed(--seed)``: the S3Gen weights ``make_test_model(size="full", seed)`` writes) and
a random built-in-like voice (``demo_model.random_voice``: 100 prompt tokens, 200 mel frames),
then vocodes ``--tokens`` random speech tokens with one seed:

- one-shot: ``S3Gen.inference(..., seeds=[seed])`` (positional noise, as a stream draws it);
- streamed, per chunk schedule: tokens fed one at a time to ``vocode_stream_chunks`` (all of
  them already there, so this times S3Gen alone; T3's time to make the first chunk's tokens
  comes on top), the last call final.

Prints per schedule: pieces, the first piece's audio and the compute time of the call that made
it (S3Gen's time to first chunk), streamed vs one-shot mel max/mean |delta| and waveform SNR,
and the total compute time of the stream against the one-shot.

    PYTHONPATH=. python bench/s3gen_stream.py --tokens 150 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.s3gen.model import S3Gen
from vllm_chatterbox.s3gen.streaming import StreamSchedule, new_stream, vocode_stream_chunks
from vllm_chatterbox.demo_model import random_voice

SAMPLE_RATE = 24000
SCHEDULES = {
    "15/30/60 (default)": StreamSchedule(),
    "10/20/40": StreamSchedule(chunk_tokens=(10, 20, 40)),
    "25/50/100": StreamSchedule(chunk_tokens=(25, 50, 100)),
    "15/30/60, overlap 4 frames": StreamSchedule(overlap_frames=4),
    "15/30/60, context 25 tokens": StreamSchedule(context_tokens=25),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=150, help="speech tokens (25 per second of audio)")
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedules", nargs="*", default=list(SCHEDULES), choices=list(SCHEDULES))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = S3Gen(ChatterboxConfig())
    gen = torch.Generator().manual_seed(args.seed)
    voice = random_voice(gen)
    tokens = torch.randint(0, 6561, (args.tokens,), generator=gen).tolist()
    seed = args.seed + 1

    model.inference([tokens[:10]], [voice], n_timesteps=1, seeds=[seed])  # warm-up
    start = time.perf_counter(), time.process_time()
    mel, = model.tokens_to_mel([tokens], [voice], n_timesteps=args.n_timesteps, seeds=[seed])
    wav, = model.vocode([mel], seeds=[seed])
    one_shot_wall, one_shot_cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    wav = wav.numpy()
    audio_s = len(wav) / SAMPLE_RATE
    print(f"one-shot: {args.tokens} tokens -> {audio_s:.2f} s of audio in {one_shot_cpu:.1f} CPU s "
          f"({one_shot_wall:.1f} wall s; mel std {mel.std():.2f}); {args.threads} threads, "
          f"{args.n_timesteps} CFM steps, voice prompt {voice.prompt_token.shape[1]} tokens")
    print("times: process CPU seconds (all threads), wall seconds in brackets")
    print()
    print("| schedule | pieces | first piece audio s | S3Gen time to first chunk | mel max abs delta "
          "| mel mean abs delta | SNR dB | stream compute | vs one-shot (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.schedules:
        state, pieces, first, total = stream(model, voice, tokens, SCHEDULES[name], seed, args.n_timesteps)
        streamed = np.concatenate(pieces)
        assert streamed.shape == wav.shape
        delta = (state.mel - mel).abs()
        print(f"| {name} | {len(pieces)} | {len(pieces[0]) / SAMPLE_RATE:.2f} | {first[1]:.1f} ({first[0]:.1f}) "
              f"| {delta.max():.3f} | {delta.mean():.3f} | {snr_db(streamed, wav):.1f} "
              f"| {total[1]:.1f} ({total[0]:.1f}) | {total[1] / one_shot_cpu:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
