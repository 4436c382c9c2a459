"""Audio files for detection: anything libsndfile reads (wav, flac, ogg/opus, mp3), and, when
PyAV is installed (the server extra), what FFmpeg reads besides (aac, m4a, webm, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

# Longest file read: three hours (a 48 kHz one is 2 GB as float32).
MAX_FILE_S = 3 * 3600.0


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of an audio file, or a ValueError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        with soundfile.SoundFile(str(path)) as f:
            _check_length(path, f.frames, f.samplerate)
            data, rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except soundfile.LibsndfileError as exc:
        decoded = _read_with_pyav(path)
        if decoded is None:
            raise ValueError(f"{path}: not a readable audio file ({exc})") from None
        return decoded
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples")
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), int(rate)


def _check_length(path: Path, frames: int, rate: int) -> None:
    if rate > 0 and frames / rate > MAX_FILE_S:
        raise ValueError(f"{path}: {frames / rate / 3600:.1f} hours of audio; at most {MAX_FILE_S / 3600:g} are "
                         "read (cut the file)")


def _read_with_pyav(path: Path) -> tuple[np.ndarray, int] | None:
    """FFmpeg's decoding of a file libsndfile refused; None when PyAV is missing or FFmpeg fails too."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces, frames = [], 0
            for frame in container.decode(stream):
                for converted in to_mono.resample(frame):
                    pieces.append(converted.to_ndarray().reshape(-1))
                    frames += pieces[-1].size
                    _check_length(path, frames, rate)
            for converted in to_mono.resample(None):
                pieces.append(converted.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, OSError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
            raise
        return None
    if not pieces or not sum(p.size for p in pieces):
        return None
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32), int(rate)
