"""What an operator sets for one server: its limits, API key, voices directory and served name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    voices_dir: Path
    model_name: str = "chatterbox"
    api_key: str | None = None
    max_queue: int = 64
    max_input_chars: int = 4096
    max_voice_bytes: int = 20 << 20
    max_voice_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {self.max_queue}")
        if self.max_input_chars < 1:
            raise ValueError(f"max_input_chars must be at least 1, got {self.max_input_chars}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")
