"""What an operator sets for one server: its limits, API key, voices directory, served name and
whether its audio carries the Perth watermark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vllm_chatterbox.conversion.source import MAX_SOURCE_SECONDS, MIN_SOURCE_SECONDS


@dataclass(frozen=True)
class ServerSettings:
    voices_dir: Path
    model_name: str = "chatterbox"
    api_key: str | None = None
    max_queue: int = 64
    max_input_chars: int = 4096
    max_voice_bytes: int = 20 << 20
    max_voice_seconds: float = 60.0
    # Voice conversion sources and watermark-detection uploads.
    max_convert_bytes: int = 50 << 20
    max_convert_seconds: float = 600.0
    # Every audio response is marked (speech, conversion); clients cannot turn it off.
    watermark: bool = True

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {self.max_queue}")
        if self.max_input_chars < 1:
            raise ValueError(f"max_input_chars must be at least 1, got {self.max_input_chars}")
        if self.max_convert_bytes < 1:
            raise ValueError(f"max_convert_bytes must be at least 1, got {self.max_convert_bytes}")
        if not MIN_SOURCE_SECONDS <= self.max_convert_seconds <= MAX_SOURCE_SECONDS:
            raise ValueError(f"max_convert_seconds must be in [{MIN_SOURCE_SECONDS:g}, {MAX_SOURCE_SECONDS:g}], "
                             f"got {self.max_convert_seconds}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")
