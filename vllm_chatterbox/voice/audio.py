"""Reference-audio loading, validation and the two resamplers the original uses.

The original loads voices with ``librosa.load`` (soundfile + soxr 'soxr_hq') and, inside
S3Gen, resamples with ``torchaudio.transforms.Resample`` (Hann-windowed sinc). Both resamplers
are reproduced here because their outputs feed different networks.
"""

from __future__ import annotations

import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile
import soxr
import torch
import torch.nn.functional as F

AudioSource = Union[str, os.PathLike, bytes, BinaryIO, np.ndarray, torch.Tensor]

MIN_DURATION_S = 0.5
MAX_DURATION_S = 600.0
SILENCE_PEAK = 1e-4  # below this peak amplitude the clip carries no usable voice
# Float audio lives in [-1, 1]; a little headroom is fine (clipped masters), samples far beyond
# it are not audio and would overflow the spectrograms into NaN voices.
MAX_PEAK = 100.0
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 16


def load_audio(source: AudioSource, sample_rate: int | None = None, *, min_seconds: float = MIN_DURATION_S,
               max_seconds: float = MAX_DURATION_S, what: str = "reference") -> tuple[np.ndarray, int]:
    """Read and validate a voice reference; returns (mono float32 samples, sample rate).

    ``source`` is a file path (wav/flac/ogg/mp3, anything libsndfile reads), the file's bytes
    or a binary file object, or an array of samples. Arrays need ``sample_rate``; a 2-D array
    holds channels along its smaller axis. Integer arrays are scaled from full scale to [-1, 1].
    ``min_seconds`` / ``max_seconds`` bound the duration (a voice reference's by default; a file
    is measured before it is decoded); ``what`` names the audio in the too-long message.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("sample_rate is required when the audio is given as an array")
        sample_rate = _check_sample_rate(sample_rate)
        wav = _array_to_mono(source)
    else:
        wav, file_rate = _read_file(source, max_seconds, what)
        if sample_rate is not None and int(sample_rate) != file_rate:
            raise ValueError(
                f"sample_rate={sample_rate} given, but the file says {file_rate} Hz; "
                "sample_rate is only needed for raw arrays"
            )
        sample_rate = _check_sample_rate(file_rate)
    _check_samples(wav, sample_rate, min_seconds, max_seconds, what)
    return wav, sample_rate


def _check_sample_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise ValueError(f"sample rate must be an integer number of Hz, got {sample_rate!r}")
    if not float(sample_rate).is_integer():
        raise ValueError(f"sample rate must be an integer number of Hz, got {sample_rate}")
    sample_rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample rate {sample_rate} Hz is outside the supported range "
            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
        )
    return sample_rate


def _too_long(duration: float, max_seconds: float, what: str) -> str:
    return (f"audio is too long ({duration:.1f} s); the limit is {max_seconds:.0f} s "
            f"({max_seconds / 60:g} minutes), trim the {what}")


def _read_file(source, max_seconds: float, what: str) -> tuple[np.ndarray, int]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"audio file not found: {path}")
        if not path.is_file():
            raise ValueError(f"audio path is not a file: {path}")
        name, handle = str(path), str(path)
    elif isinstance(source, (bytes, bytearray)):
        name, handle = "audio bytes", io.BytesIO(source)
    elif hasattr(source, "read"):
        name, handle = "audio stream", source
    else:
        raise ValueError(f"unsupported audio source of type {type(source).__name__}")
    try:
        with soundfile.SoundFile(handle) as f:
            rate, frames = f.samplerate, f.frames
            # Refuse before decoding: a long file would cost memory for nothing.
            if rate > 0 and frames / rate > max_seconds:
                raise ValueError(f"{name}: {_too_long(frames / rate, max_seconds, what)}")
            data = f.read(dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        # error_string, not str(exc): that names the handle, e.g. "<_io.BytesIO object at 0x...>".
        raise ValueError(f"{name}: not a readable audio file ({exc.error_string}); give wav, flac, ogg or "
                         "mp3") from None
    except RuntimeError as exc:  # older soundfile versions raise plain RuntimeError
        raise ValueError(f"{name}: not a readable audio file ({exc})") from None
    # Mono mix exactly like librosa: mean over channels in float32.
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(wav, dtype=np.float32), int(rate)


def _array_to_mono(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.signedinteger):
        samples = samples.astype(np.float64) / float(2 ** (8 * samples.dtype.itemsize - 1))
    elif not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"audio samples must be float or signed integer, got dtype {samples.dtype}")
    if samples.ndim == 2:
        if min(samples.shape) > MAX_CHANNELS:
            raise ValueError(f"audio array of shape {samples.shape} looks like neither mono nor multichannel audio")
        channel_axis = 0 if samples.shape[0] <= samples.shape[1] else 1
        samples = samples.astype(np.float32).mean(axis=channel_axis, dtype=np.float32)
    elif samples.ndim != 1:
        raise ValueError(f"audio array must be 1-D (samples) or 2-D (channels x samples), got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _check_samples(wav: np.ndarray, sample_rate: int, min_seconds: float, max_seconds: float, what: str) -> None:
    if wav.size == 0:
        raise ValueError("audio is empty (no samples)")
    if not np.isfinite(wav).all():
        raise ValueError("audio contains non-finite samples (NaN or inf)")
    duration = wav.size / sample_rate
    if duration < min_seconds:
        raise ValueError(f"audio is too short ({duration:.3f} s); at least {min_seconds:g} s is needed")
    if duration > max_seconds:
        raise ValueError(_too_long(duration, max_seconds, what))
    peak = float(np.abs(wav).max())
    if peak > MAX_PEAK:
        raise ValueError(f"audio samples reach {peak:.3g}; float audio must lie in [-1, 1] "
                         f"(up to {MAX_PEAK:g} is tolerated), so this is not a usable recording")
    if peak < SILENCE_PEAK:
        raise ValueError(f"audio is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:.0e})")


def resample_soxr_hq(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``librosa.resample(x, orig_sr=sr_in, target_sr=sr_out)`` with its defaults (soxr 'HQ')."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    y = soxr.resample(x, sr_in, sr_out, quality="soxr_hq")
    # librosa then pads/cuts to ceil(n * ratio) samples.
    n_out = int(np.ceil(x.shape[-1] * (float(sr_out) / sr_in)))
    if y.shape[-1] < n_out:
        y = np.pad(y, (0, n_out - y.shape[-1]))
    return np.ascontiguousarray(y[:n_out], dtype=np.float32)


@lru_cache(maxsize=16)
def _sinc_hann_kernel(
    sr_in: int, sr_out: int, lowpass_filter_width: int, rolloff: float
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc filters, one row per output phase: (sr_out, 1, taps)."""
    cutoff = min(sr_in, sr_out) * rolloff  # in units of the reduced rates
    half_taps = math.ceil(lowpass_filter_width * sr_in / cutoff)
    taps = torch.arange(-half_taps, half_taps + sr_in, dtype=torch.float64) / sr_in
    phases = torch.arange(0, -sr_out, -1, dtype=torch.float32)[:, None, None] / sr_out
    t = ((phases + taps[None, None]) * cutoff).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=t.dtype), t.sin() / t)
    # Built in float64 and rounded once, as torchaudio's Resample does by default.
    return (sinc * window * (cutoff / sr_in)).to(torch.float32), half_taps


def resample_sinc_hann(
    x: torch.Tensor | np.ndarray,
    sr_in: int,
    sr_out: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """``torchaudio.transforms.Resample(sr_in, sr_out)`` with its defaults, on (..., time)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"resampling needs floating-point samples, got {x.dtype}")
    if sr_in == sr_out:
        return x
    gcd = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // gcd, int(sr_in) // gcd
    kernel, half_taps = _sinc_hann_kernel(down, up, lowpass_filter_width, rolloff)
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (half_taps, half_taps + down))
    out = F.conv1d(padded[:, None], kernel, stride=down)  # (B, up, blocks)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    n_out = math.ceil(up * length / down)
    return out[:, :n_out].reshape(*shape[:-1], -1)
