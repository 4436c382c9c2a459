"""``vllm-chatterbox``: speak, clone a voice, or make a random-weight test model.

Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("vllm_chatterbox")

DEMO_WARNING = (
    "No --model given: using a RANDOM-WEIGHT demo model generated on this machine. "
    "It produces noise, not speech. Pass --model ResembleAI/chatterbox (or a local directory) for real speech."
)
DEMO_MAX_NEW_TOKENS = 150  # 6 s of audio


def _demo_model_dir(multilingual: bool = False) -> Path:
    from vllm_chatterbox.t3.engine import cache_root
    from vllm_chatterbox.test_model import make_test_model

    directory = cache_root() / ("demo-tiny-multilingual" if multilingual else "demo-tiny")
    if not (directory / "conds.pt").exists():
        make_test_model(directory, "tiny", seed=0, multilingual=multilingual)
    return directory


def _model_files(model: str | None, args):
    """The model's files: the demo model without --model, else a local directory or a hub repo."""
    from vllm_chatterbox.model_files import ModelFiles, download

    multilingual = args.multilingual or args.t3_version is not None
    if model is None:
        logger.warning(DEMO_WARNING)
        return ModelFiles.from_dir(_demo_model_dir(multilingual), version=args.t3_version)
    if Path(model).expanduser().exists():
        # A local directory is recognised by its files unless --multilingual says so.
        return ModelFiles.from_dir(model, multilingual=multilingual or None, version=args.t3_version)
    path = download(model, multilingual=multilingual, version=args.t3_version)
    return ModelFiles.from_dir(path, multilingual=multilingual, version=args.t3_version)


def _load_model(model: str | None, args):
    from vllm_chatterbox.tts import ChatterboxTTS

    options = {}
    if args.max_num_seqs:
        options["max_num_seqs"] = args.max_num_seqs
    if model is None:
        options["max_model_len"] = 2048  # the demo model is tiny; keep its KV cache small
    return ChatterboxTTS.from_files(_model_files(model, args), **options)


def _write_wav(path: Path, wav, sample_rate: int = 24000) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav, sample_rate, subtype="PCM_16")


def cmd_speak(args) -> None:
    if (args.text is None) == (args.file is None):
        raise ValueError("give either TEXT or --file, not both")
    text = args.text
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read --file {args.file}: {exc.strerror}") from None
    if args.watermark:
        from vllm_chatterbox.engine.watermark import load_watermarker

        load_watermarker()  # fail before the model loads
    tts = _load_model(args.model, args)
    voice = tts.resolve_voice(args.voice) if args.voice else None
    params = {
        "exaggeration": args.exaggeration, "cfg_weight": args.cfg_weight, "temperature": args.temperature,
        "top_p": args.top_p, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
        "seed": args.seed, "n_timesteps": args.n_timesteps, "language": args.language,
        "watermark": args.watermark,
    }
    if args.max_new_tokens is not None:
        params["max_new_tokens"] = args.max_new_tokens
    elif args.model is None:
        # Random weights rarely emit the stop token; keep the demo short.
        params["max_new_tokens"] = DEMO_MAX_NEW_TOKENS
    if args.file is not None or len(text) > 300:
        wav = tts.generate_long(text, voice, **params)
    else:
        wav = tts.generate(text, voice, **params)[0]
    _write_wav(Path(args.output), wav)
    logger.info("wrote %s (%.2f s of audio)", args.output, len(wav) / 24000)
    if args.model is None:
        logger.warning("reminder: %s was made with random weights (noise, not speech)", args.output)


def cmd_voice(args) -> None:
    from vllm_chatterbox.tts import default_device, model_config
    from vllm_chatterbox.voice.builder import VoiceBuilder

    # Cloning needs only the voice networks: no vLLM engine is started.
    files = _model_files(args.model, args)
    builder = VoiceBuilder.from_files(files.voice_encoder, files.s3gen, model_config(files), device=default_device())
    voice = builder.build(args.audio, exaggeration=args.exaggeration)
    voice.save(args.output)
    logger.info("wrote voice %s", args.output)


def cmd_make_test_model(args) -> None:
    from vllm_chatterbox.test_model import make_test_model

    make_test_model(args.directory, args.size, args.seed, multilingual=args.multilingual)
    logger.info("wrote a random-weight %s%s model to %s", args.size, " multilingual" if args.multilingual else "",
                args.directory)


def cmd_serve(args) -> None:
    from vllm_chatterbox.server.app import ServerSettings, run_server
    from vllm_chatterbox.server.backend import SpeechBackend
    from vllm_chatterbox.t3.engine import cache_root
    from vllm_chatterbox.tts import ChatterboxTTS

    settings = ServerSettings(
        voices_dir=Path(args.voices_dir) if args.voices_dir else cache_root() / "voices",
        model_name=args.served_model_name, api_key=args.api_key or os.environ.get("VLLM_CHATTERBOX_API_KEY") or None,
        max_queue=args.max_queue, max_input_chars=args.max_input_chars,
        max_voice_bytes=int(args.max_voice_mb * (1 << 20)), max_voice_seconds=args.max_voice_seconds,
    )
    options = {name: getattr(args, name) for name in ("max_num_seqs", "max_model_len") if getattr(args, name)}
    if args.kv_cache_gib:
        options["kv_cache_memory_bytes"] = int(args.kv_cache_gib * (1 << 30))
    if args.model is None:
        options.setdefault("max_model_len", 2048)  # the demo model is tiny; keep its KV cache small

    def load_backend(metrics):
        tts = ChatterboxTTS.from_files(_model_files(args.model, args), **options)
        # Random weights rarely emit the stop token; the demo keeps each chunk short.
        cap = args.max_new_tokens or (DEMO_MAX_NEW_TOKENS if args.model is None else None)
        return SpeechBackend(tts, metrics, max_new_tokens=cap)

    logger.info("serving on http://%s:%d (the engine loads in the background; /health says when it is ready)",
                args.host, args.port)
    run_server(settings, load_backend, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-chatterbox", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show vLLM's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    speak = sub.add_parser("speak", help="text to a .wav file")
    speak.add_argument("text", nargs="?", help="text to speak (or use --file)")
    speak.add_argument("--file", help="a UTF-8 text file to speak (long text is split into chunks)")
    speak.add_argument("-o", "--output", required=True, help="output .wav (24 kHz)")
    speak.add_argument("--voice", help="reference audio (.wav/.flac/.mp3/.ogg) or a saved voice (.pt)")
    speak.add_argument("--language", help="language id of the text, e.g. es, en, fr (required by the "
                                          "multilingual model; the English model takes only en)")
    speak.add_argument("--exaggeration", type=float, default=0.5)
    speak.add_argument("--cfg-weight", type=float, default=0.5)
    speak.add_argument("--temperature", type=float, default=0.8)
    speak.add_argument("--top-p", type=float, default=1.0)
    speak.add_argument("--min-p", type=float, default=0.05)
    speak.add_argument("--repetition-penalty", type=float, default=1.2)
    speak.add_argument("--max-new-tokens", type=int, default=None)
    speak.add_argument("--n-timesteps", type=int, default=10, help="flow-matching steps of S3Gen")
    speak.add_argument("--seed", type=int, default=None)
    speak.add_argument("--watermark", action="store_true",
                       help="mark the audio with Perth as the original does (needs resemble-perth + torchaudio)")
    speak.set_defaults(func=cmd_speak)

    voice = sub.add_parser("voice", help="clone a voice from reference audio into a .pt voice file")
    voice.add_argument("audio")
    voice.add_argument("-o", "--output", required=True)
    voice.add_argument("--exaggeration", type=float, default=0.5)
    voice.set_defaults(func=cmd_voice)

    serve = sub.add_parser("serve", help="an OpenAI-compatible speech server (/v1/audio/speech, voices, "
                                         "streaming, metrics, demo page at /)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health and the "
                                         "demo page (default: $VLLM_CHATTERBOX_API_KEY; unset: no key)")
    serve.add_argument("--voices-dir", help="where uploaded voices are stored (default: the user cache dir)")
    serve.add_argument("--served-model-name", default="chatterbox", help="the model id clients see")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="speech requests admitted at once (running + waiting); beyond it 429 + Retry-After")
    serve.add_argument("--max-input-chars", type=int, default=4096)
    serve.add_argument("--max-voice-mb", type=float, default=20.0, help="largest voice upload")
    serve.add_argument("--max-voice-seconds", type=float, default=60.0, help="longest voice reference")
    serve.add_argument("--max-new-tokens", type=int, default=None,
                       help="most speech tokens per text chunk a request may ask for, and the default (demo model: "
                            f"{DEMO_MAX_NEW_TOKENS})")
    serve.add_argument("--max-model-len", type=int, default=None, help="vLLM context length (engine option)")
    serve.add_argument("--kv-cache-gib", type=float, default=None,
                       help="vLLM KV cache size on CPU (engine option; default 2)")
    serve.set_defaults(func=cmd_serve)

    for command in (speak, voice, serve):
        command.add_argument("--model", help="model directory or hub repo id (default: random demo model)")
        command.add_argument("--max-num-seqs", type=int, default=None, help="vLLM concurrent sequences")
        command.add_argument("--multilingual", action="store_true",
                             help="the multilingual model (23 languages) for a hub repo id or the demo model "
                                  "(a local directory is recognised by its files)")
        command.add_argument("--t3-version", choices=("v2", "v3"), default=None,
                             help="multilingual T3 version (default v2); implies --multilingual")

    make = sub.add_parser("make-test-model", help="write a random-weight model in the official layout")
    make.add_argument("directory")
    make.add_argument("--size", choices=("tiny", "full"), default="tiny")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--multilingual", action="store_true", help="the multilingual layout (23 languages)")
    make.set_defaults(func=cmd_make_test_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        logging.getLogger("vllm").setLevel(logging.ERROR)
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError, ImportError) as exc:  # ImportError: an optional language package
        print(f"vllm-chatterbox: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
