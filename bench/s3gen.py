"""S3Gen throughput at the released size: one clip at a time vs one batched call.

Not a test. Builds ``S3Gen(ChatterboxConfig())`` with random (module-init) weights, a random
built-in-like voice (150 prompt tokens, 300 prompt mel frames) and ``--clips`` token lists of
about ``--tokens`` tokens each (+-20 %), then times ``S3Gen.inference`` on CPU in fp32 both ways
in one process and prints seconds of compute (process CPU time, robust to other load on a shared
machine; wall time alongside) per second of audio, the ratio and peak memory.

    PYTHONPATH=. python bench/s3gen.py --clips 8 --tokens 100 --n-timesteps 10 --threads 1
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.s3gen.model import DEFAULT_MAX_BATCH_FRAMES, S3Gen, length_groups
from vllm_chatterbox.voice.voice import Voice

SAMPLE_RATE = 24000


def random_voice(cfg: ChatterboxConfig, prompt_tokens: int, gen: torch.Generator) -> Voice:
    return Voice(
        speaker_emb=torch.nn.functional.normalize(torch.randn(1, cfg.t3.speaker_embed_size, generator=gen), dim=1),
        cond_prompt_speech_tokens=torch.randint(0, cfg.flow.vocab_size, (1, prompt_tokens), generator=gen),
        exaggeration=0.5,
        prompt_token=torch.randint(0, cfg.flow.vocab_size, (1, prompt_tokens), generator=gen),
        # Log-mel-like values: a real 24 kHz log-mel sits around -11 .. 2.
        prompt_feat=torch.randn(1, 2 * prompt_tokens, cfg.flow.output_size, generator=gen) * 2 - 5,
        embedding=torch.randn(1, cfg.flow.spk_embed_dim, generator=gen),
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=100, help="mean speech tokens per clip (25 tokens/s)")
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=150)
    parser.add_argument("--max-batch-frames", type=int, default=DEFAULT_MAX_BATCH_FRAMES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = ChatterboxConfig()
    model = S3Gen(cfg)
    gen = torch.Generator().manual_seed(args.seed)
    voice = random_voice(cfg, args.prompt_tokens, gen)
    lengths = [max(1, round(args.tokens * (0.8 + 0.4 * float(torch.rand((), generator=gen)))))
               for _ in range(args.clips)]
    clips = [torch.randint(0, cfg.flow.vocab_size, (n,), generator=gen) for n in lengths]
    voices = [voice] * args.clips
    frames = [2 * (args.prompt_tokens + n) for n in lengths]
    groups = length_groups(frames, args.max_batch_frames)

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + i) for i in range(args.clips)]

    model.inference([clips[0][:10]], [voice], n_timesteps=1)  # warm-up: kernel selection, allocator
    rss_start = peak_rss_mib()

    wall, cpu = time.perf_counter(), time.process_time()
    single = [model.inference([c], [voice], n_timesteps=args.n_timesteps, generators=[g])[0]
              for c, g in zip(clips, generators())]
    single_wall, single_s = time.perf_counter() - wall, time.process_time() - cpu
    rss_single = peak_rss_mib()

    wall, cpu = time.perf_counter(), time.process_time()
    batched = model.inference(clips, voices, n_timesteps=args.n_timesteps, generators=generators(),
                              max_batch_frames=args.max_batch_frames)
    batched_wall, batched_s = time.perf_counter() - wall, time.process_time() - cpu
    rss_batched = peak_rss_mib()

    audio_s = sum(len(w) for w in single) / SAMPLE_RATE
    max_diff = max(float(abs(a - b).max()) for a, b in zip(single, batched))
    print(f"S3Gen full size, CPU fp32, {torch.get_num_threads()} thread(s), {args.n_timesteps} CFM steps")
    print(f"{args.clips} clips, tokens {lengths}, prompt {args.prompt_tokens} tokens / "
          f"{2 * args.prompt_tokens} frames, {audio_s:.1f} s of audio")
    print(f"batched as {len(groups)} group(s) of sizes {[len(g) for g in groups]} "
          f"(max_batch_frames {args.max_batch_frames})")
    print(f"{'mode':<14}{'CPU s':>9}{'CPU s / s audio':>17}{'wall s':>9}{'peak RSS MiB':>14}")
    print(f"{'one-at-a-time':<14}{single_s:>9.2f}{single_s / audio_s:>17.3f}{single_wall:>9.2f}{rss_single:>14.0f}")
    print(f"{'batched':<14}{batched_s:>9.2f}{batched_s / audio_s:>17.3f}{batched_wall:>9.2f}{rss_batched:>14.0f}")
    print(f"speed-up batched vs one-at-a-time (CPU s): {single_s / batched_s:.2f}x; peak RSS before runs "
          f"{rss_start:.0f} MiB; max |batched - single| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
