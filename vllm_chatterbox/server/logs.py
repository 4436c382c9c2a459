"""The server's logs: uvicorn's own format (``INFO:     message``) for every logger, or one JSON
object per line (``--log-format json``) for log pipelines; and the access log, one line per
request (``vllm_chatterbox.access``, written by
:class:`~vllm_chatterbox.server.middleware.AccessLogMiddleware`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

ACCESS_LOGGER = "vllm_chatterbox.access"
LOG_FORMATS = ("text", "json")
# Where a request's route leaves what the access log reports (an ASGI scope key).
ACCESS_SCOPE_KEY = "vllm_chatterbox.access"


@dataclass
class AccessRecord:
    """What one request did, filled in as it runs: the middleware's timing and status, the speech
    route's voice, characters, audio and first-audio time."""

    started: float = field(default_factory=time.perf_counter)
    voice: str | None = None
    characters: int | None = None
    audio_samples: int = 0
    sample_rate: int | None = None
    first_audio_s: float | None = None
    aborted: bool | None = None  # speech only: the audio stopped before its end (client gone, failure)

    def audio_started(self) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.started

    def fields(self, *, client: str, method: str, route: str, status: int) -> dict:
        out = {"client": client, "method": method, "route": route, "status": status,
               "total_s": round(time.perf_counter() - self.started, 4)}
        if self.voice is not None:
            out.update(voice=self.voice, characters=self.characters,
                       audio_s=round(self.audio_samples / self.sample_rate, 3) if self.sample_rate else 0.0,
                       first_audio_s=None if self.first_audio_s is None else round(self.first_audio_s, 4),
                       aborted=bool(self.aborted))
        return out


def access_message(fields: dict) -> str:
    """The text form of an access line, uvicorn-like: ``client - "METHOD route" status key=value...``."""
    head = f'{fields["client"]} - "{fields["method"]} {fields["route"]}" {fields["status"]}'
    rest = " ".join(f"{key}={_text(value)}" for key, value in fields.items()
                    if key not in ("client", "method", "route", "status"))
    return f"{head} {rest}"


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written, not when the handler
    was made: a caller that swaps stderr for a while (a test's capture, an embedding program) never
    leaves logging writing to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it; the current sys.stderr always wins
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and an access
    line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "access", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(log_format: str) -> dict:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config``: uvicorn's, this package's and
    every other logger (the root) in one format on stderr."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if log_format == "json":
        formatter = {"()": f"{__name__}.JsonFormatter"}
    else:
        formatter = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s",
                     "use_colors": None}
    handler = {"formatter": "default", "class": f"{__name__}.StderrHandler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"handlers": [], "level": "INFO", "propagate": True},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }
