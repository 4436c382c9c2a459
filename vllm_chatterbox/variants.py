"""The released Chatterbox models, side by side: one row per variant.

Every difference between English, multilingual, Turbo and Nano above the files on disk
(``model_files.py``) is a field of :class:`ModelVariant`: the configuration, the text encoder
(tokenizer), the T3 architecture's client and engine spec (``t3/llama``, ``t3/gpt2``; the client
carries the speech-token clean-up, one-shot and streaming), S3Gen's default number of steps, the
voice-cloning options, how a stream cuts its speech into pieces, and what the audio path does
differently. ``ChatterboxTTS`` and the CLI
read them here. Adding a model is a row; adding a T3 architecture is a package beside ``t3/llama``
and ``t3/gpt2`` and a :class:`T3Architecture` for its rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from vllm_chatterbox.config import CONFIG_FILE_NAME, ChatterboxConfig, turbo_config
from vllm_chatterbox.model_files import MULTILINGUAL_TEXT_VOCAB_SIZE, ModelFiles
from vllm_chatterbox.s3gen.streaming import StreamSchedule
from vllm_chatterbox.t3.contract import T3Client, T3EngineSpec, TextEncoder
from vllm_chatterbox.t3.gpt2.client import GPT2T3Client, GPT2TextEncoder
from vllm_chatterbox.t3.gpt2.engine_spec import GPT2EngineSpec
from vllm_chatterbox.t3.llama.client import LlamaT3Client, LlamaTextEncoder
from vllm_chatterbox.t3.llama.engine_spec import LlamaEngineSpec
from vllm_chatterbox.text import EnglishTokenizer, MultilingualTokenizer
from vllm_chatterbox.text.turbo import TurboTokenizer
from vllm_chatterbox.voice.builder import VoiceOptions, original_voice_options, turbo_voice_options


@dataclass(frozen=True)
class T3Architecture:
    """A T3 architecture's pieces (``t3/llama/``, ``t3/gpt2/``; see ``t3/contract.py``)."""

    t3_config: Callable[[ChatterboxConfig], Any]  # its part of the model's configuration
    client: Callable[[Path, TextEncoder], T3Client]  # (T3 weights, text encoder) -> client
    engine_spec: Callable[[Any], T3EngineSpec]  # (its configuration) -> what the engine needs


LLAMA = T3Architecture(t3_config=attrgetter("t3"), client=LlamaT3Client.from_file, engine_spec=LlamaEngineSpec)
GPT2 = T3Architecture(t3_config=attrgetter("turbo_t3"), client=GPT2T3Client.from_file, engine_spec=GPT2EngineSpec)


@dataclass(frozen=True)
class ModelVariant:
    name: str
    t3: T3Architecture
    # The model's configuration (``chatterbox_config.json`` over the variant's released values), checked.
    config: Callable[[ModelFiles], ChatterboxConfig]
    text_encoder: Callable[[ModelFiles, ChatterboxConfig], TextEncoder]  # from the tokenizer files
    n_timesteps: int  # S3Gen's default steps: the CFM's 10, the meanflow decoder's 2
    voice_options: Callable[[ChatterboxConfig], VoiceOptions]
    voice_exaggeration: float  # default of a cloned voice (Turbo stores it and ignores it)
    # The multilingual model (at the original's HEAD) drops the last speech token's audio.
    trim_last_token: bool = False
    # When a stream (``stream`` / ``astream``) makes its audio pieces and how they join.
    stream_schedule: StreamSchedule = StreamSchedule()

    def t3_client(self, files: ModelFiles, config: ChatterboxConfig) -> T3Client:
        return self.t3.client(files.t3, self.text_encoder(files, config))

    def engine_spec(self, config: ChatterboxConfig) -> T3EngineSpec:
        return self.t3.engine_spec(self.t3.t3_config(config))


def _original_config(files: ModelFiles) -> ChatterboxConfig:
    return ChatterboxConfig.for_model_dir(files.directory)


def _multilingual_config(files: ModelFiles) -> ChatterboxConfig:
    """The directory's configuration with the multilingual text vocabulary, checked against the
    checkpoint (the released files carry no configuration)."""
    from safetensors import safe_open

    config = _original_config(files)
    with safe_open(str(files.t3), framework="pt") as f:
        if "text_emb.weight" not in f.keys():
            raise ValueError(f"{files.t3}: not a T3 checkpoint (no text_emb.weight)")
        rows = f.get_slice("text_emb.weight").get_shape()[0]
    if rows != MULTILINGUAL_TEXT_VOCAB_SIZE:
        raise ValueError(
            f"{files.t3}: text_emb.weight has {rows} rows, but the multilingual T3 (v2/v3) has a text "
            f"vocabulary of {MULTILINGUAL_TEXT_VOCAB_SIZE}; is this the right file?"
        )
    return dataclasses.replace(config, t3=dataclasses.replace(config.t3, text_vocab_size=rows))


def _turbo_config(files: ModelFiles) -> ChatterboxConfig:
    if (files.directory / CONFIG_FILE_NAME).exists():
        config = ChatterboxConfig.for_model_dir(files.directory)
    else:
        config = turbo_config(nano=files.variant == "nano")
    if not config.estimator.meanflow:
        raise ValueError(f"{files.directory}: chatterbox_config.json must set estimator.meanflow for "
                         f"the {files.variant} model")
    return config


def _english_text(files: ModelFiles, config: ChatterboxConfig) -> LlamaTextEncoder:
    return LlamaTextEncoder(EnglishTokenizer.from_file(files.tokenizer), config.t3)


def _multilingual_text(files: ModelFiles, config: ChatterboxConfig) -> LlamaTextEncoder:
    return LlamaTextEncoder(MultilingualTokenizer.from_file(files.tokenizer), config.t3)


def _turbo_text(files: ModelFiles, config: ChatterboxConfig) -> GPT2TextEncoder:
    tokenizer = TurboTokenizer.from_dir(files.tokenizer, config.turbo_t3.text_vocab_size)
    return GPT2TextEncoder(tokenizer, config.turbo_t3, label=files.variant)


# Turbo / Nano's pieces: the meanflow decoder's 2 single-row steps cost a tenth of the CFM's 10
# steps x 2 CFG rows, so the time to first audio is T3's first tokens plus one pass over the voice's
# S3Gen prompt and the piece (2 CPU cores: 0.8 s with a 4 s reference, 2 s with 10 s). Join quality does not depend on the sizes: full-size random meanflow
# S3Gen, 150 tokens, waveform SNR to the one-shot 42.1-42.8 dB and mel mean |delta| 0.060-0.068 for
# first pieces of 8-15 tokens and overlaps of 4-8 frames (bench/s3gen_stream.py --variant turbo).
# First audio at one stream, full-size random Turbo, 2 CPU cores (bench/stream.py --variant turbo
# --chunk-tokens ...): 3.9 s after 8 tokens, 4.5 s after 10, 5.3 s after 15. 10 it is: 8 tokens
# leave 5 past the 3-token look-ahead, 4 mel frames after the held overlap (80 ms); less the 50 ms
# the text joiner keeps for a crossfade, 30 ms go out, 20 ms of them the start fade's silence, so
# that "first audio" is not heard. 10 give 160 ms (110 ms out). Pieces then double up to 80
# tokens: fewer re-reads of the voice prompt per second of audio.
MEANFLOW_STREAM_SCHEDULE = StreamSchedule(chunk_tokens=(10, 20, 40, 80))

VARIANTS: dict[str, ModelVariant] = {
    "english": ModelVariant("english", LLAMA, _original_config, _english_text, n_timesteps=10,
                            voice_options=original_voice_options, voice_exaggeration=0.5),
    "multilingual": ModelVariant("multilingual", LLAMA, _multilingual_config, _multilingual_text, n_timesteps=10,
                                 voice_options=original_voice_options, voice_exaggeration=0.5, trim_last_token=True),
    "turbo": ModelVariant("turbo", GPT2, _turbo_config, _turbo_text, n_timesteps=2,
                          voice_options=turbo_voice_options, voice_exaggeration=0.0,
                          stream_schedule=MEANFLOW_STREAM_SCHEDULE),
    "nano": ModelVariant("nano", GPT2, _turbo_config, _turbo_text, n_timesteps=2,
                         voice_options=turbo_voice_options, voice_exaggeration=0.0,
                         stream_schedule=MEANFLOW_STREAM_SCHEDULE),
}


def model_variant(files: ModelFiles) -> ModelVariant:
    """The row of ``files``'s model."""
    if files.is_turbo:
        return VARIANTS[files.variant]
    return VARIANTS["multilingual" if files.multilingual else "english"]


def model_config(files: ModelFiles) -> ChatterboxConfig:
    """The configuration of ``files``'s model (see :attr:`ModelVariant.config`)."""
    return model_variant(files).config(files)
