"""What the shared T3 engine needs to run the Llama T3 (English and multilingual) on vLLM.

vLLM sees the packed-CFG Llama model (``t3/llama/model.py``) through the doubled Llama config of
``t3/llama/layout.py``; the guidance processor (``t3/llama/guidance.py``) combines the two
branches' logits and applies the original's repetition penalty, and vLLM's own sampler then does
temperature, min_p and top_p.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.params import T3Params
from vllm_chatterbox.t3.engine import write_vllm_model_dir
from vllm_chatterbox.t3.llama import positions
from vllm_chatterbox.t3.llama.layout import vllm_hf_config

GUIDANCE_PROCESSOR = "vllm_chatterbox.t3.llama.guidance:T3GuidanceLogitsProcessor"
T3_WEIGHTS_FILE = "t3_cfg.safetensors"
# The guidance processor reads a request's CFG weight and repetition penalty from extra_args[EXTRA_ARGS_KEY].
EXTRA_ARGS_KEY = "t3"


def guidance_extra_args(cfg_weight: float, repetition_penalty: float) -> dict:
    return {EXTRA_ARGS_KEY: {"cfg_weight": float(cfg_weight), "repetition_penalty": float(repetition_penalty)}}


def vllm_model_dir(t3_weights: Path, cfg: T3Config) -> Path:
    """A directory holding vLLM's view of T3: ``config.json`` and a link to the T3 weights only."""
    return write_vllm_model_dir(t3_weights, vllm_hf_config(cfg), "vllm-t3", T3_WEIGHTS_FILE)


@dataclass(frozen=True)
class LlamaEngineSpec:
    """The Llama T3 for :class:`~vllm_chatterbox.t3.engine.T3Engine` (requests carry :class:`T3Params`)."""

    cfg: T3Config
    logits_processors: tuple[str, ...] = (GUIDANCE_PROCESSOR,)

    def vllm_model_dir(self, t3_weights: Path) -> Path:
        return vllm_model_dir(t3_weights, self.cfg)

    def default_max_model_len(self) -> int:
        return positions.max_prompt_len(self.cfg) + 1000

    def sampling_params(self, params: T3Params) -> dict[str, Any]:
        return {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "min_p": params.min_p,
            "top_k": -1,
            "repetition_penalty": 1.0,  # applied by the guidance processor, over {BOS} + outputs
            "stop_token_ids": [self.cfg.stop_speech_token],
            "extra_args": guidance_extra_args(params.cfg_weight, params.repetition_penalty),
        }
