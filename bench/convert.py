"""Voice conversion speed at the released size: the original's algorithm vs ours, one at a time and batched.

Not a test. Loads S3Gen and the voice networks of the full-size random model
(``make_test_model(size="full")``, built once under ``--model-dir``, shared with the other
benchmarks; no T3 engine) and converts ``--sources`` speech-like sources of about ``--seconds``
each (harmonic syllables with word gaps and sentence pauses, made here, so the numbers do not
depend on any file) into the built-in voice. Timed in one process, all with the same seeds:

* baseline: the original's ``ChatterboxVC.generate`` algorithm: one source at a time, the whole
  source through the S3 tokenizer at once, then one S3Gen call (10 CFM steps, fp32) on all its
  tokens; no watermark on either side. Sources are kept at most 30 s, where this is exactly
  what ours computes (the audio is compared).
* ours, one at a time: ``VoiceConverter.convert`` per source, S3Gen one clip per call.
* ours, batched: one ``convert`` call on the list, S3Gen in length-grouped padded batches of at
  most ``--max-batch-frames`` (the GPU default; on a CPU the converter's default is the
  one-at-a-time row, where batching measured slower for S3Gen, see bench/s3gen.py).

Reported: conversions per second, audio seconds per wall second (1 / real-time factor) and the
real-time factor (wall s per audio s), with ratios to the baseline. Then the S3 tokenizer's cost
on long sources (``--long-seconds``: cut into pieces of at most 30 s at pauses and tokenized
piece by piece, as ``convert`` does), per second of audio and against S3Gen's measured cost.

    PYTHONPATH=. python bench/convert.py --sources 4 --seconds 8
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from vllm_chatterbox.config import cache_root
from vllm_chatterbox.conversion import VoiceConverter
from vllm_chatterbox.conversion.source import MAX_PIECE_SECONDS, load_source, plan_pieces
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.s3gen.model import DEFAULT_MAX_BATCH_FRAMES

SOURCE_RATE = 24000


def speech_like(seconds: float, rng: np.random.Generator, rate: int = SOURCE_RATE) -> np.ndarray:
    """Syllables (harmonic tones, 120-220 Hz, 150-300 ms) in words separated by 60 ms gaps and
    sentences of 2-5 s separated by 0.3-0.8 s pauses, under noise 60 dB down."""
    parts, total = [], 0
    while total < seconds * rate:
        sentence = rng.uniform(2.0, 5.0) * rate
        length = 0
        while length < sentence:
            for _ in range(rng.integers(1, 4)):
                n = int(rng.uniform(0.15, 0.3) * rate)
                t = np.arange(n) / rate
                f0 = rng.uniform(120, 220)
                tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
                parts.append(0.2 * np.hanning(n) * tone)
                length += n
            parts.append(np.zeros(int(0.06 * rate)))
            length += int(0.06 * rate)
        parts.append(np.zeros(int(rng.uniform(0.3, 0.8) * rate)))
        total += length + parts[-1].size
    wav = np.concatenate(parts)[: int(seconds * rate)]
    return (wav + 2e-4 * rng.standard_normal(wav.size)).astype(np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="mean source length (+-25 %%, at most 30 s)")
    parser.add_argument("--long-seconds", type=float, nargs="*", default=[60.0, 300.0],
                        help="long sources whose S3 tokenizer cost is measured")
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="compute threads of every mode (default: all cores, PyTorch's default)")
    parser.add_argument("--max-batch-frames", type=int, default=DEFAULT_MAX_BATCH_FRAMES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all modes; the fastest round counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.sources < 1 or args.repeats < 1 or not 1.0 <= args.seconds <= MAX_PIECE_SECONDS / 1.25:
        parser.error(f"--sources and --repeats must be >= 1 and --seconds within [1, {MAX_PIECE_SECONDS / 1.25:g}]")

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "s3gen.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    converter = VoiceConverter.from_dir(model_dir, device=args.device)
    s3gen, tokenizer, voice = converter.s3gen, converter.voice_builder.tokenizer, converter.builtin_voice
    rng = np.random.default_rng(args.seed)
    sources = [speech_like(args.seconds * rng.uniform(0.75, 1.25), rng) for _ in range(args.sources)]
    seeds = [args.seed + i for i in range(args.sources)]
    steps = args.n_timesteps

    def baseline_one(wav: np.ndarray, seed: int, n_timesteps: int = steps) -> np.ndarray:
        wav16 = load_source(wav, SOURCE_RATE)
        tokens, lengths = tokenizer([torch.from_numpy(wav16)])
        return s3gen.inference([tokens[0, :int(lengths[0])]], [voice], n_timesteps=n_timesteps, seeds=[seed],
                               max_batch_frames=1)[0]

    # Warm-up on every source's shapes (kernel selection and allocator caches are per shape, and
    # the first mode timed would pay for them).
    for wav in sources:
        baseline_one(wav, 0, n_timesteps=1)

    def ours(cap: int, batched: bool) -> list[np.ndarray]:
        converter.max_batch_frames = cap
        if batched:
            return converter.convert(sources, sample_rate=SOURCE_RATE, seed=seeds, n_timesteps=steps, progress=False)
        return [converter.convert(s, sample_rate=SOURCE_RATE, seed=seed, n_timesteps=steps, progress=False)
                for s, seed in zip(sources, seeds)]

    source_s = sum(s.size for s in sources) / SOURCE_RATE
    print(f"voice conversion, random-weight model {model_dir}, device {args.device}, {torch.get_num_threads()} thread(s), "
          f"{steps} CFM steps, fp32, built-in voice ({voice.prompt_token.shape[1]} prompt tokens)")
    print(f"{args.sources} sources of {[round(s.size / SOURCE_RATE, 1) for s in sources]} s ({source_s:.1f} s), "
          f"24 kHz arrays; batched cap {args.max_batch_frames} frames; fastest of {args.repeats} round(s), "
          "modes taking turns")
    print("baseline = the original's ChatterboxVC algorithm: one source at a time, whole source tokenized at once, "
          "one S3Gen call per source (see the module docstring)")
    print(f"{'mode':<44}{'wall s':>8}{'CPU s':>8}{'conv/s':>9}{'audio s/s':>11}{'RTF':>8}{'vs baseline':>13}",
          flush=True)

    runs = [("baseline: original algorithm", lambda: [baseline_one(s, seed) for s, seed in zip(sources, seeds)]),
            ("ours, one at a time", lambda: ours(1, batched=False)),
            ("ours, batched", lambda: ours(args.max_batch_frames, batched=True))]
    rows = {}  # name -> (waveforms, wall, cpu): the fastest of the rounds
    for _ in range(args.repeats):  # modes take turns, so load on a shared machine hits all of them
        for name, fn in runs:
            wavs, wall, cpu = timed(fn)
            if name not in rows or wall < rows[name][1]:
                rows[name] = (wavs, wall, cpu)
    base_wall = rows["baseline: original algorithm"][1]
    for name, _ in runs:
        wavs, wall, cpu = rows[name]
        audio_s = sum(w.size for w in wavs) / s3gen.config.hift.sampling_rate
        print(f"{name:<44}{wall:>8.2f}{cpu:>8.2f}{args.sources / wall:>9.3f}{audio_s / wall:>11.3f}"
              f"{wall / audio_s:>8.2f}{base_wall / wall:>12.2f}x", flush=True)
    baseline = rows["baseline: original algorithm"][0]
    for name in ("ours, one at a time", "ours, batched"):
        diff = max(float(np.abs(a - b).max()) for a, b in zip(baseline, rows[name][0]))
        print(f"max |{name} - baseline| = {diff:.2e} (same tokens, voice and seeds)")
    conversion_rtf = rows["ours, one at a time"][1] / (sum(w.size for w in baseline) / s3gen.config.hift.sampling_rate)

    print(f"\nS3 tokenizer on long sources (pieces of at most {MAX_PIECE_SECONDS:g} s cut at pauses, "
          "tokenized one by one as convert does):")
    print(f"{'source s':>9}{'pieces':>8}{'cut s':>8}{'tokenize s':>12}{'tok s/audio s':>15}{'share of conversion':>21}")
    for seconds in args.long_seconds:
        wav = speech_like(seconds, rng)
        wav16 = load_source(wav, SOURCE_RATE)
        pieces, cut_s, _ = timed(lambda: plan_pieces(wav16))
        _, tok_s, _ = timed(lambda: [converter._piece_tokens(wav16, p) for p in pieces])
        per_s = tok_s / seconds
        print(f"{seconds:>9.0f}{len(pieces):>8}{cut_s:>8.3f}{tok_s:>12.2f}{per_s:>15.4f}"
              f"{per_s / conversion_rtf:>20.1%}", flush=True)
    print(f"(share: tokenizer wall s per audio s / the one-at-a-time conversion's {conversion_rtf:.2f} wall s per "
          f"audio s above, tokenizer included); peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
