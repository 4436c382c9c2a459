"""Cost and accuracy of the server's ``speed`` (pitch-preserving time stretching, FFmpeg's
atempo through PyAV, ``vllm_chatterbox/server/speed.py``): for each speed, the stretch's
seconds per audio second, its duration error before the final pad/trim (atempo's own) and
after (what the server sends), and the pitch of a tone before and after. Baseline, side by side
on the same audio: the server's mp3 encoding of it (work every mp3 request already does).

Not a test. The audio: the shared espeak-ng speech clips (24 kHz), repeated to ``--seconds``,
fed in ``--pieces`` pieces as a stream arrives; the pitch check uses a 330 Hz tone.

    PYTHONPATH=. python bench/speed.py --seconds 10 --pieces 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile

from vllm_chatterbox.server.encoding import SAMPLE_RATE, AudioEncoder
from vllm_chatterbox.server.speed import TempoChanger

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tiny" / "audio"
SPEEDS = (0.25, 0.5, 0.75, 1.25, 1.5, 2.0, 3.0, 4.0)


def speech_audio(seconds: float) -> np.ndarray:
    clips = [soundfile.read(path, dtype="float32")[0] for path in sorted(SHARED_AUDIO.glob("*_24k.wav"))]
    base = np.concatenate(clips)
    return np.tile(base, int(np.ceil(seconds * SAMPLE_RATE / base.size)))[:int(seconds * SAMPLE_RATE)]


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def stretch(audio: np.ndarray, speed: float, pieces: int) -> tuple[np.ndarray, int]:
    """The changed audio and atempo's own length (before the final pad/trim)."""
    changer = TempoChanger(speed)
    out = [changer.feed(piece) for piece in np.array_split(audio, pieces)]
    out.append(changer.finish())
    return np.concatenate(out), changer.atempo_samples


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * SAMPLE_RATE / samples.size)


def mp3(audio: np.ndarray, pieces: int) -> bytes:
    encoder = AudioEncoder("mp3")
    return b"".join([*(encoder.encode(piece) for piece in np.array_split(audio, pieces)), encoder.finish()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pieces", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = speech_audio(args.seconds)
    t = np.arange(int(2 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    print(f"settings: {args.seconds:g} s of speech in {args.pieces} pieces, best of {args.repeats}; "
          f"tone 330 Hz, 2 s")
    baseline = timed(lambda: mp3(audio, args.pieces), args.repeats) / args.seconds
    print(f"baseline: mp3 encoding of the same audio: {1000 * baseline:.2f} ms per audio s")
    print(f"{'speed':>6} {'ms/audio s':>10} {'vs mp3':>7} {'atempo err %':>12} {'sent err %':>10} {'tone Hz':>8}")
    for speed in SPEEDS:
        cost = timed(lambda: stretch(audio, speed, args.pieces), args.repeats) / args.seconds
        out, own = stretch(audio, speed, args.pieces)
        expected = audio.size / speed
        hz = dominant_hz(stretch(tone, speed, 5)[0])
        print(f"{speed:>6g} {1000 * cost:>10.2f} {cost / baseline:>6.2f}x {100 * (own / expected - 1):>12.3f} "
              f"{100 * (out.size / expected - 1):>10.4f} {hz:>8.1f}")


if __name__ == "__main__":
    main()
