"""Voice conversion: speech in one voice becomes the same speech in another, as the original's
``ChatterboxVC`` (``vc.py``) does it, without T3.

The original turns the source into S3 speech tokens with S3Gen's tokenizer (16 kHz, all of it)
and runs S3Gen on those tokens with the target voice's S3Gen conditioning: the first 10 s of a
reference clip at 24 kHz (``embed_ref``), or the built-in voice of ``conds.pt``. Here the same
tokenizer and S3Gen run per source piece (:mod:`vllm_chatterbox.conversion.source`: a source of
up to 30 s is one piece, exactly the original's computation; longer ones are cut at pauses), all
pieces of all sources in S3Gen's length-grouped batches, joined on the source's timeline
(:mod:`vllm_chatterbox.conversion.timeline`). Voices are those of text-to-speech (a
:class:`Voice`, a saved ``.pt``, reference audio, the built-in); conversion uses their S3Gen
half, which the voice builder computes exactly as ``embed_ref``.

Only S3Gen and the voice networks are loaded (no vLLM engine). Turbo / Nano directories convert
with their 2-step meanflow S3Gen (the original offers no conversion for them).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.conversion.source import (MAX_PIECE_SECONDS, MAX_SOURCE_SECONDS, SOURCE_SAMPLE_RATE, Piece,
                                               check_max_piece_seconds, load_source, plan_pieces)
from vllm_chatterbox.conversion.timeline import TimelineJoiner
from vllm_chatterbox.model_files import DEFAULT_REPO, TURBO_REPOS, ModelFiles, download
from vllm_chatterbox.params import check_seed, check_timesteps
from vllm_chatterbox.variants import model_config, model_variant
from vllm_chatterbox.pipeline.long_text import DEFAULT_CROSSFADE_MS, check_join_options
from vllm_chatterbox.watermark import StreamMarker, check_watermark_flag, load_watermarker
from vllm_chatterbox.s3gen.inputs import random_seed
from vllm_chatterbox.s3gen.model import S3Gen, length_groups
from vllm_chatterbox.voice.audio import AudioSource
from vllm_chatterbox.voice.builder import VoiceBuilder
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

VoiceLike = Voice | str | Path
SourceLike = AudioSource
_SINGLE_SOURCE_TYPES = (str, os.PathLike, bytes, bytearray, np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class ConversionJob:
    """One source, validated and cut: its 16 kHz samples, pieces, target voice and the
    positional-noise seed of each piece."""

    wav16: np.ndarray
    pieces: list[Piece]
    voice: Voice
    seeds: list[int]
    crossfade_samples: int


class VoiceConverter:
    """Speech to the same speech in another voice; see the module docstring.

    Build with :meth:`from_dir` / :meth:`from_pretrained`, or from already loaded parts
    (``ChatterboxTTS.convert`` reuses its model's S3Gen and voice builder).
    """

    def __init__(self, s3gen: S3Gen, voice_builder: VoiceBuilder, builtin_voice: Voice, config: ChatterboxConfig, *,
                 max_batch_frames: int | None = None):
        # S3Gen batch cap (batch size x longest piece, in mel frames); None: S3Gen's default for
        # the device (one piece per call on a CPU, where batching measured slower).
        self.max_batch_frames = max_batch_frames
        self.s3gen = s3gen
        self.voice_builder = voice_builder
        self.config = config
        self.builtin_voice = self._checked_voice(builtin_voice, "the built-in voice (conds.pt)")
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @classmethod
    def from_dir(cls, path: str | Path, *, variant: str | None = None, device: str | torch.device | None = None,
                 s3gen_dtype: str = "float32") -> "VoiceConverter":
        """Load S3Gen and the voice networks of a model directory in the official layout (English,
        multilingual, Turbo or Nano; ``variant`` forces one as in ``ChatterboxTTS.from_dir``).
        ``device``: default CUDA when available; ``s3gen_dtype``: "float32" (exact) or "bfloat16"."""
        return cls.from_files(ModelFiles.from_dir(path, variant=variant), device=device, s3gen_dtype=s3gen_dtype)

    @classmethod
    def from_files(cls, files: ModelFiles, *, device: str | torch.device | None = None,
                   s3gen_dtype: str = "float32") -> "VoiceConverter":
        if not isinstance(files, ModelFiles):
            raise ValueError(f"files must be a ModelFiles (see ModelFiles.from_dir), got {type(files).__name__}")
        from vllm_chatterbox.s3gen.model import s3gen_dtype as check_s3gen_dtype

        check_s3gen_dtype(s3gen_dtype)
        files.check_readable()
        config = model_config(files)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        s3gen = S3Gen.from_file(files.s3gen, config, device=device, dtype=s3gen_dtype)
        options = model_variant(files).voice_options(config)
        builder = VoiceBuilder.from_files(files.voice_encoder, files.s3gen, config, device=device, options=options)
        return cls(s3gen, builder, Voice.load(files.conds), config)

    @classmethod
    def from_pretrained(cls, repo_id: str | None = None, *, revision: str | None = None, variant: str | None = None,
                        **options) -> "VoiceConverter":
        """The hub model (cached copy first; the download is the model's whole file set);
        ``variant`` "turbo" / "nano" as in ``ChatterboxTTS.from_pretrained``."""
        path = download(repo_id or TURBO_REPOS.get(variant, DEFAULT_REPO), revision, variant=variant)
        return cls.from_dir(path, variant=variant, **options)

    @property
    def sample_rate(self) -> int:
        return self.config.hift.sampling_rate

    @property
    def samples_per_token(self) -> int:
        """24 kHz output samples per S3 token (960)."""
        return self.sample_rate // self.config.s3_tokenizer.token_rate

    # --- voices ---------------------------------------------------------------------------

    def voice_from_audio(self, audio: AudioSource, sample_rate: int | None = None) -> Voice:
        """Clone a target voice from reference audio (path, bytes, file object or samples;
        cached by content). A voice made here speaks for ``ChatterboxTTS`` as well."""
        return self.voice_builder.build(audio, sample_rate)

    def resolve_voice(self, voice: VoiceLike | None) -> Voice:
        """None (the built-in voice), a Voice, a saved ``.pt`` voice, or a reference audio file."""
        if voice is None:
            return self.builtin_voice
        if isinstance(voice, Voice):
            return self._checked_voice(voice, "voice")
        if isinstance(voice, (str, Path)):
            if Path(voice).suffix == ".pt":
                return self._checked_voice(Voice.load(voice), str(voice))
            return self.voice_from_audio(voice)
        raise ValueError(f"voice must be None, a Voice, a .pt voice file or an audio file, got {voice!r}")

    def _checked_voice(self, voice: Voice, label: str) -> Voice:
        return check_voice_for(self.config, voice, label)

    # --- sources ----------------------------------------------------------------------------

    def source_tokens(self, source: SourceLike, sample_rate: int | None = None, *,
                      max_piece_seconds: float = MAX_PIECE_SECONDS) -> list[int]:
        """The S3 speech tokens of a source: for up to ``max_piece_seconds`` those of the
        original's ``s3gen.tokenizer(librosa.load(source, sr=16000))``; for longer sources those of
        its pieces, one after another (as many as the whole source has)."""
        wav16 = load_source(source, sample_rate)
        return [t for piece in plan_pieces(wav16, max_piece_seconds) for t in self._piece_tokens(wav16, piece)]

    def _piece_tokens(self, wav16: np.ndarray, piece: Piece) -> list[int]:
        """One piece through the S3 tokenizer alone (a batch of one, as the original runs it)."""
        tokens, lengths = self.voice_builder.tokenizer([torch.from_numpy(wav16[piece.start:piece.end])])
        return tokens[0, :int(lengths[0])].tolist()

    # --- conversion -------------------------------------------------------------------------

    def prepare(self, source: SourceLike | Sequence[SourceLike], voice: VoiceLike | None | Sequence = None, *,
                sample_rate: int | None | Sequence[int | None] = None, seed: int | None | Sequence = None,
                max_piece_seconds: float = MAX_PIECE_SECONDS, crossfade_ms: float = DEFAULT_CROSSFADE_MS,
                max_source_seconds: float = MAX_SOURCE_SECONDS) -> list[ConversionJob]:
        """Validate everything and cut the sources (nothing is converted); one job per source."""
        sources = [source] if _is_single(source) else _source_list(source)
        count = len(sources)
        max_piece_seconds = check_max_piece_seconds(max_piece_seconds)
        check_join_options(self.sample_rate, crossfade_ms, 0.0)
        rates = _per_source("sample_rate", sample_rate, count)
        seeds = [check_seed(s, f" (source {i})" if count > 1 else "")
                 for i, s in enumerate(_per_source("seed", seed, count))]
        voice_items = _per_source("voice", voice, count)
        wavs = []
        for i, (item, rate) in enumerate(zip(sources, rates)):
            try:
                wavs.append(load_source(item, rate, max_seconds=max_source_seconds))
            except ValueError as exc:
                raise ValueError(f"source {i}: {exc}" if count > 1 else f"source: {exc}") from None
        voices = [self.resolve_voice(v) for v in voice_items]
        crossfade = round(float(crossfade_ms) * self.sample_rate / 1000)
        jobs = []
        for i, (wav16, target, base) in enumerate(zip(wavs, voices, seeds)):
            pieces = plan_pieces(wav16, max_piece_seconds)
            self._check_lengths(pieces, target, i if count > 1 else None)
            # With a seed, piece j draws from seed + j (a one-piece source from the seed itself,
            # as ChatterboxTTS.speech_tokens_to_audio does).
            piece_seeds = [random_seed() if base is None else (base + j) % 2**63 for j in range(len(pieces))]
            jobs.append(ConversionJob(wav16, pieces, target, piece_seeds, crossfade))
        if sum(len(job.pieces) for job in jobs) > 1:
            logger.info("converting %d source(s), %.1f s of audio, in %d pieces", count,
                        sum(len(job.wav16) for job in jobs) / SOURCE_SAMPLE_RATE, sum(len(j.pieces) for j in jobs))
        return jobs

    def _check_lengths(self, pieces: list[Piece], voice: Voice, index: int | None) -> None:
        """S3Gen makes 2 * (prompt + piece tokens) - prompt frames mel frames: more than none."""
        ratio = self.config.flow.token_mel_ratio
        prompt_tokens, prompt_frames = voice.prompt_token.shape[1], voice.prompt_feat.shape[1]
        shortest = min(p.tokens for p in pieces)
        if ratio * (prompt_tokens + shortest) <= prompt_frames:
            where = "" if index is None else f" {index}"
            raise ValueError(f"source{where}: a piece of {shortest} speech tokens gives no audio with this voice "
                             f"({prompt_tokens} prompt tokens for {prompt_frames} prompt mel frames)")

    def convert(self, source: SourceLike | Sequence[SourceLike], voice: VoiceLike | None | Sequence = None, *,
                sample_rate: int | None | Sequence[int | None] = None, seed: int | None | Sequence = None,
                n_timesteps: int | None = None, max_piece_seconds: float = MAX_PIECE_SECONDS,
                crossfade_ms: float = DEFAULT_CROSSFADE_MS, progress: bool = True,
                watermark: bool = True) -> np.ndarray | list[np.ndarray]:
        """Source speech in the target voice, 24 kHz float32.

        ``source``: a path, the file's bytes, a binary file object, or samples (``sample_rate``
        needed), or a list of those (converted together, a list back). ``voice``: None (the
        built-in voice), a Voice, a saved ``.pt`` or a reference audio file, one for all or one
        per source. ``seed``: None or an integer (or one per source); a long source's piece j
        uses seed + j. ``n_timesteps``: S3Gen's flow-matching steps (default: the model's, 10;
        Turbo / Nano 2). Sources longer than ``max_piece_seconds`` (5 to 30 s) are cut at pauses,
        converted as one batch and joined on the source's timeline with ``crossfade_ms`` fades
        (tqdm progress unless ``progress=False``). Each output carries Perth's watermark, as the
        original's does (:mod:`vllm_chatterbox.watermark`); ``watermark=False`` leaves it unmarked.
        Bad input raises ValueError before any conversion.
        """
        steps = self._steps(n_timesteps)
        if not isinstance(progress, bool):
            raise ValueError(f"progress must be True or False, got {progress!r}")
        watermarker = load_watermarker() if check_watermark_flag(watermark) else None
        jobs = self.prepare(source, voice, sample_rate=sample_rate, seed=seed, max_piece_seconds=max_piece_seconds,
                            crossfade_ms=crossfade_ms)
        work = [(j, i) for j, job in enumerate(jobs) for i in range(len(job.pieces))]
        wavs = self._convert_pieces(jobs, work, steps, progress and len(work) > 1)
        outputs = []
        for j, job in enumerate(jobs):
            joiner = TimelineJoiner(self._starts(job), job.crossfade_samples)
            parts = [joiner.add(wavs[(j, i)]) for i in range(len(job.pieces))]
            wav = np.concatenate(parts + [joiner.finish()])
            outputs.append(wav if watermarker is None else watermarker.mark(wav, self.sample_rate))
        return outputs[0] if _is_single(source) else outputs

    def convert_stream(self, source: SourceLike, voice: VoiceLike | None = None, **options) -> Iterator[np.ndarray]:
        """:meth:`convert` of one source as 24 kHz float32 pieces, each out as soon as its source
        piece is converted (the next piece is converted meanwhile); the pieces joined equal
        :meth:`convert`'s audio for the same seed (unmarked; marked, to the stream marker's
        tolerance, see :class:`~vllm_chatterbox.watermark.StreamMarker`). Takes :meth:`convert`'s
        options but ``progress``; bad input raises here, before anything runs. Closing the
        generator early stops the work (a piece already being converted still finishes)."""
        job, steps, marker = self._prepare_stream(source, voice, options)
        return self._stream(job, steps, marker)

    def aconvert_stream(self, source: SourceLike, voice: VoiceLike | None = None,
                        **options) -> AsyncIterator[np.ndarray]:
        """:meth:`convert_stream` for ``async for`` (the conversion runs on this converter's worker
        thread, which serves all streams in turn, so the event loop stays free)."""
        job, steps, marker = self._prepare_stream(source, voice, options)
        return self._astream(job, steps, marker)

    # --- internals ------------------------------------------------------------------------

    def _steps(self, n_timesteps: int | None) -> int:
        return self.config.estimator.default_n_timesteps if n_timesteps is None else check_timesteps(n_timesteps)

    def _starts(self, job: ConversionJob) -> list[int]:
        return [piece.first_token * self.samples_per_token for piece in job.pieces]

    def _prepare_stream(self, source, voice,
                        options: dict[str, Any]) -> tuple[ConversionJob, int, StreamMarker | None]:
        if not _is_single(source):
            raise ValueError("convert_stream takes one source (use convert for a list)")
        unknown = set(options) - {"sample_rate", "seed", "n_timesteps", "max_piece_seconds", "crossfade_ms",
                                  "watermark"}
        if unknown:
            raise ValueError(f"unknown option(s) for a conversion stream: {', '.join(sorted(unknown))}")
        options = dict(options)
        steps = self._steps(options.pop("n_timesteps", None))
        marker = None
        if check_watermark_flag(options.pop("watermark", True)):
            marker = StreamMarker(load_watermarker(), self.sample_rate)
        return self.prepare(source, voice, **options)[0], steps, marker

    def _convert_pieces(self, jobs: list[ConversionJob], work: list[tuple[int, int]], steps: int,
                        progress: bool) -> dict[tuple[int, int], np.ndarray]:
        tokens = {key: self._piece_tokens(jobs[key[0]].wav16, jobs[key[0]].pieces[key[1]]) for key in work}
        ratio = self.config.flow.token_mel_ratio
        frames = [ratio * (jobs[j].voice.prompt_token.shape[1] + len(tokens[(j, i)])) for j, i in work]
        wavs = {}
        with tqdm(total=len(work), unit="piece", desc="convert", disable=not progress) as bar:
            cap = self.s3gen.default_max_batch_frames if self.max_batch_frames is None else self.max_batch_frames
            for group in length_groups(frames, cap):
                keys = [work[g] for g in group]
                out = self.s3gen.inference([tokens[k] for k in keys], [jobs[k[0]].voice for k in keys],
                                           n_timesteps=steps, seeds=[jobs[k[0]].seeds[k[1]] for k in keys],
                                           max_batch_frames=cap)
                wavs.update(zip(keys, out))
                bar.update(len(keys))
        return wavs

    def _convert_piece(self, job: ConversionJob, index: int, steps: int) -> np.ndarray:
        tokens = self._piece_tokens(job.wav16, job.pieces[index])
        return self.s3gen.inference([tokens], [job.voice], n_timesteps=steps, seeds=[job.seeds[index]])[0]

    def close(self) -> None:
        """Stop the conversion worker thread (pieces queued for it are cancelled)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    @property
    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voice-conversion")
            return self._executor

    def _submit_next(self, job: ConversionJob, steps: int, pending: collections.deque, submitted: int) -> int:
        """Keep the piece being played and the next one queued on the worker."""
        while submitted < len(job.pieces) and len(pending) < 2:
            pending.append(self._worker.submit(self._convert_piece, job, submitted, steps))
            submitted += 1
        return submitted

    def _stream(self, job: ConversionJob, steps: int, marker: StreamMarker | None) -> Iterator[np.ndarray]:
        joiner = TimelineJoiner(self._starts(job), job.crossfade_samples)
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        submitted = 0
        try:
            for _ in job.pieces:
                submitted = self._submit_next(job, steps, pending, submitted)
                out = joiner.add(pending.popleft().result())
                if marker is not None:
                    out = marker.feed(out)
                if out.size:
                    yield out
            rest = joiner.finish()
            if marker is not None:
                rest = marker.feed(rest, final=True)
            if rest.size:
                yield rest
        finally:
            for future in pending:
                future.cancel()

    async def _astream(self, job: ConversionJob, steps: int, marker: StreamMarker | None) -> AsyncIterator[np.ndarray]:
        joiner = TimelineJoiner(self._starts(job), job.crossfade_samples)
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        submitted = 0
        try:
            for _ in job.pieces:
                submitted = self._submit_next(job, steps, pending, submitted)
                out = joiner.add(await asyncio.wrap_future(pending.popleft()))
                if marker is not None:
                    out = await asyncio.to_thread(marker.feed, out)
                if out.size:
                    yield out
            rest = joiner.finish()
            if marker is not None:
                rest = await asyncio.to_thread(marker.feed, rest, True)
            if rest.size:
                yield rest
        finally:
            for future in pending:
                future.cancel()


def check_voice_for(config: ChatterboxConfig, voice: Voice, label: str = "voice") -> Voice:
    """The widths S3Gen reads (the T3 half of a voice is not used by conversion)."""
    flow = config.flow
    if tuple(voice.embedding.shape) != (1, flow.spk_embed_dim):
        raise ValueError(f"{label}: embedding must have shape (1, {flow.spk_embed_dim}), "
                         f"got {tuple(voice.embedding.shape)}")
    if voice.prompt_feat.shape[2] != flow.output_size:
        raise ValueError(f"{label}: prompt_feat must be (1, frames, {flow.output_size}), "
                         f"got {tuple(voice.prompt_feat.shape)}")
    return voice


def _is_single(source: Any) -> bool:
    return isinstance(source, _SINGLE_SOURCE_TYPES) or hasattr(source, "read")


def _source_list(sources: Any) -> list:
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ValueError("source must be a path, bytes, a binary file object, samples, or a non-empty list of "
                         f"those; got {type(sources).__name__}")
    for i, item in enumerate(sources):
        if not _is_single(item):
            raise ValueError(f"source {i}: expected a path, bytes, a binary file object or samples, "
                             f"got {type(item).__name__}")
    return list(sources)


def _per_source(name: str, value: Any, count: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name}: got {len(value)} values for {count} sources (give one value or one per source)")
        return list(value)
    return [value] * count
