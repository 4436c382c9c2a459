"""Encoders of every response_format, without a server: streamed chunks form one valid file."""

import io
import struct

import av
import numpy as np
import pytest
import soundfile

from vllm_chatterbox.server.encoding import RESPONSE_FORMATS, SAMPLE_RATE, AudioEncoder, pcm16, streaming_wav_header


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def stream_encode(response_format: str, audio: np.ndarray, pieces: int) -> tuple[bytes, list[bytes]]:
    encoder = AudioEncoder(response_format)
    parts = [encoder.encode(chunk) for chunk in np.array_split(audio, pieces)]
    parts.append(encoder.finish())
    return b"".join(parts), parts


def decode(data: bytes, response_format: str) -> tuple[np.ndarray, int]:
    """Float samples and rate; pcm is raw 24 kHz s16le."""
    if response_format == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768, SAMPLE_RATE
    if response_format in ("wav", "flac"):
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        return samples, rate
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].sample_rate
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(frames).astype(np.float32), rate


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_streamed_chunks_decode_to_the_audio(response_format):
    audio = tone(1.5)
    data, parts = stream_encode(response_format, audio, pieces=7)
    samples, rate = decode(data, response_format)
    # Opus decoders always run at 48 kHz; every other format keeps 24 kHz.
    assert rate == (48000 if response_format == "opus" else SAMPLE_RATE)
    duration = samples.size / rate
    # Lossy codecs add encoder delay/padding of at most a few frames.
    assert abs(duration - 1.5) < (1e-9 if response_format in ("pcm", "wav", "flac") else 0.1), duration
    if response_format in ("pcm", "wav", "flac"):
        np.testing.assert_array_equal(samples, np.frombuffer(pcm16(audio), dtype="<i2") / np.float32(32768))
        np.testing.assert_allclose(samples, audio, rtol=0, atol=1 / 32767)  # 16-bit rounding only
    else:
        assert 0.5 < np.sqrt(np.mean(samples ** 2)) / np.sqrt(np.mean(audio ** 2)) < 2
    if response_format not in ("flac",):
        # Bytes leave as the audio comes, not all at the end (flac needs the whole audio).
        assert sum(1 for part in parts[:-1] if part) >= 3


def test_wav_stream_header_reads_to_the_end():
    audio = tone(0.5)
    data, _ = stream_encode("wav", audio, pieces=3)
    assert data[:44] == streaming_wav_header()
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        assert (f.samplerate, f.channels, f.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert f.frames == audio.size


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_empty_audio(response_format):
    """No speech at all (a chunk may produce no tokens): a wav still has its header; the other
    encoders end without error (libsndfile writes no FLAC file without samples)."""
    data = AudioEncoder(response_format).finish()
    if response_format == "wav":
        assert soundfile.read(io.BytesIO(data))[0].size == 0
    elif response_format in ("pcm", "flac"):
        assert data == b""


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="response_format must be one of"):
        AudioEncoder("ogg")


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_whole_file_encoding(response_format):
    """stream=False: nothing leaves before finish(), which returns the file whole; a wav names its
    real sizes (not the streaming 0xFFFFFFFF)."""
    audio = tone(0.7)
    encoder = AudioEncoder(response_format, stream=False)
    assert [encoder.encode(chunk) for chunk in np.array_split(audio, 5)] == [b""] * 5
    data = encoder.finish()
    samples, _ = decode(data, response_format)
    assert samples.size > 0
    if response_format == "wav":
        riff_size, = struct.unpack("<I", data[4:8])
        data_size, = struct.unpack("<I", data[40:44])
        assert (riff_size, data_size) == (len(data) - 8, 2 * audio.size)
        assert data[44:] == pcm16(audio)
    if response_format in ("pcm", "wav", "flac"):
        np.testing.assert_array_equal(samples, np.frombuffer(pcm16(audio), dtype="<i2") / np.float32(32768))
