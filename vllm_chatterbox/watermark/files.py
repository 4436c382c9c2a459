"""Audio files for detection: anything libsndfile reads (wav, flac, ogg/opus, mp3), and, when
PyAV is installed (the server extra), what FFmpeg reads besides (aac, m4a, webm, ...)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile

# Longest file read: three hours (a 48 kHz one is 2 GB as float32).
MAX_FILE_S = 3 * 3600.0


def read_audio_file(source: str | os.PathLike | bytes, *, max_seconds: float = MAX_FILE_S) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of an audio file (a path, or the file's bytes: what a server
    receives), or a ValueError naming the problem; a file longer than ``max_seconds`` is refused
    before it is decoded (libsndfile) or as soon as decoding passes it (FFmpeg)."""
    if isinstance(source, (bytes, bytearray)):
        name, opener = "audio bytes", lambda: io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        if not path.is_file():
            raise ValueError(f"{path}: not a file")
        name, opener = str(path), lambda: str(path)
    try:
        with soundfile.SoundFile(opener()) as f:
            _check_length(name, f.frames, f.samplerate, max_seconds)
            data, rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except soundfile.LibsndfileError as exc:
        decoded = _read_with_pyav(name, opener(), max_seconds)
        if decoded is None:
            raise ValueError(f"{name}: not a readable audio file ({getattr(exc, 'error_string', exc)})") from None
        return decoded
    if data.shape[0] == 0:
        raise ValueError(f"{name}: no audio samples")
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), int(rate)


class _TooLong(ValueError):
    pass


def _check_length(name: str, frames: int, rate: int, max_seconds: float) -> None:
    if rate > 0 and frames / rate > max_seconds:
        raise _TooLong(f"{name}: {_duration(frames / rate)} of audio or more; at most {_duration(max_seconds)} "
                       "are read (cut the file)")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.1f} s"


def _read_with_pyav(name: str, source, max_seconds: float) -> tuple[np.ndarray, int] | None:
    """FFmpeg's decoding of a file libsndfile refused; None when PyAV is missing or FFmpeg fails too."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(source) as container:
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
                    _check_length(name, frames, rate, max_seconds)
            for converted in to_mono.resample(None):
                pieces.append(converted.to_ndarray().reshape(-1))
    except _TooLong:
        raise
    except (av.FFmpegError, ValueError, OSError):
        return None
    if not pieces or not sum(p.size for p in pieces):
        return None
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32), int(rate)
