"""Output files: checked before any work, written atomically.

A file is written under a temporary name in its own directory and renamed over the target only
once complete, so a full disk or a crash leaves either the old file or none, never a truncated
one that looks valid.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Extension -> soundfile format for the waveforms we write (16-bit PCM).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
VOICE_SUFFIXES = (".pt",)


def check_output_path(path: str | Path, suffixes) -> Path:
    """``path`` as a file we can create: a supported extension, not a directory, and a
    writable directory (or a creatable one) to hold it. Raises ValueError saying why not."""
    path = Path(path).expanduser()
    allowed = ", ".join(suffixes)
    if str(path).endswith(os.sep) or path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name ending in {allowed}")
    if not path.suffix:
        raise ValueError(f"output {path} has no extension; give a file name ending in {allowed}")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"output {path}: unsupported extension {path.suffix!r}; use {allowed}")
    existing = path.parent.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {path}: directory {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"output {path} exists and is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename,
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        # mkstemp makes the file private; give it the mode a plain open() would (or the old file's).
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """A 16-bit PCM WAV or FLAC file (by extension), written atomically."""
    import soundfile

    path = check_output_path(path, tuple(AUDIO_FORMATS))
    with atomic_output(path) as temporary:
        soundfile.write(str(temporary), wav, sample_rate, subtype="PCM_16", format=AUDIO_FORMATS[path.suffix.lower()])
