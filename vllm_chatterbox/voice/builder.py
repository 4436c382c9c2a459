"""Reference audio -> :class:`Voice`, exactly as the original ``prepare_conditionals``.

Two 16 kHz versions of the reference feed different networks, as in the original:
soxr-resampled audio of the whole file for the voice encoder and the T3 prompt tokens,
sinc-resampled audio of the first 10 s for CAMPPlus and the S3Gen prompt tokens.

Precision: these networks always run in fp32, also when S3Gen runs in bfloat16
(``s3gen_dtype``). They run once per reference clip and the voice is cached, so they are off the
per-request path and bf16 would save nothing that matters; and their outputs condition every
later request: the S3 tokenizer's output is discrete (a rounding-level change of its logits can
flip a prompt token), the CAMPPlus x-vector and voice-encoder embedding are reused verbatim, so
an error there would be baked into every utterance of the voice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.model_files import load_safetensors, load_torch_file
from vllm_chatterbox.voice.audio import AudioSource, load_audio, resample_sinc_hann, resample_soxr_hq
from vllm_chatterbox.voice.campplus import CAMPPlus
from vllm_chatterbox.voice.features import PROMPT_MEL_SAMPLE_RATE, prompt_mel_spectrogram
from vllm_chatterbox.voice.loudness import normalize_loudness
from vllm_chatterbox.voice.s3_tokenizer import S3Tokenizer
from vllm_chatterbox.voice.voice import Voice, check_exaggeration
from vllm_chatterbox.voice.voice_encoder import VoiceEncoder

logger = logging.getLogger(__name__)

S3GEN_SR = PROMPT_MEL_SAMPLE_RATE  # 24 kHz: S3Gen's output rate and prompt-mel rate
TOKENIZER_SR = 16000
T3_PROMPT_SECONDS = 6  # ENC_COND_LEN of the original
S3GEN_PROMPT_SECONDS = 10  # DEC_COND_LEN of the original
TURBO_T3_PROMPT_SECONDS = 15  # Turbo's ENC_COND_LEN
TURBO_MIN_REFERENCE_SECONDS = 5.0  # Turbo asserts a longer reference

StateSource = Union[str, Path, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class VoiceOptions:
    """How a model conditions on reference audio (the released models differ; ``variants.py``
    says which options each one uses)."""

    t3_prompt_seconds: float  # T3's prompt tokens come from this much of the reference
    t3_prompt_tokens: int  # and are at most this many
    min_reference_seconds: float | None = None  # references must be longer than this
    normalize_loudness: bool = False  # to -27 LUFS first, unless a call says norm_loudness=False
    name: str = "this model"  # in errors


def original_voice_options(config: ChatterboxConfig) -> VoiceOptions:
    """English and multilingual: 6 s of reference for T3's prompt tokens."""
    return VoiceOptions(T3_PROMPT_SECONDS, config.t3.speech_cond_prompt_len)


def turbo_voice_options(config: ChatterboxConfig) -> VoiceOptions:
    """Turbo and Nano: references longer than 5 s, loudness-normalised, 15 s / 375 tokens for T3's prompt."""
    return VoiceOptions(TURBO_T3_PROMPT_SECONDS, config.turbo_t3.speech_cond_prompt_len,
                        min_reference_seconds=TURBO_MIN_REFERENCE_SECONDS, normalize_loudness=True, name="Turbo")


def _load_state(source: StateSource, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors under ``prefix`` (prefix removed) from a safetensors/.pt file or a loaded dict."""
    if isinstance(source, Mapping):
        return {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path, prefix)
    state = load_torch_file(path, "weights file", mmap=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return _load_state(state, prefix)


def audio_key(wav: np.ndarray, sample_rate: int) -> str:
    """Content hash of decoded audio + its rate: equal audio gives the same voice."""
    digest = hashlib.sha256(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
    digest.update(str(int(sample_rate)).encode())
    return digest.hexdigest()


class VoiceBuilder:
    def __init__(
        self,
        voice_encoder: VoiceEncoder,
        tokenizer: S3Tokenizer,
        speaker_encoder: CAMPPlus,
        config: ChatterboxConfig,
        cache_size: int = 16,
        *,
        options: VoiceOptions | None = None,
    ) -> None:
        self.options = original_voice_options(config) if options is None else options
        self.voice_encoder = voice_encoder.eval()
        self.tokenizer = tokenizer.eval()
        self.speaker_encoder = speaker_encoder.eval()
        self.config = config
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Voice] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_files(
        cls,
        ve_path: StateSource,
        s3gen_path: StateSource,
        config: ChatterboxConfig,
        device: torch.device | str = "cpu",
        cache_size: int = 16,
        *,
        options: VoiceOptions | None = None,
    ) -> "VoiceBuilder":
        """Paths (or loaded state dicts) of ``ve.*`` and ``s3gen.*``; only the ``tokenizer.`` and
        ``speaker_encoder.`` entries of S3Gen are read. ``options``: the model's conditioning
        (default: the original's, :func:`original_voice_options`; Turbo / Nano:
        :func:`turbo_voice_options`)."""
        ve = VoiceEncoder.from_state_dict(_load_state(ve_path), config.voice_encoder)
        tokenizer = S3Tokenizer.from_state_dict(_load_state(s3gen_path, "tokenizer."), config.s3_tokenizer)
        campplus = CAMPPlus.from_state_dict(_load_state(s3gen_path, "speaker_encoder."), config.campplus)
        return cls(ve.to(device), tokenizer.to(device), campplus.to(device), config, cache_size, options=options)

    @property
    def device(self) -> torch.device:
        return self.tokenizer.window.device

    def build(self, source: AudioSource, sample_rate: int | None = None, *, exaggeration: float = 0.5,
              norm_loudness: bool = True) -> Voice:
        """Voice of a reference clip (path, bytes, file object or samples); cached by content.

        ``norm_loudness`` (only where the options normalise, as the original Turbo): normalise the
        reference to -27 LUFS first."""
        exaggeration = check_exaggeration(exaggeration)
        wav, sample_rate = load_audio(source, sample_rate)
        options = self.options
        norm_loudness = bool(norm_loudness) and options.normalize_loudness
        if options.min_reference_seconds is not None and len(wav) / sample_rate <= options.min_reference_seconds:
            raise ValueError(f"reference audio is {len(wav) / sample_rate:.2f} s long; {options.name} needs more than "
                             f"{options.min_reference_seconds:g} s")
        key = audio_key(wav, sample_rate) + ("+lufs" if norm_loudness else "")
        with self._lock:
            voice = self._cache.get(key)
            if voice is not None:
                self._cache.move_to_end(key)
                return voice.with_exaggeration(exaggeration)
        voice = self._compute(wav, sample_rate, exaggeration, norm_loudness)
        with self._lock:
            self._cache[key] = voice
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return voice

    def _compute(self, wav: np.ndarray, sample_rate: int, exaggeration: float, norm_loudness: bool) -> Voice:
        with torch.inference_mode():
            parts = self._conditionals(wav, sample_rate, norm_loudness)
        # Clone outside inference mode so callers get ordinary tensors.
        speaker_emb, t3_tokens, prompt_token, prompt_feat, embedding = (p.cpu().clone() for p in parts)
        try:
            return Voice(
                speaker_emb=speaker_emb.float(),
                cond_prompt_speech_tokens=t3_tokens.long(),
                exaggeration=float(exaggeration),
                prompt_token=prompt_token.long(),
                prompt_feat=prompt_feat.float(),
                embedding=embedding.float(),
            ).check_dims(self.config)
        except ValueError as exc:
            raise ValueError(f"the reference audio gave an unusable voice: {exc}") from None

    def _conditionals(self, wav: np.ndarray, sample_rate: int, norm_loudness: bool) -> tuple[torch.Tensor, ...]:
        ref24 = resample_soxr_hq(wav, sample_rate, S3GEN_SR)
        if norm_loudness:
            ref24 = normalize_loudness(ref24, S3GEN_SR)
        ref16 = resample_soxr_hq(ref24, S3GEN_SR, TOKENIZER_SR)
        device = self.device

        # S3Gen reference (embed_ref): first 10 s only.
        s3gen_ref24 = torch.from_numpy(ref24[: S3GEN_PROMPT_SECONDS * S3GEN_SR]).to(device)[None]
        prompt_feat = prompt_mel_spectrogram(s3gen_ref24).transpose(1, 2)
        s3gen_ref16 = resample_sinc_hann(s3gen_ref24, S3GEN_SR, TOKENIZER_SR)
        embedding = self.speaker_encoder.inference(s3gen_ref16)
        prompt_token, _ = self.tokenizer([s3gen_ref16[0]])
        n_mel = prompt_feat.shape[1]
        if n_mel != 2 * prompt_token.shape[1]:
            # The tokenizer's length rounds differently from the mel's; the original keeps
            # at most n_mel // 2 tokens so the prompt mel and tokens line up.
            prompt_token = prompt_token[:, : n_mel // 2]

        # T3 conditioning: prompt tokens of the first 6 s (Turbo 15 s), speaker embedding of everything.
        t3_ref16 = torch.from_numpy(ref16[: int(self.options.t3_prompt_seconds * TOKENIZER_SR)]).to(device)
        t3_tokens, _ = self.tokenizer([t3_ref16], max_len=self.options.t3_prompt_tokens)
        speaker_emb = self.voice_encoder.embed_utterance(ref16)
        logger.debug("built voice: %d T3 prompt tokens, %d S3Gen prompt tokens, %d mel frames",
                     t3_tokens.shape[1], prompt_token.shape[1], n_mel)
        return speaker_emb, t3_tokens, prompt_token, prompt_feat, embedding
