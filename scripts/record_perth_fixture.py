"""Record what the original Perth watermarker (resemble-perth) does to a few speech clips, for
``tests/watermark/test_equivalence.py``.

resemble-perth's watermarker needs torchaudio, which cannot load beside this project's CPU
torch, so this script runs once in a separate, throwaway virtual environment outside the
checkout, and its output is committed. It was run (2026-12-05, Python 3.11, Intel Xeon with
AVX-512, torch CPU capability "AVX512") as:

    python3.11 -m venv /tmp/perth-venv
    /tmp/perth-venv/bin/python -m pip install torch==2.6.0 torchaudio==2.6.0 librosa==0.11.0 "numpy<2" \
        resemble-perth==1.0.1 pyyaml soundfile
    /tmp/perth-venv/bin/python scripts/record_perth_fixture.py tests/watermark/data/perth_reference.npz

which installed torch 2.6.0+cu124 (run on the CPU), torchaudio 2.6.0, librosa 0.11.0, soxr
1.1.0, scipy 1.17.1, numpy 1.26.4, resemble-perth 1.0.1 (the versions the original Chatterbox
pins for torch, torchaudio and librosa; the exact versions are also stored in the file).

Inputs are espeak-ng speech from ``shared/fixtures/tiny/audio`` (see its README), as float32
(what the original's ``tts.generate`` hands the watermarker): two 24 kHz excerpts whose lengths
are not whole 10 ms hops, and, to cover other rates, a 16 kHz and a 48 kHz version made here with
scipy's ``resample_poly`` (stored, since they are not in shared/). For each case the file holds
the original's ``apply_watermark`` output and ``get_watermark(..., round=False)`` of both the
marked output and the unmarked input.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = Path(os.environ.get("CHATTERBOX_SHARED_DIR", REPO_ROOT.parent / "shared")) / "fixtures/tiny/audio"

# name: (source file, first sample, samples, rate to present it at (resample_poly from 24 kHz))
CASES = {
    "builtin_24k": ("builtin_voice_src_24k.wav", 0, 60017, 24000),
    "voice2_24k": ("voice2_24k.wav", 12000, 36517, 24000),
    "voice2_16k": ("voice2_24k.wav", 48000, 36000, 16000),
    "builtin_48k": ("builtin_voice_src_24k.wav", 24000, 14400, 48000),
}


def case_input(name: str) -> tuple[np.ndarray, int]:
    import scipy.signal
    import soundfile

    file, start, length, rate = CASES[name]
    wav, file_rate = soundfile.read(str(SHARED_AUDIO / file), dtype="float32")
    assert file_rate == 24000
    wav = wav[start:start + length]
    if rate == 16000:
        wav = scipy.signal.resample_poly(wav, 2, 3)
    elif rate == 48000:
        wav = scipy.signal.resample_poly(wav, 2, 1)[:-1]  # 28799 samples: 59 hops of 480 and 479 more
    return np.ascontiguousarray(wav, dtype=np.float32), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()

    import librosa
    import perth
    import scipy
    import soxr
    import torch
    import torchaudio

    watermarker = perth.PerthImplicitWatermarker()  # its default: on the CPU
    arrays: dict[str, np.ndarray] = {}
    for name in CASES:
        wav, rate = case_input(name)
        marked = watermarker.apply_watermark(wav, sample_rate=rate)
        file, start, length, _ = CASES[name]
        arrays[f"{name}/rate"] = np.array(rate)
        if rate == 24000:  # the test reads these from shared/
            arrays[f"{name}/source"] = np.array([file, str(start), str(length)])
        else:
            arrays[f"{name}/input"] = wav
        arrays[f"{name}/marked"] = np.asarray(marked, dtype=np.float32)
        arrays[f"{name}/confidence_marked"] = np.asarray(watermarker.get_watermark(marked, rate, round=False))
        arrays[f"{name}/confidence_input"] = np.asarray(watermarker.get_watermark(wav, rate, round=False))
        print(f"{name}: {wav.size} -> {marked.size} samples at {rate} Hz, confidence marked "
              f"{float(arrays[f'{name}/confidence_marked']):.6f}, input {float(arrays[f'{name}/confidence_input']):.6f}")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
                "librosa": librosa.__version__, "soxr": soxr.__version__, "scipy": scipy.__version__,
                "numpy": np.__version__, "resemble-perth": importlib.metadata.version("resemble-perth"),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    arrays["versions"] = np.array(repr(versions))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes); {versions}")


if __name__ == "__main__":
    main()
