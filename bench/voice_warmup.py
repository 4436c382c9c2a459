"""A new voice's first request, Turbo: cold against after ``ChatterboxTTS.warm_voice``.

Not a test. The full-size random Turbo checkpoint (``make_test_model(size="full")``, fp32, made
once under ``--model-dir``), one engine. Each rep clones four voices never used before from
synthetic ``--reference-seconds`` references (a 10 s reference gives 250 conditioning tokens, the
most a 10 s clip gives Turbo's T3 and all of S3Gen's prompt) and measures, alternating:

* T3's first token of the voice's first request (``generate_speech_tokens``, one token), with
  nothing cached (baseline) and after ``warm_voice``;
* time to first audio of the voice's first ``stream`` (the stream is closed after its first piece),
  with nothing cached (baseline) and after ``warm_voice``.

``warm_voice``'s own time is printed beside them: it is spent when the voice is made (the server
does it after answering the upload), not in front of a request. Prints median [min..max] and
warm / cold.

    PYTHONPATH=. python bench/voice_warmup.py --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from vllm_chatterbox.demo_model import make_test_model  # noqa: E402
from vllm_chatterbox.t3.engine import cache_root  # noqa: E402

SAMPLE_RATE = 24000
TEXT = "Thanks for calling. How can I help you today?"


def reference(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A voiced-sounding test signal (random weights make no use of real speech)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * noise).astype(np.float32)


def first_token_s(tts, voice) -> float:
    start = time.perf_counter()
    tts.generate_speech_tokens(TEXT, voice, max_new_tokens=1, seed=0)
    return time.perf_counter() - start


def first_audio_s(tts, voice) -> float:
    start = time.perf_counter()
    pieces = tts.stream(TEXT, voice, seed=0, max_new_tokens=60, watermark=False)
    try:
        next(pieces)
        return time.perf_counter() - start
    finally:
        pieces.close()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}..{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full-turbo")
    parser.add_argument("--reference-seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "t3_turbo_v1.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0, variant="turbo")

    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(model_dir)
    try:
        first_audio_s(tts, None)  # start the stream vocoder and the engine's first steps
        rows = {name: [] for name in ("token cold", "token warm", "audio cold", "audio warm", "warm_voice")}
        cached = 0
        for rep in range(args.reps):
            voices = [tts.voice_from_audio(reference(args.reference_seconds, 110.0 + 37 * (4 * rep + i), rep * 4 + i),
                                           SAMPLE_RATE) for i in range(4)]
            for measure, (cold, warm) in ((first_token_s, voices[:2]), (first_audio_s, voices[2:])):
                kind = "token" if measure is first_token_s else "audio"
                rows[f"{kind} cold"].append(measure(tts, cold))
                start = time.perf_counter()
                cached = tts.warm_voice(warm)
                rows["warm_voice"].append(time.perf_counter() - start)
                rows[f"{kind} warm"].append(measure(tts, warm))
        load = os.getloadavg()[0]
    finally:
        tts.close()

    prompt = voices[0].cond_prompt_speech_tokens.shape[1]
    print(f"Turbo, full-size random weights, fp32, CPU, {os.cpu_count()} CPUs; references of "
          f"{args.reference_seconds:g} s: {prompt} conditioning tokens, {cached} prompt rows cached by warm_voice; "
          f"{args.reps} reps; load average {load:.1f} at the end")
    print()
    print("| a new voice's first request | cold s (baseline) | after warm_voice s | warm / cold |")
    print("|---|---:|---:|---:|")
    for kind, label in (("token", "T3 first token"), ("audio", "stream: time to first audio")):
        cold, warm = rows[f"{kind} cold"], rows[f"{kind} warm"]
        print(f"| {label} | {summary(cold)} | {summary(warm)} | "
              f"{statistics.median(warm) / statistics.median(cold):.2f} |")
    print(f"| warm_voice itself (at voice creation) | | {summary(rows['warm_voice'])} | |")


if __name__ == "__main__":
    main()
