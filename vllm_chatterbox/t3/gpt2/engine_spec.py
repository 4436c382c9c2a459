"""What the shared T3 engine needs to run the Turbo / Nano T3 (GPT-2) on vLLM.

What differs from the Llama T3: the GPT-2 model vLLM sees (``t3/gpt2/model.py``), the sampler
(``t3/gpt2/sampling.py``: all of the original's processing in its order, vLLM sampling with
temperature 1 or greedy from the result) and the stop marker (``t3/gpt2/tokens.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.t3.engine import write_vllm_model_dir
from vllm_chatterbox.t3.gpt2.params import TurboParams, turbo_extra_args
from vllm_chatterbox.t3.gpt2.tokens import stop_marker

ARCHITECTURE = "ChatterboxT3TurboForCausalLM"
TURBO_SAMPLING_PROCESSOR = "vllm_chatterbox.t3.gpt2.sampling:TurboSamplingLogitsProcessor"


def vllm_model_dir(t3_weights: Path, cfg: TurboT3Config) -> Path:
    """``config.json`` (GPT-2) and a link to the T3 weights only, in a directory of their own."""
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
        # Speech tokens plus the stop marker (t3/gpt2/sampling.py).
        "vocab_size": cfg.speech_vocab_size + 1,
        "tie_word_embeddings": False,
        # GPT-2's default begin/end-of-sequence id (50256) lies outside this vocabulary (transformers
        # says so at every start): prompts are embeddings, so there is no BOS; the end is the marker.
        "bos_token_id": None,
        "eos_token_id": cfg.speech_vocab_size,
        "torch_dtype": "float32",
        "t3_turbo": asdict(cfg),
    }
    return write_vllm_model_dir(t3_weights, hf_config, "vllm-t3-turbo", t3_weights.resolve().name)


@dataclass(frozen=True)
class GPT2EngineSpec:
    """The GPT-2 T3 of Turbo / Nano for :class:`~vllm_chatterbox.t3.engine.T3Engine` (requests
    carry :class:`TurboParams`)."""

    cfg: TurboT3Config
    logits_processors: tuple[str, ...] = (TURBO_SAMPLING_PROCESSOR,)

    def vllm_model_dir(self, t3_weights: Path) -> Path:
        return vllm_model_dir(t3_weights, self.cfg)

    def default_max_model_len(self) -> int:
        """Longest sequence: speaker + reference tokens + text + start + every generated token."""
        cfg = self.cfg
        return min(cfg.max_positions, 2 + cfg.speech_cond_prompt_len + cfg.max_text_tokens + cfg.max_new_tokens)

    def sampling_params(self, params: TurboParams) -> dict[str, Any]:
        return {
            # Everything but the draw happens in the Turbo sampler processor.
            "temperature": 0.0 if params.temperature == 0 else 1.0,
            "top_p": 1.0,
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "stop_token_ids": [stop_marker(self.cfg)],
            "extra_args": turbo_extra_args(params.temperature, params.top_k, params.top_p, params.repetition_penalty),
        }
