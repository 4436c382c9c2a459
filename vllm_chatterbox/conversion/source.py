"""Source recordings for voice conversion: loaded as the original loads them, long ones cut at pauses.

Loading: the original's ``ChatterboxVC`` reads the source with ``librosa.load(path, sr=16000)``:
libsndfile's float32 samples, channels averaged, soxr 'HQ' resampling to 16 kHz (librosa's
default), length fixed to ``ceil(n * 16000 / rate)``. :func:`load_source` does the same through
:func:`vllm_chatterbox.voice.audio.load_audio` and :func:`resample_soxr_hq`; the 16 kHz samples
decide the S3 tokens, so they must match it sample for sample.

Cutting (:func:`plan_pieces`): the original tokenizes a whole source at once. Its S3 tokenizer
reads at most 30 s (3000 mel frames) in one window; beyond that s3tokenizer 0.3.0 switches to
overlapping 30 s windows whose merge drops up to 2 s of tokens at some lengths, and S3Gen's
attention cost grows with the square of the length (refused beyond 4096 tokens). So a source of
at most ``max_piece_seconds`` (default and upper limit 30 s) is one piece, exactly the original's
computation; a longer one is cut into pieces at pauses:

- loudness: mean square of 10 ms frames in dB; the loudness of a candidate cut is the loudest
  frame within 100 ms either side of it, so a cut scores as quiet only inside a pause of at
  least 200 ms;
- candidates lie on the S3 token grid (every 640 samples, 40 ms), so each piece's tokens and
  audio keep the whole source's timing, and the pieces' token counts add up to the whole's;
- from each piece's start, among the cuts between half the bound and the bound (leaving at
  least 1 s for the rest), the quietest is found and the latest cut within 3 dB of it is taken:
  long pieces, and a cut in the deepest pause of the stretch. Without any pause (music, noise)
  this is still the quietest 40 ms boundary there.

Measured on speech made by espeak-ng with pauses of 0.25 s to 1 s between sentences, under
white noise 60 dB below the speech (``tests/conversion/test_source.py``): every cut falls inside
an inserted pause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vllm_chatterbox.params import is_number
from vllm_chatterbox.voice.audio import AudioSource, load_audio, resample_soxr_hq

SOURCE_SAMPLE_RATE = 16000  # the S3 tokenizer's input rate
TOKEN_SAMPLES = 640  # 16 kHz samples per S3 token (25 per second)
MEL_HOP = 160  # 16 kHz samples per S3 tokenizer mel frame
# The S3 tokenizer makes 25 tokens per second and S3Gen fades in the first 40 ms of what it
# makes; below 0.1 s (2 tokens) nothing audible would come out.
MIN_SOURCE_SECONDS = 0.1
# One hour: decoding holds the whole file in memory (a 48 kHz stereo hour is 1.4 GB of float32).
MAX_SOURCE_SECONDS = 3600.0
# The S3 tokenizer's single window (3000 mel frames): a piece of at most this is tokenized as
# the original tokenizes a whole source.
MAX_PIECE_SECONDS = 30.0
MIN_PIECE_BOUND_SECONDS = 5.0  # smallest max_piece_seconds accepted
MIN_LAST_PIECE_SECONDS = 1.0
PAUSE_CONTEXT_FRAMES = 10  # 100 ms of 10 ms frames on each side of a cut
NEAR_QUIETEST_DB = 3.0
SILENCE_FLOOR = 1e-10  # mean square of digital silence, -100 dB


@dataclass(frozen=True)
class Piece:
    """Samples [start, end) of a 16 kHz source; ``start`` is on the token grid."""

    start: int
    end: int

    @property
    def tokens(self) -> int:
        """S3 tokens the tokenizer makes of it: ceil(mel frames / 4), mel frames = samples // 160."""
        return -(-((self.end - self.start) // MEL_HOP) // 4)

    @property
    def first_token(self) -> int:
        return self.start // TOKEN_SAMPLES


def load_source(source: AudioSource, sample_rate: int | None = None, *,
                max_seconds: float = MAX_SOURCE_SECONDS) -> np.ndarray:
    """A source recording as 16 kHz mono float32 samples, as ``librosa.load(source, sr=16000)``
    reads it; unreadable, silent, too short or too long audio is a ValueError."""
    if not is_number(max_seconds) or not MIN_SOURCE_SECONDS <= max_seconds <= MAX_SOURCE_SECONDS:
        raise ValueError(f"max_seconds must be a number in [{MIN_SOURCE_SECONDS}, {MAX_SOURCE_SECONDS:g}], "
                         f"got {max_seconds!r}")
    wav, rate = load_audio(source, sample_rate, min_seconds=MIN_SOURCE_SECONDS, max_seconds=float(max_seconds),
                           what="source")
    return resample_soxr_hq(wav, rate, SOURCE_SAMPLE_RATE)


def check_max_piece_seconds(value) -> float:
    if not is_number(value) or not MIN_PIECE_BOUND_SECONDS <= value <= MAX_PIECE_SECONDS:
        raise ValueError(f"max_piece_seconds must be a number in [{MIN_PIECE_BOUND_SECONDS:g}, "
                         f"{MAX_PIECE_SECONDS:g}], got {value!r}")
    return float(value)


def frame_loudness(wav16: np.ndarray) -> np.ndarray:
    """dB (mean square) of each whole 10 ms frame."""
    frames = wav16[: len(wav16) // MEL_HOP * MEL_HOP].astype(np.float64).reshape(-1, MEL_HOP)
    return 10.0 * np.log10(np.maximum((frames**2).mean(axis=1), SILENCE_FLOOR))


def cut_loudness(wav16: np.ndarray) -> np.ndarray:
    """Loudness of a cut at each token boundary j (sample 640 j): the loudest 10 ms frame within
    100 ms either side of it, in dB."""
    loudness = frame_loudness(wav16)
    padded = np.concatenate([np.full(PAUSE_CONTEXT_FRAMES, -np.inf), loudness, np.full(PAUSE_CONTEXT_FRAMES, -np.inf)])
    # Window k covers frames [k - W, k + W) of the source.
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * PAUSE_CONTEXT_FRAMES).max(axis=1)
    frames_per_token = TOKEN_SAMPLES // MEL_HOP
    return windows[::frames_per_token][: len(wav16) // TOKEN_SAMPLES + 1]


def plan_pieces(wav16: np.ndarray, max_piece_seconds: float = MAX_PIECE_SECONDS) -> list[Piece]:
    """Consecutive pieces covering the source, each at most ``max_piece_seconds`` long, cut at
    pauses (see the module docstring); a source up to the bound is one piece."""
    max_piece_seconds = check_max_piece_seconds(max_piece_seconds)
    total = len(wav16)
    bound = int(max_piece_seconds * SOURCE_SAMPLE_RATE)
    if total <= bound:
        return [Piece(0, total)]
    max_tokens = bound // TOKEN_SAMPLES
    min_tokens = math.ceil(max_tokens / 2)
    loudness = cut_loudness(wav16)
    starts = [0]
    while total - starts[-1] > bound:
        first = starts[-1] // TOKEN_SAMPLES
        lo = first + min_tokens
        # hi >= lo: the rest is longer than the bound (>= 5 s), so than half of it + 1 s.
        hi = min(first + max_tokens, int(total - MIN_LAST_PIECE_SECONDS * SOURCE_SAMPLE_RATE) // TOKEN_SAMPLES)
        candidates = loudness[lo:hi + 1]
        near = np.flatnonzero(candidates <= candidates.min() + NEAR_QUIETEST_DB)
        starts.append((lo + int(near[-1])) * TOKEN_SAMPLES)
    return [Piece(a, b) for a, b in zip(starts, starts[1:] + [total])]
