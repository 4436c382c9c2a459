"""Chatterbox Turbo / Nano behind the same public API as :class:`~vllm_chatterbox.tts.ChatterboxTTS`.

``ChatterboxTTS.from_dir`` / ``from_pretrained(variant="turbo"|"nano")`` return this class for the
Turbo / Nano layouts. What differs from the original model, as in ``tts_turbo.py``:
- text: Turbo's ``punc_norm`` and the checkpoint's GPT-2 tokenizer (paralinguistic tags such as
  ``[laugh]`` are single tokens); no language choice;
- T3: GPT-2 without CFG; sampling temperature -> top-k -> top-p -> repetition penalty (defaults
  0.8, 1000, 0.95, 1.2); ``cfg_weight``, ``exaggeration`` and ``min_p`` are ignored with a
  warning when > 0, as the original does;
- S3Gen: the 2-step meanflow decoder; T3's ids < 6561 are kept and three silence tokens (4299)
  appended, which :meth:`speech_tokens_to_audio` does too;
- voices: references longer than 5 s, loudness-normalised to -27 LUFS (``norm_loudness``).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.engine.pipeline import AudioJob, synthesize
from vllm_chatterbox.model_files import ModelFiles
from vllm_chatterbox.params import check_number, check_seed, check_timesteps, per_text, reject_unknown
from vllm_chatterbox.t3.turbo_engine import TurboT3Engine, TurboT3Request, tokens_for_s3gen
from vllm_chatterbox.t3.turbo_prefix import TurboPromptBuilder
from vllm_chatterbox.text.turbo import TurboTokenizer
from vllm_chatterbox.tts import ChatterboxTTS, VoiceLike, _text_list
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

# The original generate()'s defaults; its loop samples one token from the prefill plus up to 1000.
TURBO_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8, "top_k": 1000, "top_p": 0.95, "repetition_penalty": 1.2, "max_new_tokens": 1001,
}
# Accepted for API compatibility; the original ignores them (warning when > 0).
IGNORED_PARAMETERS = ("cfg_weight", "exaggeration", "min_p")
DEFAULT_N_TIMESTEPS = 2
SILENCE_TOKEN = 4299
N_SILENCE_TOKENS = 3


class ChatterboxTurboTTS(ChatterboxTTS):
    def __init__(self, files: ModelFiles, config: ChatterboxConfig, engine_options: dict[str, Any],
                 device: str | torch.device = "cpu"):
        if not config.estimator.meanflow:
            raise ValueError(f"{files.directory}: chatterbox_config.json must set estimator.meanflow for "
                             f"the {files.variant} model")
        self.files = files
        self.config = config
        self.device = torch.device(device)
        self.tokenizer = TurboTokenizer.from_dir(files.tokenizer, config.turbo_t3.text_vocab_size)
        self.prompt_builder = TurboPromptBuilder.from_file(files.t3, config.turbo_t3)
        self.builtin_voice = Voice.load(files.conds)
        self._conditioning_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
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

    # --- text ----------------------------------------------------------------------------

    def text_token_ids(self, text: str, language: str | None = None) -> list[int]:
        """GPT-2 ids of ``punc_norm(text)`` (no start/stop ids); English only."""
        if language not in (None, "en"):
            raise ValueError(f"the {self.files.variant} model speaks English only; got language={language!r}")
        return self.tokenizer.encode(text)

    def _count_text_tokens(self, text: str, language: str | None) -> int:
        return len(self.text_token_ids(text, language))

    # --- T3 ------------------------------------------------------------------------------

    def prepare_t3_requests(self, texts: str | Sequence[str], voice: VoiceLike | Sequence[VoiceLike] | None = None,
                            *, language: str | None | Sequence[str | None] = None,
                            **parameters) -> list[TurboT3Request]:
        texts = _text_list(texts)
        count = len(texts)
        known = (*TURBO_DEFAULTS, "seed", *IGNORED_PARAMETERS)
        reject_unknown({k: v for k, v in parameters.items() if k not in known}, known)
        for name in IGNORED_PARAMETERS:
            values = per_text(name, parameters.get(name, 0.0), count)
            if any(check_number(name, v) > 0 for v in values):
                logger.warning("%s is not supported by the %s model and is ignored (as the original does)",
                               name, self.files.variant)
        columns = {name: per_text(name, parameters.get(name, default), count)
                   for name, default in TURBO_DEFAULTS.items()}
        seeds = per_text("seed", parameters.get("seed"), count)
        languages = per_text("language", language, count)
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, count)]
        requests = []
        for i, text in enumerate(texts):
            where = f" (text {i})" if count > 1 else ""
            top_k = columns["top_k"][i]
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
                raise ValueError(f"top_k{where} must be an integer >= 0 (0 = off), got {top_k!r}")
            try:
                text_ids = self.text_token_ids(text, languages[i])
            except ValueError as exc:
                raise ValueError(f"text {i}: {exc}" if count > 1 else str(exc)) from None
            embeds = self.prompt_builder.prompt_embeds(self.conditioning(voices[i]), text_ids)
            requests.append(TurboT3Request(
                prompt_embeds=embeds,
                cache_salt="t3-turbo",  # absolute positions: equal rows at equal places are equal KV
                temperature=check_number("temperature", columns["temperature"][i], where),
                top_k=top_k,
                top_p=check_number("top_p", columns["top_p"][i], where),
                repetition_penalty=check_number("repetition_penalty", columns["repetition_penalty"][i], where),
                max_new_tokens=check_number("max_new_tokens", columns["max_new_tokens"][i], where),
                seed=check_seed(seeds[i], where),
            ))
        return requests

    def generate_speech_tokens(self, texts, voice=None, *, language=None, temperature=0.8, top_k=1000, top_p=0.95,
                               repetition_penalty=1.2, max_new_tokens=1001, seed=None, **ignored) -> list[list[int]]:
        """Speech tokens per text (input order): T3's ids < 6561, as the original passes them on
        (:meth:`speech_tokens_to_audio` adds the three silence tokens). ``temperature=0`` is greedy
        over the processed logits; ``top_k=0`` / ``top_p=1`` / ``repetition_penalty=1`` switch a
        step off."""
        requests = self.prepare_t3_requests(
            texts, voice, language=language, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed, **ignored)
        outputs = self.t3_engine.generate(requests)
        return [self._s3gen_tokens(out.outputs[0].token_ids)[:-N_SILENCE_TOKENS] for out in outputs]

    def _s3gen_tokens(self, token_ids: Sequence[int]) -> list[int]:
        return tokens_for_s3gen(token_ids, self.config.turbo_t3, SILENCE_TOKEN, N_SILENCE_TOKENS)

    # --- S3Gen and the whole pipeline ------------------------------------------------------

    def speech_tokens_to_audio(self, token_lists, voice=None, *, n_timesteps: int = DEFAULT_N_TIMESTEPS, noise=None,
                               seed=None) -> list[np.ndarray]:
        """Like :meth:`ChatterboxTTS.speech_tokens_to_audio`, after appending the three silence
        tokens the original appends (``noise[i]`` covers them: 2 * (prompt + len + 3) frames)."""
        if not isinstance(token_lists, (list, tuple)) or not token_lists:
            raise ValueError("token_lists must be a non-empty list of token lists")
        padded = [list(tokens) + [SILENCE_TOKEN] * N_SILENCE_TOKENS for tokens in token_lists]
        return super().speech_tokens_to_audio(padded, voice, n_timesteps=n_timesteps, noise=noise, seed=seed)

    def generate(self, texts, voice=None, *, n_timesteps=DEFAULT_N_TIMESTEPS, watermark: bool = False,
                 **parameters) -> list[np.ndarray]:
        return super().generate(texts, voice, n_timesteps=n_timesteps, watermark=watermark, **parameters)

    def generate_long(self, text: str, voice=None, *, n_timesteps: int = DEFAULT_N_TIMESTEPS, **options) -> np.ndarray:
        return super().generate_long(text, voice, n_timesteps=n_timesteps, **options)

    def _synthesize(self, texts, voice, n_timesteps, parameters):
        count = len(_text_list(texts))
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, count)]
        requests = self.prepare_t3_requests(texts, voices, **parameters)
        steps = [check_timesteps(n, f" (text {i})" if count > 1 else "")
                 for i, n in enumerate(per_text("n_timesteps", n_timesteps, count))]
        jobs = [AudioJob(request=r, voice=v, n_timesteps=n, seed=r.seed) for r, v, n in zip(requests, voices, steps)]
        for index, _tokens, wav in synthesize(self.t3_engine, self.s3gen, jobs, clean=self._s3gen_tokens):
            yield index, wav
