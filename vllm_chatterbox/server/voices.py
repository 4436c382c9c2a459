"""Stored voices: one ``<name>.pt`` file per voice in the official ``conds.pt`` format.

Names are plain (letters, digits, ``-`` and ``_``, at most 64), so a name can never reach outside
the directory. A voice is written to a temporary file in the same directory, flushed to disk and
then hard-linked to its name, which fails if the name exists: a reader sees the whole voice or
nothing, and two uploads of one name cannot overwrite each other.
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
                "exaggeration": round(self.exaggeration, 6), "builtin": self.name == BUILTIN_VOICE}


def check_voice_name(name: str) -> str:
    if not isinstance(name, str) or not VOICE_NAME.fullmatch(name):
        raise ValueError("voice name must be 1-64 characters: letters, digits, '-' or '_', starting with a letter "
                         f"or digit; got {name!r}")
    return name


class VoiceStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, tuple[int, Voice]] = {}
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
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
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
