"""The public entry point: ``ChatterboxTTS``."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.model_files import DEFAULT_REPO, ModelFiles, download
from vllm_chatterbox.params import T3_PARAMETERS, T3Params, per_text, reject_unknown, t3_params
from vllm_chatterbox.t3.engine import T3Engine, T3Request
from vllm_chatterbox.t3.prefix import T3PromptBuilder
from vllm_chatterbox.t3.tokens import clean_speech_tokens
from vllm_chatterbox.text import EnglishTokenizer, text_to_token_ids
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

VoiceLike = Voice | str | Path
_CONDITIONING_CACHE_SIZE = 64


class ChatterboxTTS:
    """Chatterbox text-to-speech with T3 on vLLM.

    Build with :meth:`from_dir` (official file layout) or :meth:`from_pretrained` (hub).
    Extra keyword arguments go to ``vllm.LLM`` (e.g. ``max_num_seqs``, ``max_model_len``).
    """

    def __init__(self, files: ModelFiles, config: ChatterboxConfig, engine_options: dict[str, Any]):
        self.files = files
        self.config = config
        self.tokenizer = EnglishTokenizer.from_file(files.tokenizer)
        self.prompt_builder = T3PromptBuilder.from_file(files.t3, config.t3)
        self.builtin_voice = Voice.load(files.conds)
        self._conditioning_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.t3_engine = T3Engine(files.t3, config.t3, **engine_options)

    @classmethod
    def from_dir(cls, path: str | Path, **engine_options) -> "ChatterboxTTS":
        files = ModelFiles.from_dir(path)
        return cls(files, ChatterboxConfig.for_model_dir(files.directory), engine_options)

    @classmethod
    def from_pretrained(cls, repo_id: str = DEFAULT_REPO, *, revision: str | None = None,
                        **engine_options) -> "ChatterboxTTS":
        return cls.from_dir(download(repo_id, revision), **engine_options)

    # --- voices ---------------------------------------------------------------------------

    def resolve_voice(self, voice: VoiceLike | None) -> Voice:
        if voice is None:
            return self.builtin_voice
        if isinstance(voice, Voice):
            return voice
        if isinstance(voice, (str, Path)) and Path(voice).suffix == ".pt":
            return Voice.load(voice)
        raise ValueError(f"voice must be None, a Voice or a .pt voice file, got {voice!r}")

    def conditioning(self, voice: Voice) -> torch.Tensor:
        """The voice's T3 conditioning rows, computed once per (voice, exaggeration)."""
        key = voice.t3_key
        cached = self._conditioning_cache.get(key)
        if cached is None:
            cached = self.prompt_builder.conditioning(voice)
            self._conditioning_cache[key] = cached
            if len(self._conditioning_cache) > _CONDITIONING_CACHE_SIZE:
                self._conditioning_cache.popitem(last=False)
        else:
            self._conditioning_cache.move_to_end(key)
        return cached

    # --- T3 ---------------------------------------------------------------------------------

    def text_token_ids(self, text: str) -> list[int]:
        return text_to_token_ids(text, self.tokenizer, max_text_tokens=self.config.t3.max_text_len)

    def prepare_t3_requests(self, texts: str | Sequence[str], voice: VoiceLike | Sequence[VoiceLike] | None = None,
                            **parameters) -> list[T3Request]:
        """Validate everything and build the vLLM requests (nothing is run)."""
        texts = _text_list(texts)
        known = (*T3_PARAMETERS, "seed")
        reject_unknown({k: v for k, v in parameters.items() if k not in known}, known)
        values = {name: parameters.get(name, T3_PARAMETERS[name][0]) for name in T3_PARAMETERS}
        values["seed"] = parameters.get("seed")
        params = t3_params(len(texts), values)
        voices = [self.resolve_voice(v) for v in per_text("voice", voice, len(texts))]
        requests = []
        for i, (text, voice_i, p) in enumerate(zip(texts, voices, params)):
            try:
                text_ids = self.text_token_ids(text)
            except ValueError as exc:
                raise ValueError(f"text {i}: {exc}" if len(texts) > 1 else str(exc)) from None
            requests.append(self._t3_request(text_ids, voice_i.with_exaggeration(p.exaggeration), p))
        return requests

    def _t3_request(self, text_ids: list[int], voice: Voice, p: T3Params) -> T3Request:
        embeds = self.prompt_builder.prompt_embeds(self.conditioning(voice), text_ids)
        return T3Request(
            prompt_embeds=embeds,
            # Prefix caching hashes the embeddings; the salt keeps requests whose rows are equal
            # but whose RoPE shift differs (another prompt length) from sharing KV blocks.
            cache_salt=f"t3-len{embeds.shape[0]}",
            temperature=p.temperature,
            top_p=p.top_p,
            min_p=p.min_p,
            repetition_penalty=p.repetition_penalty,
            cfg_weight=p.cfg_weight,
            max_new_tokens=p.max_new_tokens,
            seed=p.seed,
        )

    def generate_speech_tokens(
        self,
        texts: str | Sequence[str],
        voice: VoiceLike | Sequence[VoiceLike] | None = None,
        *,
        exaggeration: float | Sequence[float] = 0.5,
        cfg_weight: float | Sequence[float] = 0.5,
        temperature: float | Sequence[float] = 0.8,
        top_p: float | Sequence[float] = 1.0,
        min_p: float | Sequence[float] = 0.05,
        repetition_penalty: float | Sequence[float] = 1.2,
        max_new_tokens: int | Sequence[int] = 1000,
        seed: int | None | Sequence[int | None] = None,
        **unknown,
    ) -> list[list[int]]:
        """Speech tokens for each text (input order), cleaned as the original cleans them.

        Every parameter is a scalar or one value per text; ``temperature=0`` is greedy.
        """
        requests = self.prepare_t3_requests(
            texts, voice, exaggeration=exaggeration, cfg_weight=cfg_weight, temperature=temperature,
            top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens,
            seed=seed, **unknown,
        )
        outputs = self.t3_engine.generate(requests)
        return [clean_speech_tokens(out.outputs[0].token_ids, self.config.t3) for out in outputs]


def _text_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("texts must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} must be a str, got {type(text).__name__}")
    return list(texts)
