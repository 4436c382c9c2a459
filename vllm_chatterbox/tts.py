"""The public entry point: ``ChatterboxTTS``, one class for every released model (the
differences are the rows of ``variants.py``)."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vllm_chatterbox.config import ChatterboxConfig, CpuThreads, check_t3_dtype
from vllm_chatterbox.model_files import DEFAULT_REPO, TURBO_REPOS, ModelFiles, download
from vllm_chatterbox.pipeline.long_text import (DEFAULT_CROSSFADE_MS, DEFAULT_MAX_CHUNK_TOKENS, DEFAULT_PAUSE_MS,
                                              check_join_options, join_with_crossfade)
from vllm_chatterbox.pipeline.batch import AudioJob, s3gen_seed, synthesize
from vllm_chatterbox.pipeline.streaming import StreamJob, StreamVocoder, stream_audio
from vllm_chatterbox.params import check_seed, check_timesteps, is_integer, per_text
from vllm_chatterbox.s3gen.streaming import StreamSchedule, check_schedule
from vllm_chatterbox.t3.contract import T3Request
from vllm_chatterbox.t3.engine import T3Engine
from vllm_chatterbox.text.chunking import split_text
from vllm_chatterbox.variants import model_config, model_variant
from vllm_chatterbox.voice.voice import Voice
from vllm_chatterbox.watermark import PerthWatermarker, check_watermark_flag, load_watermarker

logger = logging.getLogger(__name__)

VoiceLike = Voice | str | Path


class ChatterboxTTS:
    """Chatterbox text-to-speech with T3 on vLLM: English, multilingual, Turbo or Nano.

    Build with :meth:`from_dir` (official file layout) or :meth:`from_pretrained` (hub); what
    differs between the models is their row of :data:`vllm_chatterbox.variants.VARIANTS`.
    Extra keyword arguments go to ``vllm.LLM`` (e.g. ``max_num_seqs``, ``max_model_len``).
    ``s3gen_dtype``: "float32" (exact, default) or "bfloat16" (S3Gen's estimator and vocoder
    convolutions in bf16, see :mod:`vllm_chatterbox.s3gen.model`; a speed-up only where the
    hardware computes bf16 natively).
    """

    def __init__(self, files: ModelFiles, config: ChatterboxConfig, engine_options: dict[str, Any],
                 device: str | torch.device = "cpu", s3gen_dtype: str = "float32"):
        self.files = files
        self.variant = model_variant(files)
        self.config = config
        self.device = torch.device(device)
        self.s3gen_dtype = _checked_s3gen_dtype(s3gen_dtype)
        self.t3 = self.variant.t3_client(files, config)
        self.builtin_voice = Voice.load(files.conds).check_dims(config)
        self.t3_engine = T3Engine(self.variant.engine_spec(config), files.t3, **engine_options)
        # Runs at close() or, for a script that never closes, at interpreter exit while vLLM's
        # modules still work (its own __del__ would run after they are torn down and print errors).
        self._finalizer = weakref.finalize(self, _close_parts, self.t3_engine, self.__dict__)

    def close(self) -> None:
        """Stop the T3 engine (vLLM's engine process) and this model's worker threads; idempotent.
        Called at interpreter exit for a model that was never closed."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "ChatterboxTTS":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @classmethod
    def from_dir(cls, path: str | Path, *, multilingual: bool | None = None, version: str | None = None,
                 variant: str | None = None, device: str | torch.device | None = None, dtype: str = "float32",
                 s3gen_dtype: str = "float32", t3_threads: int | None = None, s3gen_threads: int | None = None,
                 cpu_sharing: str | None = None, **engine_options) -> "ChatterboxTTS":
        """Load a model directory in the official layout. ``device`` runs S3Gen and the voice
        networks (default: CUDA when available); T3 runs wherever vLLM runs. ``dtype`` is T3's
        compute dtype and ``s3gen_dtype`` S3Gen's: "float32" (default, the original's arithmetic)
        or "bfloat16" (fast mode where the hardware has bf16 units; see the README).
        ``t3_threads`` / ``s3gen_threads`` split a CPU's cores between T3's engine process and
        this one (:class:`~vllm_chatterbox.config.CpuThreads`; default: every core for each);
        ``cpu_sharing`` "alternate" makes T3's engine hold its steps while S3Gen computes,
        "overlap" lets both compute at once (default: alternate when the threads exceed the
        cores, overlap when they split them; see :mod:`vllm_chatterbox.t3.cpu_turns`).

        English or multilingual is recognised by the files (``multilingual`` forces one);
        ``version`` picks the multilingual T3, "v2" (default) or "v3". Turbo / Nano directories
        are recognised too (``variant`` forces one).
        """
        files = ModelFiles.from_dir(path, multilingual=multilingual, version=version, variant=variant)
        return cls.from_files(files, device=device, dtype=dtype, s3gen_dtype=s3gen_dtype, t3_threads=t3_threads,
                              s3gen_threads=s3gen_threads, cpu_sharing=cpu_sharing, **engine_options)

    @classmethod
    def from_files(cls, files: ModelFiles, *, device: str | torch.device | None = None, dtype: str = "float32",
                   s3gen_dtype: str = "float32", t3_threads: int | None = None, s3gen_threads: int | None = None,
                   cpu_sharing: str | None = None, **engine_options) -> "ChatterboxTTS":
        """Load already located model files (see :class:`ModelFiles`); the options as in :meth:`from_dir`."""
        engine_options["dtype"] = check_t3_dtype(dtype)
        _checked_s3gen_dtype(s3gen_dtype)
        threads = CpuThreads(t3=t3_threads, s3gen=s3gen_threads, sharing=cpu_sharing)
        device = device or default_device()
        engine_options["threads"] = threads.t3
        # S3Gen on a GPU leaves the CPU to T3: nothing to take turns on.
        engine_options["cpu_sharing"] = threads.sharing if torch.device(device).type == "cpu" else "overlap"
        if not isinstance(files, ModelFiles):
            raise ValueError(f"files must be a ModelFiles (see ModelFiles.from_dir), got {type(files).__name__}; "
                             "use ChatterboxTTS.from_dir for a directory")
        files.check_readable()
        if threads.s3gen is not None:
            torch.set_num_threads(threads.s3gen)
        return cls(files, model_config(files), engine_options, device, s3gen_dtype)

    @classmethod
    def from_pretrained(cls, repo_id: str | None = None, *, revision: str | None = None, multilingual: bool = False,
                        version: str | None = None, variant: str | None = None, **options) -> "ChatterboxTTS":
        """Download (or reuse the cached) English or, with ``multilingual=True``, multilingual
        model; ``version`` picks the multilingual T3 ("v2", the default, or "v3"). ``variant``
        "turbo" / "nano" loads Chatterbox Turbo / Nano (default repo ResembleAI/chatterbox-turbo
        / -nano). Other options (``dtype``, ``device``, engine options) as in :meth:`from_dir`."""
        if repo_id is None:
            repo_id = TURBO_REPOS.get(variant, DEFAULT_REPO)
        check_t3_dtype(options.get("dtype", "float32"))  # before a download
        _checked_s3gen_dtype(options.get("s3gen_dtype", "float32"))
        CpuThreads(t3=options.get("t3_threads"), s3gen=options.get("s3gen_threads"), sharing=options.get("cpu_sharing"))
        path = download(repo_id, revision, multilingual=multilingual, version=version, variant=variant)
        return cls.from_dir(path, multilingual=multilingual, version=version, variant=variant, **options)

    @functools.cached_property
    def s3gen(self):
        from vllm_chatterbox.s3gen.model import S3Gen

        s3gen = S3Gen.from_file(self.files.s3gen, self.config, device=self.device, dtype=self.s3gen_dtype)
        if self.t3_engine.cpu_hold is not None:
            s3gen.compute_hold = self.t3_engine.cpu_hold.hold
        return s3gen

    @property
    def cpu_sharing(self) -> str | None:
        """On a CPU, "alternate" (T3's engine holds its steps while S3Gen computes) or "overlap";
        None where T3 does not run on the CPU. Settable at any time."""
        return self.t3_engine.cpu_sharing

    @cpu_sharing.setter
    def cpu_sharing(self, mode: str) -> None:
        self.t3_engine.cpu_sharing = mode

    @functools.cached_property
    def voice_builder(self):
        from vllm_chatterbox.voice.builder import VoiceBuilder

        return VoiceBuilder.from_files(self.files.voice_encoder, self.files.s3gen, self.config, device=self.device,
                                       options=self.variant.voice_options(self.config))

    @functools.cached_property
    def converter(self):
        """Voice conversion with this model's S3Gen and voice networks (see :mod:`vllm_chatterbox.conversion`)."""
        from vllm_chatterbox.conversion import VoiceConverter

        return VoiceConverter(self.s3gen, self.voice_builder, self.builtin_voice, self.config)

    def convert(self, source, voice: VoiceLike | None = None, **options):
        """Speech in ``source`` spoken by ``voice``, no T3: :meth:`VoiceConverter.convert`."""
        return self.converter.convert(source, voice, **options)

    def convert_stream(self, source, voice: VoiceLike | None = None, **options) -> Iterator[np.ndarray]:
        """:meth:`VoiceConverter.convert_stream`."""
        return self.converter.convert_stream(source, voice, **options)

    def aconvert_stream(self, source, voice: VoiceLike | None = None, **options) -> AsyncIterator[np.ndarray]:
        """:meth:`VoiceConverter.aconvert_stream`."""
        return self.converter.aconvert_stream(source, voice, **options)

    # --- voices ---------------------------------------------------------------------------

    def voice_from_audio(self, audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int | None = None, *,
                         exaggeration: float | None = None, norm_loudness: bool = True) -> Voice:
        """Clone a voice from reference audio (cached by content, so a repeated clip costs nothing).

        ``exaggeration`` defaults to the model's (0.5; Turbo / Nano store 0.0 and ignore it).
        Turbo / Nano need more than 5 s of reference and normalise it to -27 LUFS unless
        ``norm_loudness=False`` (the other models ignore ``norm_loudness``)."""
        if exaggeration is None:
            exaggeration = self.variant.voice_exaggeration
        return self.voice_builder.build(audio, sample_rate, exaggeration=exaggeration, norm_loudness=norm_loudness)

    def resolve_voice(self, voice: VoiceLike | None) -> Voice:
        """None (the built-in voice), a Voice, a saved ``.pt`` voice, or a reference audio file."""
        if voice is None:
            return self.builtin_voice
        if isinstance(voice, Voice):
            return voice.check_dims(self.config)
        if isinstance(voice, (str, Path)):
            if Path(voice).suffix == ".pt":
                return Voice.load(voice).check_dims(self.config)
            return self.voice_from_audio(voice)
        raise ValueError(f"voice must be None, a Voice, a .pt voice file or an audio file, got {voice!r}")

    def warm_voice(self, voice: VoiceLike | None = None) -> int:
        """Put the voice's T3 conditioning into vLLM's prefix cache now, off the path of its first
        request (Turbo / Nano: a 10 s reference's 251 conditioning rows cost about 1 s of prefill on
        two CPU cores; every later request reads them from the cache anyway). Returns the prompt
        rows the voice's requests will find cached (whole KV blocks), 0 where nothing can be
        shared (the original and multilingual models' conditioning is about one block, shared
        only between prompts of one length) or prefix caching is off. The rows stay cached while
        the KV cache has room (vLLM evicts the least recently used)."""
        voice = self.resolve_voice(voice)
        prefix = self.t3.voice_prefix_request(voice)
        if prefix is None:
            return 0
        cache = self.t3_engine.vllm_config.cache_config
        if not cache.enable_prefix_caching:
            return 0
        request, rows = prefix
        self.t3_engine.generate([request])
        return rows // cache.block_size * cache.block_size

    # --- T3 ---------------------------------------------------------------------------------

    def text_token_ids(self, text: str, language: str | None = None) -> list[int]:
        """``[start] + ids + [stop]`` as T3 sees them (see :meth:`T3Client.text_token_ids`)."""
        return self.t3.text_token_ids(text, language)

    def prepare_t3_requests(self, texts: str | Sequence[str], voice: VoiceLike | Sequence[VoiceLike] | None = None,
                            *, language: str | None | Sequence[str | None] = None, **parameters) -> list[T3Request]:
        """Validate everything and build the vLLM requests (nothing is run)."""
        texts = _text_list(texts)
        languages = per_text("language", language, len(texts))
        params = self.t3.params(len(texts), parameters)
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, len(texts))]
        return self.t3.requests(texts, voices, languages, params)

    def generate_speech_tokens(
        self,
        texts: str | Sequence[str],
        voice: VoiceLike | Sequence[VoiceLike] | None = None,
        *,
        language: str | None | Sequence[str | None] = None,
        **parameters,
    ) -> list[list[int]]:
        """Speech tokens for each text (input order), cleaned as the original cleans them.

        ``parameters`` are those of :data:`vllm_chatterbox.params.T3_PARAMETERS` (exaggeration,
        cfg_weight, temperature, top_p, min_p, repetition_penalty, max_new_tokens) and ``seed``,
        each a scalar or one value per text; ``temperature=0`` is greedy. ``language`` (e.g.
        "es") is required by the multilingual model.
        """
        requests = self.prepare_t3_requests(texts, voice, language=language, **parameters)
        return [self.t3.speech_tokens(result) for result in self.t3_engine.generate(requests)]

    # --- S3Gen and the whole pipeline -------------------------------------------------------

    def speech_tokens_to_audio(
        self,
        token_lists: Sequence[Sequence[int]],
        voice: VoiceLike | Sequence[VoiceLike] | None = None,
        *,
        n_timesteps: int | None = None,
        noise: Sequence[torch.Tensor | np.ndarray] | None = None,
        seed: int | None | Sequence[int | None] = None,
    ) -> list[np.ndarray]:
        """24 kHz float32 waveforms, one per token list, computed in length-sorted batches.

        ``noise[i]`` is item i's initial flow-matching noise, shape (80, 2 * (prompt tokens +
        len(token_lists[i]))); ``seed`` seeds each item's random draws instead. ``n_timesteps``
        defaults to the model's (10; Turbo / Nano 2).
        """
        if not isinstance(token_lists, (list, tuple)) or not token_lists:
            raise ValueError("token_lists must be a non-empty list of token lists")
        count = len(token_lists)
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, count)]
        seeds = [check_seed(s, f" (item {i})") for i, s in enumerate(per_text("seed", seed, count))]
        if noise is not None:
            if len(noise) != count:
                raise ValueError(f"noise: got {len(noise)} arrays for {count} token lists")
            noise = [torch.as_tensor(n, dtype=torch.float32, device=self.device) for n in noise]
        wavs = self.s3gen.inference(
            [list(t) for t in token_lists], voices, n_timesteps=check_timesteps(self._timesteps(n_timesteps)),
            noise=noise, seeds=[s3gen_seed(s) for s in seeds],
        )
        return [self._trim_last_token(wav, len(tokens)) for wav, tokens in zip(wavs, token_lists)]

    def _timesteps(self, n_timesteps: int | Sequence[int] | None) -> int | Sequence[int]:
        """``n_timesteps`` as given, or the model's default."""
        return self.variant.n_timesteps if n_timesteps is None else n_timesteps

    def _trim_last_token(self, wav: np.ndarray, n_tokens: int) -> np.ndarray:
        """The multilingual model (as at the original's HEAD) drops the last speech token's audio."""
        if not self.variant.trim_last_token:
            return wav
        samples_per_token = self.config.hift.sampling_rate // self.config.s3_tokenizer.token_rate
        return wav[: max(1, n_tokens - 1) * samples_per_token]

    def generate(
        self,
        texts: str | Sequence[str],
        voice: VoiceLike | Sequence[VoiceLike] | None = None,
        *,
        n_timesteps: int | Sequence[int] | None = None,
        watermark: bool = True,
        **parameters,
    ) -> list[np.ndarray]:
        """Text(s) to 24 kHz float32 waveforms, in input order.

        Takes every parameter of :meth:`generate_speech_tokens` plus ``n_timesteps`` (default:
        the model's, 10; Turbo / Nano 2), each a scalar or one value per text. T3 decodes on
        vLLM while finished texts are vocoded.
        Each waveform carries Perth's watermark, as the original's output does
        (:mod:`vllm_chatterbox.watermark`; it drops the last incomplete 10 ms of each waveform,
        as the original's does); ``watermark=False`` leaves the audio unmarked.
        """
        watermarker = self._watermarker_for(watermark)
        wavs = [wav for _, wav in sorted(self._synthesize(texts, voice, n_timesteps, parameters))]
        return [self._mark(watermarker, wav) for wav in wavs]

    def generate_long(
        self,
        text: str,
        voice: VoiceLike | None = None,
        *,
        max_chunk_tokens: int = DEFAULT_MAX_CHUNK_TOKENS,
        crossfade_ms: float = DEFAULT_CROSSFADE_MS,
        pause_ms: float = DEFAULT_PAUSE_MS,
        n_timesteps: int | None = None,
        progress: bool = True,
        watermark: bool = True,
        **parameters,
    ) -> np.ndarray:
        """A long text (up to a book chapter) to one 24 kHz float32 waveform.

        The text is cut at sentence boundaries (clauses, words as a last resort) into chunks of
        at most ``max_chunk_tokens`` text tokens; all chunks run as one batch, as in
        :meth:`generate`, and are joined with a short pause and crossfade. Takes the parameters
        of :meth:`generate_speech_tokens`, one value each for the whole text; with ``seed``,
        chunk i uses ``seed + i``. The joined waveform is watermarked once, as :meth:`generate`
        marks (``watermark=False``: unmarked).
        """
        check_join_options(self.config.hift.sampling_rate, crossfade_ms, pause_ms)
        watermarker = self._watermarker_for(watermark)
        chunks, voice, parameters = self._split_long_text(text, voice, max_chunk_tokens, parameters)
        wavs: list[np.ndarray | None] = [None] * len(chunks)
        with tqdm(total=len(chunks), unit="chunk", desc="generate_long", disable=not progress) as bar:
            for index, wav in self._synthesize(chunks, voice, n_timesteps, parameters):
                wavs[index] = wav
                bar.update()
        return self._mark(watermarker, join_with_crossfade(wavs, self.config.hift.sampling_rate, crossfade_ms, pause_ms))

    def _split_long_text(self, text: str, voice: VoiceLike | None, max_chunk_tokens: int,
                         parameters: dict) -> tuple[list[str], Voice, dict]:
        """Chunks of ``text``, the resolved voice, and per-chunk parameters (seed + i)."""
        limit = self.config.t3.max_text_len
        if not is_integer(max_chunk_tokens) or not 1 <= max_chunk_tokens <= limit:
            raise ValueError(f"max_chunk_tokens must be an integer in [1, {limit}], got {max_chunk_tokens!r}")
        max_chunk_tokens = int(max_chunk_tokens)
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        for name, value in parameters.items():
            if isinstance(value, (list, tuple)):
                raise ValueError(f"{name}: one value for the whole text, got {value!r}")
        parameters = dict(parameters)
        seed = check_seed(parameters.pop("seed", None))
        language = parameters.get("language")
        chunks = split_text(text, max_chunk_tokens, lambda chunk: self.t3.count_text_tokens(chunk, language))
        logger.info("long text: %d characters in %d chunks", len(text), len(chunks))
        if seed is not None:
            parameters["seed"] = [seed + i for i in range(len(chunks))]
        voice = self.resolve_voice(voice)  # a reference clip is cloned once, not once per chunk
        return chunks, voice, parameters

    # --- streaming ------------------------------------------------------------------------

    def prepare_stream(
        self,
        text: str,
        voice: VoiceLike | None = None,
        *,
        max_chunk_tokens: int = DEFAULT_MAX_CHUNK_TOKENS,
        crossfade_ms: float = DEFAULT_CROSSFADE_MS,
        pause_ms: float = DEFAULT_PAUSE_MS,
        n_timesteps: int | None = None,
        schedule: StreamSchedule | None = None,
        watermark: bool = True,
        **parameters,
    ) -> StreamJob:
        """Validate a stream and build its T3 requests (nothing runs); see :meth:`stream`."""
        check_join_options(self.config.hift.sampling_rate, crossfade_ms, pause_ms)
        n_timesteps = check_timesteps(self._timesteps(n_timesteps))
        schedule = self._stream_schedule(schedule)
        watermarker = self._watermarker_for(watermark)
        chunks, voice, parameters = self._split_long_text(text, voice, max_chunk_tokens, parameters)
        requests = self.prepare_t3_requests(chunks, voice, **parameters)
        return StreamJob(requests=requests, voice=voice, n_timesteps=n_timesteps, schedule=schedule,
                         seeds=[r.params.seed for r in requests], crossfade_ms=crossfade_ms, pause_ms=pause_ms,
                         trim_last_token=self.variant.trim_last_token, watermarker=watermarker)

    def astream(self, text: str, voice: VoiceLike | None = None, **options) -> AsyncIterator[np.ndarray]:
        """Speech as 24 kHz float32 pieces while T3 still decodes, for ``async for``.

        Takes the arguments of :meth:`generate_long` (but ``progress``); the text is spoken
        chunk by chunk in order with the same pauses. Bad input raises here, before anything
        runs. Any number of streams may be open at once, from any event loop; their pieces are
        vocoded together. Closing the iterator early aborts its work.
        ``schedule``: when pieces are made and how they join (default: the model's,
        ``variants.py``; a :class:`~vllm_chatterbox.s3gen.streaming.StreamSchedule`).
        The stream is watermarked as it goes (:class:`vllm_chatterbox.watermark.StreamMarker`:
        the last 0.25 s of audio so far, 0.1 s of the first piece, wait for the next piece);
        ``watermark=False`` streams it unmarked.
        """
        job = self.prepare_stream(text, voice, **options)
        return stream_audio(job, self.t3_engine, self.t3, self.s3gen, self._stream_vocoder)

    def stream(self, text: str, voice: VoiceLike | None = None, **options) -> Iterator[np.ndarray]:
        """:meth:`astream` for synchronous code: a generator of 24 kHz float32 pieces."""
        pieces = self.astream(text, voice, **options)
        return self.t3_engine.iterate_in_loop(pieces)

    def _stream_schedule(self, schedule: StreamSchedule | None) -> StreamSchedule:
        """The caller's schedule, checked against the model, or the model's own."""
        return check_schedule(self.variant.stream_schedule if schedule is None else schedule, self.config.flow)

    @functools.cached_property
    def _stream_vocoder(self) -> StreamVocoder:
        return StreamVocoder(self.s3gen)

    def _watermarker_for(self, watermark: bool) -> PerthWatermarker | None:
        """The Perth watermarker (on the CPU, as the original runs it) when asked for; fails
        before any synthesis when it cannot load."""
        return load_watermarker() if check_watermark_flag(watermark) else None

    def _mark(self, watermarker: PerthWatermarker | None, wav: np.ndarray) -> np.ndarray:
        return wav if watermarker is None else watermarker.mark(wav, self.config.hift.sampling_rate)

    def _synthesize(self, texts, voice, n_timesteps, parameters):
        count = len(_text_list(texts))
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, count)]
        requests = self.prepare_t3_requests(texts, voices, **parameters)
        steps = [check_timesteps(n, f" (text {i})" if count > 1 else "")
                 for i, n in enumerate(per_text("n_timesteps", self._timesteps(n_timesteps), count))]
        jobs = [AudioJob(request=r, voice=v, n_timesteps=n, seed=r.params.seed) for r, v, n in zip(requests, voices, steps)]
        for index, tokens, wav in synthesize(self.t3_engine, self.t3, self.s3gen, jobs):
            yield index, self._trim_last_token(wav, len(tokens))


def _close_parts(t3_engine: T3Engine, parts: dict) -> None:
    """Close what a ChatterboxTTS started: the worker threads of the parts made so far
    (cached properties live in ``parts``, the instance's ``__dict__``), then the engine."""
    for name in ("_stream_vocoder", "converter"):
        part = parts.get(name)
        if part is not None:
            part.close()
    t3_engine.shutdown()


def _checked_s3gen_dtype(name: str) -> str:
    """The S3Gen dtype name, validated before any engine starts."""
    from vllm_chatterbox.s3gen.model import S3GEN_DTYPES

    if not isinstance(name, str) or name not in S3GEN_DTYPES:
        raise ValueError(f"s3gen_dtype must be one of {sorted(S3GEN_DTYPES)}, got {name!r}")
    return name


def default_device() -> str:
    """Where S3Gen and the voice networks run unless told: CUDA when available."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _text_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("texts must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} must be a str, got {type(text).__name__}")
    return list(texts)
