"""Stored voices: one ``<name>.pt`` file per voice in the official ``conds.pt`` format.

Names are plain (letters, digits, ``-`` and ``_``, at most 64), so a name can never reach outside
the directory. A voice is written to a temporary file in the same directory, flushed to disk and
then hard-linked to its name, which fails if the name exists: a reader sees the whole voice or
nothing, and two uploads of one name cannot overwrite each other.

The directory is the only truth: every look-up reads it, so several servers (Ray Serve replicas)
sharing it on a filesystem they all mount see each other's voices and deletes at once. A loaded
voice is cached by its file's identity (inode, size, mtime and ctime: a re-created file may reuse
the inode number and keep the mtime), so a voice deleted and stored again under its name by another
server is not served stale.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from vllm_chatterbox.server.errors import shown
from vllm_chatterbox.voice.voice import Voice

VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
BUILTIN_VOICE = "default"
SUFFIX = ".pt"
_TEMP_PREFIX = ".upload-"


class VoiceExists(Exception):
    pass


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    created_at: int
    exaggeration: float

    def to_json(self) -> dict:
        # conds.pt stores exaggeration as float32: report it as it was given (0.7, not 0.69999999).
        return {"id": self.name, "object": "audio.voice", "name": self.name, "created_at": self.created_at,
                "type": "audio_sample", "exaggeration": round(self.exaggeration, 6),
                "builtin": self.name == BUILTIN_VOICE}


def check_voice_name(name: str) -> str:
    if not isinstance(name, str) or not VOICE_NAME.fullmatch(name):
        raise ValueError("voice name must be 1-64 characters: letters, digits, '-' or '_', starting with a letter "
                         f"or digit; got {shown(name)}")
    return name


class VoiceStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[tuple[int, int, int, int], Voice]] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.directory / f"{check_voice_name(name)}{SUFFIX}"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob(f"*{SUFFIX}") if VOICE_NAME.fullmatch(p.stem))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def load(self, name: str) -> Voice | None:
        """The stored voice, or None if there is none of that name (cached until the file changes)."""
        path = self._path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(name, None)  # deleted, here or by another server sharing the directory
            return None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        voice = Voice.load(path)
        with self._lock:
            self._cache[name] = (stamp, voice)
        return voice

    def info(self, name: str) -> VoiceInfo | None:
        voice = self.load(name)
        if voice is None:
            return None
        return VoiceInfo(name, int(self._path(name).stat().st_mtime), voice.exaggeration)

    def save(self, name: str, voice: Voice) -> VoiceInfo:
        """Store a new voice atomically; VoiceExists if the name is taken."""
        path = self._path(name)
        handle, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=SUFFIX, dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as f:
                # Serialised in memory, written by Python: a full disk raises OSError(ENOSPC), not
                # torch's opaque "unexpected pos" RuntimeError.
                data = io.BytesIO()
                torch.save(voice.to_conds_dict(), data)
                f.write(data.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                raise VoiceExists(name) from None
            self._sync_directory()
        finally:
            os.unlink(temp)
        return VoiceInfo(name, int(path.stat().st_mtime), voice.exaggeration)

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        with self._lock:
            self._cache.pop(name, None)
        self._sync_directory()
        return True

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
