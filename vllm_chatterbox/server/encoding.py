"""Audio chunks (24 kHz float32) to the bytes of each ``response_format``, as they come.

wav and pcm are 16-bit little-endian PCM converted by soundfile; a streamed wav cannot know its
length up front, so its RIFF and data sizes are 0xFFFFFFFF ("until the end of the stream"), as
OpenAI's streamed wav does and as soundfile, Python's ``wave`` and FFmpeg read it. A wav that is
sent whole (``stream=False``) carries its real sizes, so tools that trust the header (sox) see
its true length. mp3, opus (in
Ogg) and aac (ADTS) are encoded by FFmpeg through PyAV, frame by frame. flac is written by
soundfile once the audio is complete, because a FLAC header names the total length and readers
such as libsndfile cannot read a FLAC stream whose header leaves it open.
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import soundfile

from vllm_chatterbox.config import S3GEN_SAMPLE_RATE

SAMPLE_RATE = S3GEN_SAMPLE_RATE

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
RESPONSE_FORMATS = tuple(CONTENT_TYPES)

# response_format -> (FFmpeg encoder, FFmpeg container, container options)
_PYAV_FORMATS = {
    "mp3": ("libmp3lame", "mp3", {}),
    # Ogg pages of at most 100 ms (FFmpeg's default is 1 s), so opus leaves as it is encoded.
    "opus": ("libopus", "ogg", {"page_duration": "100000"}),
    "aac": ("aac", "adts", {}),
}
_UNKNOWN_SIZE = 0xFFFFFFFF


def pcm16(samples: np.ndarray) -> bytes:
    """16-bit little-endian PCM bytes of float samples (soundfile's clipping and scaling)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(samples, dtype=np.float32), SAMPLE_RATE, format="RAW", subtype="PCM_16",
                    endian="LITTLE")
    return buffer.getvalue()


def wav_header(data_bytes: int | None, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte mono 16-bit PCM WAV header for ``data_bytes`` of samples; None writes the
    streaming sizes that say "unknown, read to the end"."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    riff_size = _UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    data_size = _UNKNOWN_SIZE if data_bytes is None else data_bytes
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + \
        b"data" + struct.pack("<I", data_size)


def streaming_wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte mono 16-bit PCM WAV header whose sizes say "unknown, read to the end"."""
    return wav_header(None, sample_rate)


class _Sink:
    """A write-only, non-seekable file for PyAV: collects what the muxer writes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class AudioEncoder:
    """Encodes consecutive chunks of one stream: ``encode(chunk)`` returns the bytes that are
    ready (possibly none), ``finish()`` the rest. Concatenated, they form one valid file.
    With ``stream=False`` everything is kept until ``finish()``, which returns the whole file
    (a wav then carries its real sizes)."""

    def __init__(self, response_format: str, *, stream: bool = True) -> None:
        if response_format not in CONTENT_TYPES:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
        self.response_format = response_format
        self.content_type = CONTENT_TYPES[response_format]
        self.stream = stream
        self._started = False
        self._held: list[bytes] = []  # stream=False: the encoded bytes so far
        self._pending: list[np.ndarray] = []  # flac, and wav with stream=False: the whole audio
        self._container = None
        if response_format in _PYAV_FORMATS:
            codec, container, options = _PYAV_FORMATS[response_format]
            self._sink = _Sink()
            self._container = av.open(self._sink, mode="w", format=container, options=options)
            self._stream = self._container.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
            self._pts = 0

    def encode(self, samples: np.ndarray) -> bytes:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self.response_format == "flac" or (self.response_format == "wav" and not self.stream):
            self._pending.append(samples)
            return b""
        data = self._encode_pyav(samples) if self._container is not None else self._encode_pcm(samples)
        if not self.stream:
            self._held.append(data)
            return b""
        return data

    def _encode_pcm(self, samples: np.ndarray) -> bytes:
        data = pcm16(samples)
        if self.response_format == "wav" and not self._started:
            data = streaming_wav_header() + data
        self._started = True
        return data

    def finish(self) -> bytes:
        held, self._held = b"".join(self._held), []
        return held + self._finish()

    def _finish(self) -> bytes:
        if self.response_format == "wav" and not self.stream:
            data = pcm16(np.concatenate(self._pending)) if self._pending else b""
            return wav_header(len(data)) + data
        if self.response_format == "flac":
            audio = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
            buffer = io.BytesIO()
            # The same 16-bit samples as wav and pcm (libsndfile's FLAC writer rounds floats its own way).
            soundfile.write(buffer, np.frombuffer(pcm16(audio), dtype="<i2"), SAMPLE_RATE, format="FLAC",
                            subtype="PCM_16")
            return buffer.getvalue()
        if self._container is not None:
            container, self._container = self._container, None
            for packet in self._stream.encode(None):
                container.mux(packet)
            container.close()
            return self._sink.drain()
        return b"" if self._started or self.response_format == "pcm" else streaming_wav_header()

    def close(self) -> None:
        """Release the FFmpeg encoder of a stream that ends early."""
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, ValueError):
                pass  # a half-written stream may fail to write its trailer; nobody reads it
            self._container = None

    def _encode_pyav(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.drain()
