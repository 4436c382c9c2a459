"""Running the Turbo / Nano T3 on vLLM: its model directory, engine options and requests.

Requests go through the same submit / step / run machinery as the English T3
(:class:`~vllm_chatterbox.t3.engine.T3Engine`); what differs is the GPT-2 model vLLM sees, the
sampler (``t3/turbo_sampling.py``, all of the original's processing in its order, vLLM sampling
with temperature 1 or greedy from the result) and the stop marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.t3 import engine as t3_engine
from vllm_chatterbox.t3.turbo_model import ARCHITECTURE
from vllm_chatterbox.t3.turbo_sampling import check_sampling, turbo_extra_args

logger = logging.getLogger(__name__)

TURBO_SAMPLING_PROCESSOR = "vllm_chatterbox.t3.turbo_sampling:TurboSamplingLogitsProcessor"


def stop_marker(cfg: TurboT3Config) -> int:
    """The token id that ends a request: the logits column after the speech vocabulary."""
    return cfg.speech_vocab_size


def max_model_len(cfg: TurboT3Config) -> int:
    """Longest sequence: speaker + reference tokens + text + start + every generated token."""
    return min(cfg.max_positions, 2 + cfg.speech_cond_prompt_len + cfg.max_text_tokens + cfg.max_new_tokens)


def vllm_model_dir(t3_weights: Path, cfg: TurboT3Config) -> Path:
    """``config.json`` (GPT-2) and a link to the T3 weights only, in a directory of their own."""
    t3_weights = t3_weights.resolve()
    stat = t3_weights.stat()
    hf_config = {
        "architectures": [ARCHITECTURE],
        "model_type": "gpt2",
        "n_embd": cfg.hidden_size,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": cfg.intermediate_size,
        "n_positions": cfg.max_positions,
        "n_ctx": cfg.max_positions,
        "activation_function": cfg.activation,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        # Speech tokens plus the stop marker (t3/turbo_sampling.py).
        "vocab_size": cfg.speech_vocab_size + 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "t3_turbo": asdict(cfg),
    }
    key = hashlib.sha256(
        json.dumps([str(t3_weights), stat.st_size, stat.st_mtime_ns, hf_config], sort_keys=True).encode()
    ).hexdigest()[:16]
    directory = t3_engine.cache_root() / "vllm-t3-turbo" / key
    if not (directory / "config.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        link = directory / t3_weights.name
        if not link.exists():
            link.symlink_to(t3_weights)
        tmp = directory / f"config.json.{os.getpid()}"
        tmp.write_text(json.dumps(hf_config, indent=1))
        tmp.replace(directory / "config.json")
    return directory


@dataclass(frozen=True)
class TurboT3Request:
    """One text's Turbo T3 job: prompt embeddings and the original's sampling knobs."""

    prompt_embeds: torch.Tensor  # (L, D)
    cache_salt: str
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int | None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)


class TurboT3Engine(t3_engine.T3Engine):
    """A vLLM engine serving the GPT-2 T3 of Turbo / Nano."""

    def __init__(self, t3_weights: Path, cfg: TurboT3Config, *, extra_logits_processors: Iterable[str] = (),
                 after_sampler_processors: Iterable[str] = (), **engine_options):
        from vllm import LLM

        self.cfg = cfg
        model_dir = vllm_model_dir(Path(t3_weights), cfg)
        options = {
            "dtype": "float32",
            "skip_tokenizer_init": True,
            "enable_prompt_embeds": True,
            "enable_prefix_caching": True,
            "block_size": t3_engine.DEFAULT_BLOCK_SIZE,
            "max_model_len": max_model_len(cfg),
            "seed": 0,
        }
        on_cpu = t3_engine._is_cpu_platform()
        if on_cpu:
            # Same CPU defaults as the English engine (see T3Engine).
            if "gpu_memory_utilization" not in engine_options:
                options["kv_cache_memory_bytes"] = t3_engine.DEFAULT_CPU_KV_CACHE_BYTES
            options["enforce_eager"] = True
            options["enable_chunked_prefill"] = False
        options.update(engine_options)
        # Extra processors (tests) see the raw logits; those after the sampler its processed logits.
        options["logits_processors"] = [*extra_logits_processors, TURBO_SAMPLING_PROCESSOR,
                                        *after_sampler_processors]
        logger.info("starting vLLM for Turbo T3 (%s)", model_dir)
        renderer_logger = logging.getLogger("vllm.renderers.base")
        drop_warmup_failure = t3_engine._DropChatTemplateWarmupFailure()
        renderer_logger.addFilter(drop_warmup_failure)
        try:
            self.llm = LLM(model=str(model_dir), **options)
        finally:
            renderer_logger.removeFilter(drop_warmup_failure)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._seeds_crash_vllm = on_cpu and bool(
            self.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill)
        self._next_id = 0

    def sampling_params(self, request: TurboT3Request, extra_args: dict | None = None, **overrides):
        from vllm import SamplingParams

        params = {
            # Everything but the draw happens in the Turbo sampler processor.
            "temperature": 0.0 if request.temperature == 0 else 1.0,
            "top_p": 1.0,
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "max_tokens": request.max_new_tokens,
            "seed": request.seed,
            "stop_token_ids": [stop_marker(self.cfg)],
            "detokenize": False,
            "extra_args": {**turbo_extra_args(request.temperature, request.top_k, request.top_p,
                                              request.repetition_penalty), **(extra_args or {})},
        }
        params.update(overrides)
        return SamplingParams(**params)


def returned_tokens(token_ids: Sequence[int], cfg: TurboT3Config) -> list[int]:
    """What ``inference_turbo`` returns: the generated ids without the final stop."""
    tokens = list(token_ids)
    if tokens and tokens[-1] == stop_marker(cfg):
        tokens = tokens[:-1]
    return tokens


def tokens_for_s3gen(token_ids: Sequence[int], cfg: TurboT3Config, silence_token: int = 4299,
                     n_silence: int = 3) -> list[int]:
    """``generate()``'s clean-up: keep ids < start token (drops 6561/6562 anywhere), then append
    three silence tokens, which give the audio its last 120 ms (nothing is trimmed at the end)."""
    return [t for t in returned_tokens(token_ids, cfg) if t < cfg.start_speech_token] + [silence_token] * n_silence
