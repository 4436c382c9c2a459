"""Output files: checked before any work, written atomically.

A file is written under a temporary name in its own directory and renamed over the target only
once complete, so a full disk or a crash leaves either the old file or none, never a truncated
one that looks valid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Extension -> soundfile format for the waveforms we write (16-bit PCM).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
VOICE_SUFFIXES = (".pt",)
# Write failures that are the storage's, not the program's: said plainly, naming the file.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# Below this much free space a failed write by a library that hides the errno (libsndfile, torch)
# is taken for a full file system.
_FULL_BYTES = 1 << 20


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=path.parent)
    except OSError as exc:
        clear = storage_error(exc, path)
        if clear is None:
            raise
        raise clear from exc
    os.close(handle)
    temporary = Path(name)
    try:
        # mkstemp makes the file private; give it the mode a plain open() would (or the old file's).
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        clear = storage_error(exc, path)  # before the unlink: the failed file still takes its room
        with contextlib.suppress(OSError):  # e.g. the file system turned read-only: report the first failure
            temporary.unlink(missing_ok=True)
        if clear is not None:
            raise clear from exc
        raise


def storage_error(exc: BaseException, path: Path) -> OSError | None:
    """An OSError saying plainly why writing ``path`` failed when the storage is at fault (full,
    over quota, read-only, not permitted), with that errno; None for any other failure."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in STORAGE_ERRNOS and isinstance(exc, RuntimeError) and _free_bytes(path.parent) < _FULL_BYTES:
        code = errno.ENOSPC
    if code not in STORAGE_ERRNOS:
        return None
    error = OSError(f"cannot write {path}: {os.strerror(code)}")
    error.errno = code
    return error


def _free_bytes(directory: Path) -> int:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return _FULL_BYTES
    # root may also use the blocks reserved for it.
    return (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) * stat.f_frsize


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
