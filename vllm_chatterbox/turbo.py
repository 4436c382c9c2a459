"""Chatterbox Turbo / Nano behind the same public API as :class:`~vllm_chatterbox.tts.ChatterboxTTS`.

``ChatterboxTTS.from_dir`` / ``from_pretrained(variant="turbo"|"nano")`` return this class for the
Turbo / Nano layouts. What differs from the original model, as in ``tts_turbo.py``:
- text: Turbo's ``punc_norm`` and the checkpoint's GPT-2 tokenizer (paralinguistic tags such as
  ``[laugh]`` are single tokens); no language choice;
- T3: GPT-2 without CFG; sampling temperature -> top-k -> top-p -> repetition penalty (defaults
  0.8, 1000, 0.95, 1.2); ``cfg_weight``, ``exaggeration`` and ``min_p`` are ignored with a
  warning when > 0 (:mod:`vllm_chatterbox.t3.turbo_client`);
- speech tokens: T3's ids < 6561 followed by three silence tokens (4299), as the original
  hands them to S3Gen (``generate_speech_tokens`` returns them so);
- S3Gen: the 2-step meanflow decoder (``n_timesteps`` default 2);
- voices: references longer than 5 s, loudness-normalised to -27 LUFS (``norm_loudness``).
Streaming (``stream`` / ``astream``) is not available for these models yet.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.model_files import ModelFiles
from vllm_chatterbox.t3.turbo_client import TurboT3Client
from vllm_chatterbox.t3.turbo_engine import TurboT3Engine
from vllm_chatterbox.text.turbo import TurboTokenizer
from vllm_chatterbox.tts import ChatterboxTTS, _checked_s3gen_dtype
from vllm_chatterbox.voice.voice import Voice

DEFAULT_N_TIMESTEPS = 2


class ChatterboxTurboTTS(ChatterboxTTS):
    def __init__(self, files: ModelFiles, config: ChatterboxConfig, engine_options: dict[str, Any],
                 device: str | torch.device = "cpu", s3gen_dtype: str = "float32"):
        if not config.estimator.meanflow:
            raise ValueError(f"{files.directory}: chatterbox_config.json must set estimator.meanflow for "
                             f"the {files.variant} model")
        self.files = files
        self.config = config
        self.device = torch.device(device)
        self.s3gen_dtype = _checked_s3gen_dtype(s3gen_dtype)
        tokenizer = TurboTokenizer.from_dir(files.tokenizer, config.turbo_t3.text_vocab_size)
        self.t3 = TurboT3Client.from_file(files.t3, tokenizer, config.turbo_t3, label=files.variant)
        self.builtin_voice = Voice.load(files.conds)
        self.t3_engine = TurboT3Engine(files.t3, config.turbo_t3, **engine_options)

    @functools.cached_property
    def voice_builder(self):
        from vllm_chatterbox.voice.builder import VoiceBuilder

        return VoiceBuilder.from_files(self.files.voice_encoder, self.files.s3gen, self.config, device=self.device,
                                       turbo=True)

    def voice_from_audio(self, audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int | None = None, *,
                         exaggeration: float = 0.0, norm_loudness: bool = True) -> Voice:
        """Clone a voice from more than 5 s of reference audio (normalised to -27 LUFS unless
        ``norm_loudness=False``); ``exaggeration`` is stored in the voice file but unused."""
        return self.voice_builder.build(audio, sample_rate, exaggeration=exaggeration, norm_loudness=norm_loudness)

    def speech_tokens_to_audio(self, token_lists, voice=None, *, n_timesteps: int = DEFAULT_N_TIMESTEPS, noise=None,
                               seed=None) -> list[np.ndarray]:
        return super().speech_tokens_to_audio(token_lists, voice, n_timesteps=n_timesteps, noise=noise, seed=seed)

    def generate(self, texts, voice=None, *, n_timesteps=DEFAULT_N_TIMESTEPS, watermark: bool = True,
                 **parameters) -> list[np.ndarray]:
        return super().generate(texts, voice, n_timesteps=n_timesteps, watermark=watermark, **parameters)

    def generate_long(self, text: str, voice=None, *, n_timesteps: int = DEFAULT_N_TIMESTEPS, **options) -> np.ndarray:
        return super().generate_long(text, voice, n_timesteps=n_timesteps, **options)

    def prepare_stream(self, *args, **kwargs):
        raise ValueError(f"streaming is not available for the {self.files.variant} model yet; use generate / "
                         "generate_long")
