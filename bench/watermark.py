"""Cost of the Perth watermark: marking and detection seconds per second of audio, ours side by
side with resemble-perth's own watermarker (the baseline) on the same audio and threads.

Not a test. The watermark's cost depends only on the audio's length and rate, not on the TTS
model that made it (one network for every Chatterbox model). The audio is by default the
full-size path's output: S3Gen at the released size (random weights, ``make_test_model(size=
"full")``, built once under ``~/.cache/vllm_chatterbox/bench-full``) vocoding ``--full-tokens``
random speech tokens with the built-in voice, its seconds per audio second printed for scale,
then repeated to each ``--seconds`` length; ``--source speech`` uses the shared espeak-ng clips
instead. ``--robustness`` adds detection confidences after the server's lossy encodings,
resampling, noise and cuts. Modes: one-shot marking (``apply_watermark``: whole up to 60 s, windows beyond),
detection, and stream marking (``StreamMarker`` fed in the streaming vocoder's piece sizes).

resemble-perth's watermarker needs torchaudio, which cannot load beside this project's torch,
so the baseline runs in another Python (``--perth-python``, e.g. the throwaway environment that
``scripts/record_perth_fixture.py`` describes) through a subprocess with the same thread count;
without one the baseline rows say so.

    PYTHONPATH=. python bench/watermark.py --seconds 10 60 --threads 2 --perth-python /tmp/perth-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vllm_chatterbox.t3.engine import cache_root
from vllm_chatterbox.watermark import StreamMarker, load_watermarker

SAMPLE_RATE = 24000
STREAM_PIECES = [15 * 960, 30 * 960]  # then 60 tokens a piece, as the streaming vocoder cuts them
STREAM_PIECE = 60 * 960
SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tiny" / "audio"

# Runs in resemble-perth's environment: argv = audio.npy threads repeats marked_out.npy
PERTH_TIMER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
import perth
watermarker = perth.PerthImplicitWatermarker()
audio, repeats = np.load(sys.argv[1]), int(sys.argv[3])
watermarker.get_watermark(watermarker.apply_watermark(audio[:48000], sample_rate=24000), 24000)  # warm-up
times = {"mark": [], "detect": []}
for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    marked = watermarker.apply_watermark(audio, sample_rate=24000)
    times["mark"].append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = time.perf_counter(), time.process_time()
    watermarker.get_watermark(marked, 24000)
    times["detect"].append((time.perf_counter() - wall, time.process_time() - cpu))
np.save(sys.argv[4], marked)
print(json.dumps({"times": times, "torch": torch.__version__}))
"""


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall s, CPU s) of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def stream_mark(watermarker, audio: np.ndarray) -> np.ndarray:
    marker = StreamMarker(watermarker, SAMPLE_RATE)
    out, start, index = [], 0, 0
    while start < audio.size:
        size = STREAM_PIECES[index] if index < len(STREAM_PIECES) else STREAM_PIECE
        out.append(marker.feed(audio[start:start + size]))
        start, index = start + size, index + 1
    out.append(marker.feed(audio[:0], final=True))
    return np.concatenate(out)


def full_size_audio(model_dir: Path, tokens: int, seed: int) -> tuple[np.ndarray, float]:
    """(S3Gen full-size output of random tokens, its wall seconds per audio second)."""
    from safetensors.torch import load_file as load_safetensors

    from vllm_chatterbox.config import ChatterboxConfig
    from vllm_chatterbox.demo_model import make_test_model
    from vllm_chatterbox.s3gen.model import S3Gen
    from vllm_chatterbox.voice.voice import Voice

    if not (model_dir / "s3gen.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    config = ChatterboxConfig()
    state = {k: v for k, v in load_safetensors(model_dir / "s3gen.safetensors").items()
             if k.startswith(("flow.", "mel2wav."))}
    s3gen = S3Gen.from_file(state, config)
    voice = Voice.load(model_dir / "conds.pt")
    speech = torch.randint(0, config.flow.vocab_size, (tokens,), generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    wav, = s3gen.inference([speech.tolist()], [voice], n_timesteps=10, seeds=[seed])
    return np.asarray(wav, dtype=np.float32), (time.perf_counter() - start) / (wav.size / SAMPLE_RATE)


def speech_audio() -> np.ndarray:
    import soundfile

    clips = [soundfile.read(str(SHARED_AUDIO / name), dtype="float32")[0]
             for name in ("builtin_voice_src_24k.wav", "voice2_24k.wav")]
    return np.concatenate([clips[0], np.zeros(2400, np.float32), clips[1], np.zeros(2400, np.float32)])


def run_perth(python: str, audio: np.ndarray, threads: int, repeats: int) -> tuple[dict | None, np.ndarray | None, str]:
    with tempfile.TemporaryDirectory() as directory:
        audio_path, marked_path = Path(directory) / "audio.npy", Path(directory) / "marked.npy"
        np.save(audio_path, audio)
        result = subprocess.run([python, "-c", PERTH_TIMER, str(audio_path), str(threads), str(repeats),
                                 str(marked_path)], capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            return None, None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        report = json.loads(result.stdout.strip().splitlines()[-1])
        return report, np.load(marked_path), report["torch"]


def degradations() -> dict[str, Callable]:
    """What a marked file may go through on its way, each: samples at 24 kHz -> (samples, rate)."""
    from vllm_chatterbox.voice.audio import resample_soxr_hq

    def encoded(response_format):
        def run(samples):
            from vllm_chatterbox.server.encoding import AudioEncoder
            from vllm_chatterbox.watermark.files import read_audio_file

            encoder = AudioEncoder(response_format)
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / f"audio.{response_format}"
                path.write_bytes(encoder.encode(samples) + encoder.finish())
                return read_audio_file(path)
        return run

    def noise(snr_db):
        def run(samples):
            power = float(np.mean(samples.astype(np.float64) ** 2)) / 10 ** (snr_db / 10)
            noisy = samples + np.random.default_rng(0).standard_normal(samples.size) * np.sqrt(power)
            return noisy.astype(np.float32), SAMPLE_RATE
        return run

    return {
        "none": lambda x: (x, SAMPLE_RATE),
        "mp3 (server default)": encoded("mp3"),
        "opus (server default)": encoded("opus"),
        "aac (server default)": encoded("aac"),
        "16-bit wav": lambda x: (np.round(np.clip(x, -1, 1) * 32767).astype(np.float32) / 32767, SAMPLE_RATE),
        "resampled to 16 kHz": lambda x: (resample_soxr_hq(x, SAMPLE_RATE, 16000), 16000),
        "resampled to 8 kHz": lambda x: (resample_soxr_hq(x, SAMPLE_RATE, 8000), 8000),
        "gain -12 dB": lambda x: (x * 0.25, SAMPLE_RATE),
        "white noise at 30 dB SNR": noise(30),
        "white noise at 20 dB SNR": noise(20),
        "first 1.05 s cut off": lambda x: (x[int(1.05 * SAMPLE_RATE):], SAMPLE_RATE),
        "5 % faster (resampled, pitch up)": lambda x: (resample_soxr_hq(x, 25200, SAMPLE_RATE), SAMPLE_RATE),
    }


def robustness(watermarker, audio: np.ndarray) -> None:
    marked = watermarker.mark(audio, SAMPLE_RATE)
    print(f"\nDetection after common transformations ({audio.size / SAMPLE_RATE:.1f} s; verdict 'marked' above "
          "0.5, the original's rounding):")
    print("| transformation | marked audio | unmarked audio |")
    print("|---|---:|---:|")
    for name, transform in degradations().items():
        scores = [watermarker.confidence(*transform(x)) for x in (marked, audio[:marked.size])]
        print(f"| {name} | {scores[0]:.4f} | {scores[1]:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="audio lengths to time")
    parser.add_argument("--source", choices=("full", "speech"), default="full")
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--full-tokens", type=int, default=250, help="speech tokens S3Gen vocodes (25 a second)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads on both sides (default: all cores, PyTorch's default)")
    parser.add_argument("--perth-python", default=os.environ.get("VLLM_CHATTERBOX_PERTH_PYTHON", "/tmp/perth-venv/bin/python"),
                        help="a Python with resemble-perth, torchaudio and librosa (the baseline)")
    parser.add_argument("--robustness", action="store_true",
                        help="also print detection confidences after lossy encodings, resampling, noise, ...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.source == "full":
        base, s3gen_per_s = full_size_audio(args.model_dir.expanduser(), args.full_tokens, args.seed)
        source = (f"S3Gen full size (random weights), {args.full_tokens} random tokens -> {base.size / SAMPLE_RATE:.1f} s; "
                  f"S3Gen took {s3gen_per_s:.2f} wall s per audio s (10 CFM steps)")
    else:
        base, s3gen_per_s = speech_audio(), None
        source = f"shared espeak-ng speech, {base.size / SAMPLE_RATE:.1f} s"
    watermarker = load_watermarker()
    have_perth = Path(args.perth_python).exists()
    print(f"Perth watermark cost, CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} "
          f"thread(s), median of {args.repeats}; ours: torch {torch.__version__}; audio: {source}, repeated to length")
    print(f"baseline: resemble-perth's PerthImplicitWatermarker via {args.perth_python}"
          + ("" if have_perth else " (NOT FOUND: baseline not run; pass --perth-python)"))
    print("| audio s | mode | wall s | CPU s | wall s per audio s | ours vs resemble-perth |")
    print("|---:|---|---:|---:|---:|---:|")
    for seconds in args.seconds:
        audio = np.resize(base, int(seconds * SAMPLE_RATE)).astype(np.float32)
        stream_mark(watermarker, audio[: 2 * SAMPLE_RATE])  # warm-up
        ours = {"mark": timed(lambda: watermarker.mark(audio, SAMPLE_RATE), args.repeats)}
        marked = watermarker.mark(audio, SAMPLE_RATE)
        ours["detect"] = timed(lambda: watermarker.confidence(marked, SAMPLE_RATE), args.repeats)
        ours["stream mark"] = timed(lambda: stream_mark(watermarker, audio), args.repeats)
        perth, perth_marked, note = (run_perth(args.perth_python, audio, args.threads, args.repeats) if have_perth
                                     else (None, None, "not run"))
        for mode, (wall, cpu) in ours.items():
            baseline = perth and perth["times"].get(mode)
            ratio = f"{statistics.median(w for w, _ in baseline) / wall:.2f}x" if baseline else "-"
            print(f"| {seconds:.0f} | ours: {mode} | {wall:.3f} | {cpu:.3f} | {wall / seconds:.4f} | {ratio} |")
        if perth is None:
            print(f"| {seconds:.0f} | resemble-perth | - | - | - | ({note}) |")
            continue
        for mode, times in perth["times"].items():
            wall, cpu = statistics.median(w for w, _ in times), statistics.median(c for _, c in times)
            print(f"| {seconds:.0f} | resemble-perth: {mode} (torch {note}) | {wall:.3f} | {cpu:.3f} | "
                  f"{wall / seconds:.4f} | 1.00x |")
        if perth_marked.shape == marked.shape:
            difference = float(np.abs(perth_marked - marked).max())
            print(f"|  | marked output, ours vs resemble-perth: max abs difference {difference:.2e} | | | | |")
    if s3gen_per_s is not None:
        print(f"For scale: S3Gen made this audio at {s3gen_per_s:.2f} wall s per audio s on the same threads.")
    print("'ours vs resemble-perth' is the baseline's wall time over ours: above 1 means ours is faster. Stream "
          "marking has no baseline (the original does not stream); compare it with ours: mark.")
    if args.robustness:
        robustness(watermarker, base)


if __name__ == "__main__":
    main()
