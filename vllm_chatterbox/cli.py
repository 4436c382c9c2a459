"""``vllm-chatterbox``: speak, convert a voice, clone a voice, detect the watermark, serve, or make a
random-weight test model.

Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from vllm_chatterbox.config import CPU_SHARING_MODES, S3GEN_SAMPLE_RATE, T3_DTYPES, CpuThreads

logger = logging.getLogger("vllm_chatterbox")

DEMO_WARNING = (
    "No --model given: using a RANDOM-WEIGHT demo model generated on this machine. "
    "It produces noise, not speech. Pass --model ResembleAI/chatterbox (or a local directory) for real speech."
)
DEMO_MAX_NEW_TOKENS = 150  # 6 s of audio
# The demo model's KV cache: it needs about 1 KiB a token (256k tokens here); vLLM's CPU default
# (2 GiB, allocated and zeroed at start) cost the demo a second or two of a core and 2 GiB of memory.
DEMO_MAX_MODEL_LEN = 2048
DEMO_KV_CACHE_BYTES = 256 << 20


def _demo_model_dir(multilingual: bool = False, variant: str | None = None) -> Path:
    from vllm_chatterbox.config import cache_root
    from vllm_chatterbox.demo_model import cached_test_model

    if variant in ("turbo", "nano"):
        directory = cache_root() / f"demo-tiny-{variant}"
    else:
        directory = cache_root() / ("demo-tiny-multilingual" if multilingual else "demo-tiny")
    return cached_test_model(directory, "tiny", seed=0, multilingual=multilingual, variant=variant or "original")


def _model_files(model: str | None, args):
    """The model's files: the demo model without --model, else a local directory or a hub repo."""
    from vllm_chatterbox.model_files import ModelFiles, download, is_hub_repo_id

    multilingual = args.multilingual or args.t3_version is not None
    variant = args.variant
    if model is None:
        logger.warning(DEMO_WARNING)
        files = ModelFiles.from_dir(_demo_model_dir(multilingual, variant), version=args.t3_version, variant=variant)
    elif Path(model).expanduser().exists():
        # A local directory is recognised by its files unless --multilingual / --variant says so.
        files = ModelFiles.from_dir(model, multilingual=multilingual or None, version=args.t3_version, variant=variant)
    elif not is_hub_repo_id(model):
        raise ValueError(f"model directory not found: {Path(model).expanduser()} "
                         "(a hub model is named like ResembleAI/chatterbox)")
    else:
        try:
            path = download(model, multilingual=multilingual, version=args.t3_version, variant=variant)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} (there is no local directory {model!r} either)") from None
        files = ModelFiles.from_dir(path, multilingual=multilingual, version=args.t3_version, variant=variant)
    files.check_readable()
    return files


def _load_model(files, args):
    from vllm_chatterbox.tts import ChatterboxTTS

    options = {"dtype": args.dtype, "t3_threads": args.t3_threads, "s3gen_threads": args.s3gen_threads,
               "cpu_sharing": args.cpu_sharing}
    if args.max_num_seqs:
        options["max_num_seqs"] = args.max_num_seqs
    if args.model is None:  # the demo model is tiny; keep its KV cache small
        options.update(max_model_len=DEMO_MAX_MODEL_LEN, kv_cache_memory_bytes=DEMO_KV_CACHE_BYTES)
    return ChatterboxTTS.from_files(files, s3gen_dtype=args.s3gen_dtype, **options)


def _speak_text(args) -> str:
    from vllm_chatterbox.text import check_text

    if (args.text is None) == (args.file is None):
        raise ValueError("give the text to speak as TEXT or --file FILE")
    text = args.text
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"--file {args.file} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ValueError(f"cannot read --file {args.file}: {exc.strerror}") from None
    return check_text(text)


def _speak_params(args) -> dict:
    """The generation parameters, checked exactly as generate checks them."""
    from vllm_chatterbox.params import check_timesteps, t3_params
    from vllm_chatterbox.text import check_language

    # Options left unset take the model's own defaults (Turbo's differ from the original's).
    given = {
        "exaggeration": args.exaggeration, "cfg_weight": args.cfg_weight, "temperature": args.temperature,
        "top_p": args.top_p, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
    }
    params = {name: value for name, value in given.items() if value is not None}
    params["seed"] = args.seed
    if args.max_new_tokens is not None:
        params["max_new_tokens"] = args.max_new_tokens
    elif args.model is None:
        # Random weights rarely emit the stop token; keep the demo short.
        params["max_new_tokens"] = DEMO_MAX_NEW_TOKENS
    # The ranges are those of every model (Turbo's top_k is checked by its client).
    t3_params(1, params)
    if args.n_timesteps is not None:
        params["n_timesteps"] = check_timesteps(args.n_timesteps)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    if args.language is not None:
        check_language(args.language)
    return {**params, "language": args.language, "watermark": args.watermark}


def _speak_voice(voice: str | None, files):
    """A saved voice loaded and checked, or a reference clip decoded and checked (it is cloned
    once the model is loaded)."""
    from vllm_chatterbox.variants import model_config
    from vllm_chatterbox.voice.audio import load_audio
    from vllm_chatterbox.voice.voice import Voice

    if voice is None:
        return None
    if Path(voice).suffix == ".pt":
        return Voice.load(voice).check_dims(model_config(files))
    load_audio(voice)
    return voice


def _check_text_tokens(text: str, files, language: str | None, long_text: bool) -> None:
    """Text the model's text encoder accepts (language, length) before any engine starts."""
    from vllm_chatterbox.variants import model_config, model_variant

    text_encoder = model_variant(files).text_encoder(files, model_config(files))
    if long_text:
        # Long text is split into chunks later; checking one short piece checks the language.
        text_encoder.count_text_tokens(text.strip()[:300], language)
    else:
        # Characters that become [UNK] are named once, when the model speaks the text.
        text_encoder.text_token_ids(text, language, unknown=set())


def cmd_speak(args) -> None:
    from vllm_chatterbox.outputs import AUDIO_FORMATS, check_output_path, write_audio

    # Everything that can be checked is checked before the model (and vLLM) starts.
    output = check_output_path(args.output, tuple(AUDIO_FORMATS))
    text = _speak_text(args)
    params = _speak_params(args)
    CpuThreads(t3=args.t3_threads, s3gen=args.s3gen_threads, sharing=args.cpu_sharing)
    if args.watermark:
        from vllm_chatterbox.watermark import load_watermarker

        load_watermarker()  # a missing resemble-perth fails here, before the model loads
    files = _model_files(args.model, args)
    if "top_k" in params and not files.is_turbo:
        raise ValueError("--top-k is a Turbo / Nano option; this model samples with top_p and min_p")
    voice = _speak_voice(args.voice, files)
    long_text = args.file is not None or len(text) > 300
    _check_text_tokens(text, files, args.language, long_text)

    with _load_model(files, args) as tts:
        voice = tts.resolve_voice(voice)
        if args.stream:
            samples = _speak_streaming(tts, text, voice, params, output)
        else:
            if long_text:
                wav = tts.generate_long(text, voice, **params)
            else:
                wav = tts.generate(text, voice, **params)[0]
            write_audio(output, wav, S3GEN_SAMPLE_RATE)
            samples = len(wav)
    logger.info("wrote %s (%.2f s of audio)", output, samples / S3GEN_SAMPLE_RATE)
    if args.model is None:
        logger.warning("reminder: %s was made with random weights (noise, not speech)", output)


def _speak_streaming(tts, text: str, voice, params: dict, output: Path) -> int:
    """Write the pieces of ``tts.stream`` as they come; returns the samples written."""
    return _write_streaming(tts.stream(text, voice, **params), output)


def _write_streaming(pieces, output: Path) -> int:
    """Write 24 kHz pieces as they come (to a temporary file renamed into place at the end); logs
    the time to first audio. Returns the samples written."""
    import time

    import soundfile

    from vllm_chatterbox.outputs import AUDIO_FORMATS, atomic_output

    started = time.monotonic()
    samples = 0
    with atomic_output(output) as temporary, soundfile.SoundFile(
            str(temporary), "w", S3GEN_SAMPLE_RATE, 1, subtype="PCM_16",
            format=AUDIO_FORMATS[output.suffix.lower()]) as sink:
        for piece in pieces:
            if samples == 0:
                logger.info("time to first audio: %.2f s", time.monotonic() - started)
            sink.write(piece)
            samples += piece.size
    return samples


def cmd_convert(args) -> None:
    from vllm_chatterbox.conversion.converter import VoiceConverter, check_voice_for, model_config
    from vllm_chatterbox.conversion.source import SOURCE_SAMPLE_RATE, check_max_piece_seconds, load_source
    from vllm_chatterbox.outputs import AUDIO_FORMATS, check_output_path
    from vllm_chatterbox.params import check_seed, check_timesteps
    from vllm_chatterbox.voice.audio import load_audio
    from vllm_chatterbox.voice.voice import Voice

    # Everything is checked before any model loads; only S3Gen and the voice networks load (no T3).
    output = check_output_path(args.output, tuple(AUDIO_FORMATS))
    options = {"seed": check_seed(args.seed), "max_piece_seconds": check_max_piece_seconds(args.max_piece_seconds)}
    if args.n_timesteps is not None:
        options["n_timesteps"] = check_timesteps(args.n_timesteps)
    if args.watermark:
        from vllm_chatterbox.watermark import load_watermarker

        load_watermarker()  # a missing resemble-perth fails here, before the model loads
    try:
        source = load_source(args.source)  # decoded once: readable, not silent, long enough, at most an hour
    except ValueError as exc:
        raise ValueError(str(exc) if str(args.source) in str(exc) else f"source {args.source}: {exc}") from None
    files = _model_files(args.model, args)
    voice = args.voice
    if voice is not None and Path(voice).suffix == ".pt":
        voice = check_voice_for(model_config(files), Voice.load(voice), voice)
    elif voice is not None:
        load_audio(voice)

    converter = VoiceConverter.from_files(files, s3gen_dtype=args.s3gen_dtype)
    try:
        samples = _convert(converter, source, voice, options, output, args.watermark, args.stream)
    finally:
        converter.close()
    logger.info("wrote %s (%.2f s of audio from %.2f s of source)", output, samples / S3GEN_SAMPLE_RATE,
                len(source) / SOURCE_SAMPLE_RATE)
    if args.model is None:
        logger.warning("reminder: %s was made with random weights (noise, not speech)", output)


def _convert(converter, source, voice, options: dict, output: Path, watermark: bool, stream: bool) -> int:
    from vllm_chatterbox.conversion.source import SOURCE_SAMPLE_RATE
    from vllm_chatterbox.outputs import write_audio

    if stream:
        return _write_streaming(converter.convert_stream(source, voice, sample_rate=SOURCE_SAMPLE_RATE,
                                                         watermark=watermark, **options),
                                output)
    wav = converter.convert(source, voice, sample_rate=SOURCE_SAMPLE_RATE, watermark=watermark, **options)
    write_audio(output, wav, S3GEN_SAMPLE_RATE)
    return len(wav)


def cmd_voice(args) -> None:
    from vllm_chatterbox.outputs import VOICE_SUFFIXES, check_output_path
    from vllm_chatterbox.tts import default_device
    from vllm_chatterbox.variants import model_config, model_variant
    from vllm_chatterbox.voice.builder import VoiceBuilder
    from vllm_chatterbox.voice.voice import check_exaggeration

    output = check_output_path(args.output, VOICE_SUFFIXES)
    exaggeration = check_exaggeration(args.exaggeration)
    # Cloning needs only the voice networks: no vLLM engine is started.
    files = _model_files(args.model, args)
    config = model_config(files)
    builder = VoiceBuilder.from_files(files.voice_encoder, files.s3gen, config, device=default_device(),
                                      options=model_variant(files).voice_options(config))
    voice = builder.build(args.audio, exaggeration=exaggeration)
    voice.save(output)
    logger.info("wrote voice %s", output)


def cmd_detect(args) -> int:
    """One line per file on stdout: path, confidence, verdict; one error line per unreadable file."""
    from vllm_chatterbox.watermark import detect_file, load_watermarker

    load_watermarker()  # a missing resemble-perth is one error, not one per file
    failed = unmarked = False
    for path in args.files:
        try:
            detection = detect_file(path)
        except ValueError as exc:
            print(f"vllm-chatterbox: error: {_one_line(exc)}", file=sys.stderr)
            failed = True
            continue
        unmarked = unmarked or not detection.marked
        print(f"{path}\t{detection.confidence:.4f}\t{'marked' if detection.marked else 'unmarked'}", flush=True)
    return 2 if failed else 1 if unmarked else 0


def cmd_make_test_model(args) -> None:
    from vllm_chatterbox.demo_model import make_test_model

    make_test_model(args.directory, args.size, args.seed, multilingual=args.multilingual, variant=args.variant)
    kind = " multilingual" if args.multilingual else "" if args.variant == "original" else f" {args.variant}"
    logger.info("wrote a random-weight %s%s model to %s", args.size, kind, args.directory)


def _server_setup(args):
    """The server's settings and its backend loader (run where the engine lives: this process, or
    each Ray replica, which gets the loader pickled)."""
    from vllm_chatterbox.config import cache_root
    from vllm_chatterbox.server.backend import SpeechBackend
    from vllm_chatterbox.server.settings import ServerSettings
    from vllm_chatterbox.tts import ChatterboxTTS

    settings = ServerSettings(
        voices_dir=Path(args.voices_dir) if args.voices_dir else cache_root() / "voices",
        model_name=args.served_model_name, api_key=args.api_key or os.environ.get("VLLM_CHATTERBOX_API_KEY") or None,
        max_queue=args.max_queue, max_input_chars=args.max_input_chars,
        max_voice_bytes=int(args.max_voice_mb * (1 << 20)), max_voice_seconds=args.max_voice_seconds,
        max_convert_bytes=int(args.max_convert_mb * (1 << 20)), max_convert_seconds=args.max_convert_seconds,
        watermark=args.watermark,
    )
    CpuThreads(t3=args.t3_threads, s3gen=args.s3gen_threads, sharing=args.cpu_sharing)
    options = {name: getattr(args, name) for name in ("max_num_seqs", "max_model_len") if getattr(args, name)}
    options.update(dtype=args.dtype, t3_threads=args.t3_threads, s3gen_threads=args.s3gen_threads,
                   cpu_sharing=args.cpu_sharing)
    if args.kv_cache_gib:
        options["kv_cache_memory_bytes"] = int(args.kv_cache_gib * (1 << 30))
    if args.model is None:  # the demo model is tiny; keep its KV cache small
        options.setdefault("max_model_len", DEMO_MAX_MODEL_LEN)
        options.setdefault("kv_cache_memory_bytes", DEMO_KV_CACHE_BYTES)
    from vllm_chatterbox.watermark import load_watermarker

    # Marking and the detection endpoint need it: a missing resemble-perth fails here, at once.
    load_watermarker()

    def load_backend(metrics):
        tts = ChatterboxTTS.from_files(_model_files(args.model, args), s3gen_dtype=args.s3gen_dtype, **options)
        # The built-in voice's first request then skips its conditioning's prefill (Turbo / Nano).
        tts.warm_voice()
        # Random weights rarely emit the stop token; the demo keeps each chunk short.
        cap = args.max_new_tokens or (DEMO_MAX_NEW_TOKENS if args.model is None else None)
        return SpeechBackend(tts, metrics, max_new_tokens=cap, watermark=settings.watermark)

    return settings, load_backend


def _ray_scaling(args):
    try:
        from vllm_chatterbox.server.ray_serve import RayScaling
    except ModuleNotFoundError as exc:
        if exc.name != "ray" and not (exc.name or "").startswith("ray."):
            raise
        raise ImportError("serve --ray needs Ray Serve: pip install 'vllm-chatterbox[ray]'") from None

    return RayScaling(replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                      target_ongoing_requests=args.target_ongoing_requests, num_cpus=args.replica_cpus,
                      num_gpus=args.replica_gpus, max_queued_requests=args.max_queued or args.max_queue)


def cmd_serve(args) -> None:
    import logging.config

    from vllm_chatterbox.server.logs import log_config

    logging.config.dictConfig(log_config(args.log_format))  # every line of the server in one format
    settings, load_backend = _server_setup(args)
    if args.ray:
        from vllm_chatterbox.server.ray_serve import run_on_ray

        scaling = _ray_scaling(args)
        run_on_ray(settings, load_backend, scaling, host=args.host, port=args.port, address=args.ray_address)
        return
    from vllm_chatterbox.server.run import run_server

    logger.info("serving on http://%s:%d (the engine loads in the background; /health says when it is ready)",
                args.host, args.port)
    return run_server(settings, load_backend, host=args.host, port=args.port, log_format=args.log_format,
                      shutdown_timeout=args.shutdown_timeout, max_engine_restarts=args.max_engine_restarts)


def ray_application(args: dict):
    """Ray Serve's application builder for config files (``import_path:
    vllm_chatterbox.cli:ray_application``): ``args`` are ``vllm-chatterbox serve``'s options by
    their long names (``voices_dir: /shared/voices``, ``max_queue: 16``, a flag as ``true``); the
    config file's ``deployments:`` entry (name ``Chatterbox``) may override Ray's options."""
    from vllm_chatterbox.server.ray_serve import application

    flags = ["serve", "--ray"]
    for name, value in (args or {}).items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (False, None):
            flags += [flag, str(value)]
    try:
        parsed = build_parser().parse_args(flags)
    except SystemExit:  # argparse has printed why; Ray shows this instead of a bare exit
        raise ValueError(f"ray_application: bad args {args!r} (see the message above)") from None
    settings, load_backend = _server_setup(parsed)
    return application(settings, load_backend, _ray_scaling(parsed))


def _check_listen_address(host: str, port: int) -> None:
    """A valid port on a host this machine can listen on, and free now: checked before the model loads."""
    import socket

    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a port number (1 to 65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"--host {host!r} is not an address or name of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # The server sets SO_REUSEADDR as well: a port in TIME_WAIT is not refused here.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is in use") from None
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _check_output_writable(output: str) -> None:
    """The output's directory exists and the file can be opened for writing (created files are removed)."""
    path = Path(output).expanduser()
    if not path.parent.is_dir():
        raise ValueError(f"output {path}: directory {path.parent} does not exist")
    if path.is_dir():
        return  # check_output_path names this mistake
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"output {path} cannot be written: {exc.strerror}") from None
    if not existed:
        path.unlink()


def _check_input_file(option: str, value: str) -> None:
    """An input file that exists and can be read, checked before anything is imported or loaded."""
    path = Path(value).expanduser()
    if not path.exists():
        kind = "voice" if path.suffix == ".pt" else "audio"
        raise ValueError(f"{option} {path}: {kind} file not found")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{option} {path} cannot be read: {exc.strerror}") from None


def check_arguments(args) -> None:
    """The checks that need no model, no vLLM and no audio decoding, run first: an address to
    listen on, input files that exist, an output that can be written."""
    if args.command == "serve":
        _check_listen_address(args.host, args.port)
        if not 0 <= args.shutdown_timeout < float("inf"):
            raise ValueError(f"--shutdown-timeout must be a number of seconds, 0 or more, got {args.shutdown_timeout}")
        if args.max_engine_restarts < 0:
            raise ValueError(f"--max-engine-restarts must be 0 or more, got {args.max_engine_restarts}")
    if getattr(args, "voice", None) is not None:
        _check_input_file("--voice", args.voice)
    if args.command == "voice":
        _check_input_file("audio", args.audio)
    if args.command == "convert":
        _check_input_file("source", args.source)
    if getattr(args, "output", None) is not None:
        _check_output_writable(args.output)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm-chatterbox")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-chatterbox", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show vLLM's logs and the traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # -v also after the command (`serve -v`), where the error hint tells users to add it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show vLLM's logs and the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)

    speak = sub.add_parser("speak", parents=[verbose], help="text to a .wav file")
    speak.add_argument("text", nargs="?", help="text to speak (or use --file)")
    speak.add_argument("--file", help="a UTF-8 text file to speak (long text is split into chunks)")
    speak.add_argument("-o", "--output", required=True, help="output .wav or .flac (24 kHz, 16-bit)")
    speak.add_argument("--voice", help="reference audio (.wav/.flac/.mp3/.ogg) or a saved voice (.pt)")
    speak.add_argument("--language", help="language id of the text, e.g. es, en, fr (required by the "
                                          "multilingual model; the English model takes only en)")
    speak.add_argument("--exaggeration", type=float, default=None,
                       help="emotion intensity in [0, 2] (default: the voice's own, 0.5 for the built-in voice; "
                            "Turbo/Nano: ignored)")
    speak.add_argument("--cfg-weight", type=float, default=None, help="default 0.5 (Turbo/Nano: ignored)")
    speak.add_argument("--temperature", type=float, default=None, help="default 0.8")
    speak.add_argument("--top-p", type=float, default=None, help="default 1.0 (Turbo/Nano 0.95)")
    speak.add_argument("--top-k", type=int, default=None, help="Turbo/Nano only, default 1000")
    speak.add_argument("--min-p", type=float, default=None, help="default 0.05 (Turbo/Nano: ignored)")
    speak.add_argument("--repetition-penalty", type=float, default=None, help="default 1.2")
    speak.add_argument("--max-new-tokens", type=int, default=None,
                       help="most speech tokens per text chunk (25 per second of audio; default: 1000, "
                            f"demo model: {DEMO_MAX_NEW_TOKENS})")
    speak.add_argument("--n-timesteps", type=int, default=None,
                       help="flow-matching steps of S3Gen (default 10; Turbo/Nano 2)")
    speak.add_argument("--seed", type=int, default=None,
                       help="random seed: the same seed, text and voice give the same audio "
                            "(default: none, a new draw each run)")
    speak.add_argument("--watermark", action=argparse.BooleanOptionalAction, default=True,
                       help="mark the audio with Resemble AI's Perth watermark, as the original marks all its "
                            "output (default: on; --no-watermark leaves it unmarked)")
    speak.add_argument("--stream", action="store_true",
                       help="vocode while T3 decodes and write pieces as they come; logs the time to first audio")
    speak.set_defaults(func=cmd_speak)

    convert = sub.add_parser("convert", parents=[verbose],
                             help="voice conversion: the speech of SOURCE in another voice, as a .wav "
                                             "file (S3Gen only, no T3 engine)")
    convert.add_argument("source", help="the speech to convert (.wav/.flac/.mp3/.ogg, up to an hour)")
    convert.add_argument("-o", "--output", required=True, help="output .wav or .flac (24 kHz, 16-bit)")
    convert.add_argument("--voice", help="the target voice: reference audio or a saved voice (.pt); default: the "
                                         "model's built-in voice")
    convert.add_argument("--seed", type=int, default=None,
                         help="random seed of S3Gen's noise (default: none, a new draw each run)")
    convert.add_argument("--n-timesteps", type=int, default=None,
                         help="flow-matching steps of S3Gen (default 10; Turbo/Nano 2)")
    convert.add_argument("--max-piece-seconds", type=float, default=30.0,
                         help="longer sources are cut at pauses into pieces of at most this (5 to 30 s; default: 30)")
    convert.add_argument("--watermark", action=argparse.BooleanOptionalAction, default=True,
                         help="mark the audio with Resemble AI's Perth watermark, as the original marks all its "
                              "output (default: on; --no-watermark leaves it unmarked)")
    convert.add_argument("--stream", action="store_true",
                         help="write each piece as soon as it is converted; logs the time to first audio")
    convert.add_argument("--model", help="model directory or hub repo id (default: random demo model)")
    convert.add_argument("--variant", choices=("turbo", "nano"), default=None,
                         help="Chatterbox Turbo / Nano (2-step meanflow S3Gen) for a hub repo id or the demo model "
                              "(a local directory is recognised by its files)")
    convert.add_argument("--s3gen-dtype", choices=("float32", "bfloat16"), default="float32",
                         help="S3Gen precision: float32 (exact, default) or bfloat16")
    convert.set_defaults(func=cmd_convert, multilingual=False, t3_version=None)

    voice = sub.add_parser("voice", parents=[verbose],
                           help="clone a voice from reference audio into a .pt voice file")
    voice.add_argument("audio", help="reference audio of the voice (.wav/.flac/.mp3/.ogg, 5 s or more)")
    voice.add_argument("-o", "--output", required=True, help="output voice file (.pt)")
    voice.add_argument("--exaggeration", type=float, default=0.5,
                       help="the voice's emotion intensity in [0, 2], used when speaking gives none "
                            "(default: 0.5; Turbo/Nano: unused)")
    voice.set_defaults(func=cmd_voice)

    serve = sub.add_parser("serve", parents=[verbose],
                           help="an OpenAI-compatible speech server (/v1/audio/speech, voices, "
                                         "streaming, voice conversion, watermark detection, metrics, "
                                         "demo page at /)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default: 8000)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health and the "
                                         "demo page (default: $VLLM_CHATTERBOX_API_KEY; unset: no key)")
    serve.add_argument("--voices-dir", help="where uploaded voices are stored (default: the user cache dir)")
    serve.add_argument("--served-model-name", default="chatterbox",
                       help="the model id clients see (default: chatterbox)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="speech requests admitted at once (running + waiting); beyond it 429 + "
                            "Retry-After (default: 64)")
    serve.add_argument("--max-input-chars", type=int, default=4096,
                       help="longest text a request may send, in characters (default: 4096)")
    serve.add_argument("--max-voice-mb", type=float, default=20.0, help="largest voice upload in MiB (default: 20)")
    serve.add_argument("--max-voice-seconds", type=float, default=60.0,
                       help="longest voice reference in seconds (default: 60)")
    serve.add_argument("--max-convert-mb", type=float, default=50.0,
                       help="largest upload to voice conversion (the source) and watermark detection (default: 50)")
    serve.add_argument("--max-convert-seconds", type=float, default=600.0,
                       help="longest source for voice conversion and audio for watermark detection (default: 600)")
    serve.add_argument("--watermark", action=argparse.BooleanOptionalAction, default=True,
                       help="mark all audio (speech, voice conversion) with Resemble AI's Perth watermark, as "
                            "the original marks all its output (default: on; --no-watermark leaves it unmarked; "
                            "clients cannot turn it off)")
    serve.add_argument("--max-new-tokens", type=int, default=None,
                       help="most speech tokens per text chunk a request may ask for, and the default (demo model: "
                            f"{DEMO_MAX_NEW_TOKENS})")
    serve.add_argument("--max-model-len", type=int, default=None, 
                       help="vLLM context length (engine option; default: the model's, demo model 2048)")
    serve.add_argument("--kv-cache-gib", type=float, default=None,
                       help="vLLM KV cache size on CPU (engine option; default 2, demo model 0.25)")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0,
                       help="on SIGTERM or Ctrl-C, seconds the requests in flight get to finish while /health "
                            "answers 503 and new ones are refused; then what is left is cut (a second signal stops "
                            "at once; default: 30)")
    serve.add_argument("--max-engine-restarts", type=int, default=3,
                       help="restarts of a dead engine within 10 minutes, in this process after 1, 2, 4 ... s; "
                            "beyond, the server exits non-zero for its supervisor to restart it (0: exit at "
                            "once; default: 3)")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="text: uvicorn's format (default); json: one JSON object per line (log pipelines); "
                            "either way one access line per request")
    ray = serve.add_argument_group("Ray Serve (pip install 'vllm-chatterbox[ray]')")
    ray.add_argument("--ray", action="store_true",
                     help="serve through Ray Serve: replicas of this server, one model each, behind Ray's proxy on "
                          "--host/--port (a local Ray, or the cluster at --ray-address / $RAY_ADDRESS)")
    ray.add_argument("--ray-address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else local)")
    ray.add_argument("--replicas", type=int, default=1, help="replicas (each loads its own model; default: 1)")
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscale from this many replicas ...")
    ray.add_argument("--max-replicas", type=int, default=None, help="... up to this many")
    ray.add_argument("--target-ongoing-requests", type=float, default=2.0,
                     help="autoscaling: speech requests per replica to aim for (default: 2)")
    ray.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica (default: 1)")
    ray.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs Ray reserves per replica (default: 0; 1 on a "
                                                                     "GPU cluster: one replica per GPU)")
    ray.add_argument("--max-queued", type=int, default=None,
                     help="requests Ray's proxy holds once every replica has --max-queue; beyond, 429 + "
                          "Retry-After (default: --max-queue)")
    serve.set_defaults(func=cmd_serve)

    for command in (speak, serve):
        command.add_argument("--dtype", choices=T3_DTYPES, default="float32",
                             help="T3 compute dtype: float32 (default, the original's arithmetic) or bfloat16 "
                                  "(fast mode where the CPU/GPU has bf16 units; deviation measured in the README)")
    for command in (speak, voice, serve):
        command.add_argument("--model", help="model directory or hub repo id (default: random demo model)")
        command.add_argument("--max-num-seqs", type=int, default=None,
                             help="vLLM concurrent sequences (default: vLLM's)")
        command.add_argument("--multilingual", action="store_true",
                             help="the multilingual model (23 languages) for a hub repo id or the demo model "
                                  "(a local directory is recognised by its files)")
        command.add_argument("--t3-version", choices=("v2", "v3"), default=None,
                             help="multilingual T3 version (default v2); implies --multilingual")
        command.add_argument("--variant", choices=("turbo", "nano"), default=None,
                             help="Chatterbox Turbo / Nano for a hub repo id or the demo model "
                                  "(a local directory is recognised by its files)")
    for command in (speak, serve):
        command.add_argument("--s3gen-dtype", choices=("float32", "bfloat16"), default="float32",
                             help="S3Gen precision: float32 (exact, default) or bfloat16 (faster only where "
                                  "the hardware computes bf16: CUDA, AVX512-BF16/AMX CPUs)")
        command.add_argument("--t3-threads", type=int, default=None,
                             help="CPU: compute threads of the T3 engine process (default: every core)")
        command.add_argument("--s3gen-threads", type=int, default=None,
                             help="CPU: torch threads of this process, where S3Gen runs (default: torch's, every "
                                  "core); e.g. --t3-threads 1 --s3gen-threads 1 on 2 cores when T3 and S3Gen "
                                  "overlap (many texts or streams)")
        command.add_argument("--cpu-sharing", choices=CPU_SHARING_MODES, default=None,
                             help="CPU: alternate: the T3 engine holds its steps while S3Gen computes (time-sharing); "
                                  "overlap: both compute at once (default: alternate when --t3-threads plus "
                                  "--s3gen-threads exceed the cores, as with the defaults; overlap when they split them)")

    detect = sub.add_parser(
        "detect", parents=[verbose], help="tell whether audio files carry the Perth watermark",
        description="Prints one line per file: path, the detector's confidence (0..1) and its verdict, "
                    "'marked' above 0.5 as the original's rounded answer, else 'unmarked' (tab-separated). "
                    "Unreadable files get one error line on stderr. Exit status: 0 every file marked, "
                    "1 every file read and at least one unmarked, 2 a file could not be read.")
    detect.add_argument("files", nargs="+", metavar="FILE",
                        help="wav, flac, ogg/opus, mp3 (and aac, m4a, ... when PyAV is installed)")
    detect.set_defaults(func=cmd_detect)

    make = sub.add_parser("make-test-model", parents=[verbose],
                          help="write a random-weight model in the official layout")
    make.add_argument("directory", help="where to write the model (created if missing)")
    make.add_argument("--size", choices=("tiny", "full"), default="tiny",
                      help="tiny: a small fast model for tests (default); full: the released model's "
                           "shapes, for benchmarks")
    make.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    make.add_argument("--multilingual", action="store_true", help="the multilingual layout (23 languages)")
    make.add_argument("--variant", choices=("original", "turbo", "nano"), default="original",
                      help="Chatterbox Turbo / Nano layout (GPT-2 T3, meanflow S3Gen; default: original)")
    make.set_defaults(func=cmd_make_test_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vllm_chatterbox.server.logs import StderrHandler

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", handlers=[StderrHandler()])
    try:
        check_arguments(args)
    except ValueError as exc:
        print(f"vllm-chatterbox: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")  # vLLM's own lines (the library keeps them off)
    try:
        status = args.func(args)
    except (ValueError, RuntimeError, OSError, ImportError) as exc:  # ImportError: an optional language package
        print(f"vllm-chatterbox: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a failure we did not foresee: still one line, the traceback on -v
        if args.verbose:
            raise
        print(f"vllm-chatterbox: error: {type(exc).__name__}: {_one_line(exc)} (run with -v for details)",
              file=sys.stderr)
        return 2
    return status or 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
