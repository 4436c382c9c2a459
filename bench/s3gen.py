"""S3Gen speed at the released size: the original's per-clip loop vs ours batched, fp32 and bf16.

Not a test. Loads the full-size random model (``make_test_model(size="full")``, built once
under ``--model-dir``, shared with the other benchmarks) and its built-in voice, draws
``--clips`` token lists of about ``--tokens`` tokens each (+-20 %), and times in one process:

* baseline: the original's algorithm as chatterbox 0.1.7 runs it, one clip per call in fp32:
  conformer encoder, 10 Euler steps of the CFM estimator over a batch of 2 rows (conditioned
  and CFG copy) covering prompt + generated frames, attention through
  ``scaled_dot_product_attention`` (the original's diffusers ``AttnProcessor2_0`` calls it
  too), then HiFT; PyTorch's default threads (all cores) unless ``--threads``. It runs our
  ``S3Gen.inference`` on one clip at a time, which computes that algorithm; on this 2-core CPU
  it measured 3.81 wall-s per audio-s against 3.85 for the original package itself on the same
  checkpoint, tokens and voice (issue 14, 2026-12-01).
* ours fp32: one batched ``S3Gen.inference`` call on all clips (length-grouped, padded, at most
  ``--max-batch-frames``: the GPU default). On a CPU ``S3Gen`` runs one clip per call by
  default, which is the baseline's row: batching measured slower there.
* ours bf16: the same call on the model loaded with ``dtype="bfloat16"``.

The three draw the same noise (one generator per clip, seeded alike), so the bf16 waveforms are
compared with the fp32 ones (SNR), and the first ``--quality-clips`` mels too (max / mean
|delta|, one extra call per precision). Timed: wall and process CPU seconds per second of audio
(CPU seconds are robust to other load on a shared machine; wall is what a user waits).

It also prints how close the baseline runs to this CPU's limit: a large square matmul's GFLOP/s
in fp32 and bf16 with the same threads, and the GFLOP/s the baseline reaches (its floating-point
work counted by ``torch.utils.flop_counter``, attention through the math kernel so it is counted).

    python bench/s3gen.py --clips 4 --tokens 100
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.model_files import load_safetensors
from vllm_chatterbox.s3gen.model import DEFAULT_MAX_BATCH_FRAMES, S3Gen, length_groups
from vllm_chatterbox.t3.engine import cache_root
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.voice.voice import Voice

SAMPLE_RATE = 24000


@dataclass(frozen=True)
class Timing:
    name: str
    wall_s: float
    cpu_s: float


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_bf16_support() -> str:
    """What this CPU offers for bf16 matmuls (PyTorch's CPU kernels are fast only with these)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(native) if native else "none (bf16 runs emulated, slower than fp32)"


def snr_db(reference: np.ndarray, x: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) /
                               np.sum((reference.astype(np.float64) - x) ** 2)))


def matmul_gflops(dtype: torch.dtype, size: int, seconds: float = 3.0) -> float:
    """What one large square matmul reaches on this CPU with the current threads (after a warm-up)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for timed_run in (False, True):
        start, count = time.perf_counter(), 0
        while count == 0 or time.perf_counter() - start < seconds / (1 if timed_run else 3):
            a @ b
            count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def counted_flops(fn) -> int:
    """Floating-point operations of ``fn`` (matmuls, convolutions, attention as matmuls)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return counter.get_total_flops()


def timed(name: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Timing(name, time.perf_counter() - wall, time.process_time() - cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=100, help="mean speech tokens per clip (25 tokens/s)")
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="compute threads of every mode (default: all cores, PyTorch's default)")
    parser.add_argument("--max-batch-frames", type=int, default=DEFAULT_MAX_BATCH_FRAMES)
    parser.add_argument("--quality-clips", type=int, default=1, help="clips whose bf16 mel is compared")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clips < 1 or args.tokens < 1 or not 0 <= args.quality_clips <= args.clips:
        parser.error("--clips and --tokens must be >= 1 and --quality-clips within [0, --clips]")

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "s3gen.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    cfg = ChatterboxConfig()
    state = {k: v for k, v in load_safetensors(model_dir / "s3gen.safetensors").items()
             if k.startswith(("flow.", "mel2wav."))}
    models = {"float32": S3Gen.from_file(state, cfg)}
    if not args.skip_bf16:
        models["bfloat16"] = S3Gen.from_file(state, cfg, dtype="bfloat16")
    del state
    voice = Voice.load(model_dir / "conds.pt")
    gen = torch.Generator().manual_seed(args.seed)
    lengths = [max(1, round(args.tokens * (0.8 + 0.4 * float(torch.rand((), generator=gen)))))
               for _ in range(args.clips)]
    clips = [torch.randint(0, cfg.flow.vocab_size, (n,), generator=gen) for n in lengths]
    voices = [voice] * args.clips
    prompt_tokens = voice.prompt_token.shape[1]
    groups = length_groups([2 * (prompt_tokens + n) for n in lengths], args.max_batch_frames)

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + i) for i in range(args.clips)]

    for model in models.values():  # warm-up: kernel selection, allocator
        model.inference([clips[0][:10]], [voice], n_timesteps=1)

    prompt_frames = voice.prompt_feat.shape[1]
    audio_s = sum(480 * (2 * (prompt_tokens + n) - prompt_frames) for n in lengths) / SAMPLE_RATE
    print(f"S3Gen full size (random weights), CPU, {torch.get_num_threads()} thread(s), {args.n_timesteps} CFM steps; "
          f"CPU bf16 support: {cpu_bf16_support()}")
    print(f"{args.clips} clips, tokens {lengths}, built-in voice ({prompt_tokens} prompt tokens / "
          f"{prompt_frames} frames), {audio_s:.1f} s of audio; batched as {len(groups)} group(s) "
          f"of sizes {[len(g) for g in groups]}")
    print("baseline = the original's algorithm one clip at a time in fp32 with SDPA attention and the threads "
          "above (S3Gen.inference per clip; see the module docstring)")
    print(f"{'mode':<52}{'wall s':>8}{'CPU s':>8}{'wall s/audio s':>16}{'speed-up (wall)':>17}", flush=True)

    def report(t: Timing, base: Timing) -> None:
        print(f"{t.name:<52}{t.wall_s:>8.2f}{t.cpu_s:>8.2f}{t.wall_s / audio_s:>16.3f}{base.wall_s / t.wall_s:>16.2f}x",
              flush=True)

    fp32 = models["float32"]
    base, single = timed("baseline: original algorithm, 1 clip/call, fp32", lambda: [
        fp32.inference([c], [voice], n_timesteps=args.n_timesteps, generators=[g])[0]
        for c, g in zip(clips, generators())])
    report(base, base)
    flops = sum(counted_flops(lambda c=c, g=g: fp32.inference([c], [voice], n_timesteps=args.n_timesteps, generators=[g]))
                for c, g in zip(clips, generators()))
    print(f"baseline work {flops / 1e12:.2f} TFLOP -> {flops / base.wall_s / 1e9:.0f} GFLOP/s; this CPU's square matmul "
          f"with {torch.get_num_threads()} thread(s): fp32 (2048) {matmul_gflops(torch.float32, 2048):.0f} GFLOP/s, "
          f"bf16 (512) {matmul_gflops(torch.bfloat16, 512):.1f} GFLOP/s", flush=True)
    outputs = {}
    for dtype, model in models.items():
        t, outputs[dtype] = timed(f"ours batched, {dtype}", lambda model=model: model.inference(
            clips, voices, n_timesteps=args.n_timesteps, generators=generators(), max_batch_frames=args.max_batch_frames))
        report(t, base)

    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(single, outputs["float32"]))
    print(f"max |ours fp32 batched - baseline| = {max_diff:.2e} (same noise); peak RSS {peak_rss_mib():.0f} MiB")

    if "bfloat16" in outputs:
        snrs = [snr_db(a, b) for a, b in zip(outputs["float32"], outputs["bfloat16"])]
        print(f"bf16 vs fp32, same tokens/voice/noise: wav SNR dB per clip {[round(s, 1) for s in snrs]} "
              f"(min {min(snrs):.1f})")
        for i in range(args.quality_clips):
            mels = {dtype: model.tokens_to_mel([clips[i]], [voice], n_timesteps=args.n_timesteps,
                                               generators=generators()[i:i + 1])[0]
                    for dtype, model in models.items()}
            delta = (mels["bfloat16"] - mels["float32"]).abs()
            print(f"clip {i}: mel max |delta| {float(delta.max()):.4f}, mean |delta| {float(delta.mean()):.5f} "
                  f"(fp32 mel range {float(mels['float32'].min()):.2f} .. {float(mels['float32'].max()):.2f})")


if __name__ == "__main__":
    main()
