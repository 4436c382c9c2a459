"""Running T3 on vLLM: the model directory vLLM sees, engine start-up, requests in, tokens out."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3 import positions
from vllm_chatterbox.t3.guidance import t3_extra_args
from vllm_chatterbox.t3.vllm_model import ARCHITECTURE

logger = logging.getLogger(__name__)

GUIDANCE_PROCESSOR = "vllm_chatterbox.t3.guidance:T3GuidanceLogitsProcessor"
T3_WEIGHTS_FILE = "t3_cfg.safetensors"
# vLLM's CPU attention needs KV blocks in multiples of 32 tokens.
DEFAULT_BLOCK_SIZE = 32
# On the CPU backend vLLM otherwise reserves a fraction of the whole machine's memory.
DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30


def cache_root() -> Path:
    return Path(os.environ.get("VLLM_CHATTERBOX_CACHE", Path.home() / ".cache" / "vllm_chatterbox"))


def vllm_model_dir(t3_weights: Path, cfg: T3Config) -> Path:
    """A directory holding vLLM's view of T3: ``config.json`` and a link to the T3 weights only.

    vLLM reads every ``*.safetensors`` in its model directory; the official layout keeps the
    S3Gen and voice-encoder weights beside T3, so vLLM gets a directory of its own.
    """
    t3_weights = t3_weights.resolve()
    stat = t3_weights.stat()
    hf_config = {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": 2 * cfg.hidden_size,
        "num_attention_heads": 2 * cfg.num_heads,
        "num_key_value_heads": 2 * cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.num_layers,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": 2 * cfg.speech_vocab_size,
        "max_position_embeddings": positions.rope_table_size(cfg),
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        # Declaring M-RoPE makes vLLM ask the model for prompt positions (the position shift).
        "mrope_section": [cfg.head_dim // 2, 0, 0],
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "t3": asdict(cfg),
    }
    key = hashlib.sha256(
        json.dumps([str(t3_weights), stat.st_size, stat.st_mtime_ns, hf_config], sort_keys=True).encode()
    ).hexdigest()[:16]
    directory = cache_root() / "vllm-t3" / key
    if not (directory / "config.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        link = directory / T3_WEIGHTS_FILE
        if not link.exists():
            link.symlink_to(t3_weights)
        tmp = directory / f"config.json.{os.getpid()}"
        tmp.write_text(json.dumps(hf_config, indent=1))
        tmp.replace(directory / "config.json")
    return directory


class _DropChatTemplateWarmupFailure(logging.Filter):
    """T3 runs without a tokenizer (``skip_tokenizer_init``), so ``vllm.LLM``'s chat-template
    warm-up always fails; its warning and traceback at every start would only alarm users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Chat template warmup failed"


def _is_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


@dataclass(frozen=True)
class T3Request:
    """One text's T3 job: packed prompt embeddings and its sampling settings."""

    prompt_embeds: torch.Tensor  # (L, 2D)
    cache_salt: str
    temperature: float
    top_p: float
    min_p: float
    repetition_penalty: float
    cfg_weight: float
    max_new_tokens: int
    seed: int | None


class T3Engine:
    """A vLLM engine serving the packed-CFG T3 model."""

    def __init__(self, t3_weights: Path, cfg: T3Config, *, extra_logits_processors: Iterable[str] = (),
                 **engine_options):
        from vllm import LLM  # deferred: importing vLLM is slow and not needed for validation errors

        self.cfg = cfg
        model_dir = vllm_model_dir(Path(t3_weights), cfg)
        options = {
            "dtype": "float32",
            "skip_tokenizer_init": True,
            "enable_prompt_embeds": True,
            "enable_prefix_caching": True,
            "block_size": DEFAULT_BLOCK_SIZE,
            "max_model_len": positions.max_prompt_len(cfg) + 1000,
            "seed": 0,
        }
        on_cpu = _is_cpu_platform()
        if on_cpu:
            if "gpu_memory_utilization" not in engine_options:
                options["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
            # The T3 model is not torch.compile'd, so eager mode changes nothing at run time on
            # CPU; it skips vLLM's compile warm-up, a dummy forward over max_num_batched_tokens
            # rows (two minutes for the full model on two cores).
            options["enforce_eager"] = True
            # vLLM 0.32 rewinds a seeded request's generator after sampling for a partly
            # prefilled prompt, which CPU generators cannot do: the engine dies. Whole-prompt
            # prefills never need the rewind.
            options["enable_chunked_prefill"] = False
        options.update(engine_options)
        # Extra processors (tests) see the raw [cond | uncond] logits, before guidance.
        options["logits_processors"] = [*extra_logits_processors, GUIDANCE_PROCESSOR]
        logger.info("starting vLLM for T3 (%s)", model_dir)
        renderer_logger = logging.getLogger("vllm.renderers.base")
        drop_warmup_failure = _DropChatTemplateWarmupFailure()
        renderer_logger.addFilter(drop_warmup_failure)
        try:
            self.llm = LLM(model=str(model_dir), **options)
        finally:
            renderer_logger.removeFilter(drop_warmup_failure)
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        self._seeds_crash_vllm = on_cpu and bool(
            self.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill)
        self._next_id = 0

    def sampling_params(self, request: T3Request, extra_args: dict | None = None, **overrides):
        from vllm import SamplingParams

        params = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "min_p": request.min_p,
            "top_k": -1,
            "repetition_penalty": 1.0,  # applied by the guidance processor, over {BOS} + outputs
            "max_tokens": request.max_new_tokens,
            "seed": request.seed,
            "stop_token_ids": [self.cfg.stop_speech_token],
            "detokenize": False,
            "extra_args": {**t3_extra_args(request.cfg_weight, request.repetition_penalty), **(extra_args or {})},
        }
        params.update(overrides)
        return SamplingParams(**params)

    def submit(self, request: T3Request, extra_args: dict | None = None, **sampling_overrides) -> str:
        """Queue one request; returns its id."""
        prompt_len = request.prompt_embeds.shape[0]
        if prompt_len + request.max_new_tokens > self.max_model_len:
            raise ValueError(
                f"prompt of {prompt_len} rows + max_new_tokens {request.max_new_tokens} exceeds the "
                f"engine's max_model_len {self.max_model_len}"
            )
        if self._seeds_crash_vllm and request.seed is not None and request.temperature > 0:
            raise ValueError(
                "seed: seeded sampling with chunked prefill on vLLM's CPU backend would crash the engine "
                "(vLLM 0.32 cannot rewind CPU generators); start the engine without enable_chunked_prefill=True "
                "(the CPU default) or leave seed unset"
            )
        request_id = f"t3-{self._next_id}"
        self._next_id += 1
        prompt = {"prompt_embeds": request.prompt_embeds, "cache_salt": request.cache_salt}
        self.llm.llm_engine.add_request(request_id, prompt, self.sampling_params(request, extra_args, **sampling_overrides))
        return request_id

    def step(self):
        """One engine step; returns the request outputs that finished in it."""
        return [out for out in self.llm.llm_engine.step() if out.finished]

    def has_unfinished(self) -> bool:
        return self.llm.llm_engine.has_unfinished_requests()

    def run(self, requests: list[T3Request], **sampling_overrides) -> Iterator[tuple[int, object]]:
        """Submit all requests and yield ``(index, RequestOutput)`` as each one finishes."""
        ids = {self.submit(r, **sampling_overrides): i for i, r in enumerate(requests)}
        while ids:
            for out in self.step():
                index = ids.pop(out.request_id, None)
                if index is not None:
                    yield index, out

    def shutdown(self) -> None:
        """Stop vLLM's engine processes now rather than at interpreter exit."""
        self.llm.llm_engine.engine_core.shutdown()

    def generate(self, requests: list[T3Request], **sampling_overrides) -> list:
        results: list = [None] * len(requests)
        for index, out in self.run(requests, **sampling_overrides):
            results[index] = out
        return results
