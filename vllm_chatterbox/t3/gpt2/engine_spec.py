"""Running the Turbo / Nano T3 on vLLM: its model directory, engine options and requests.

Requests go through the same engine as the original model's T3
(:class:`~vllm_chatterbox.t3.engine.T3Engine`); what differs is the GPT-2 model vLLM sees, the
sampler (``t3/turbo_sampling.py``, all of the original's processing in its order, vLLM sampling
with temperature 1 or greedy from the result) and the stop marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.t3 import engine as t3_engine
from vllm_chatterbox.t3.engine import T3Request
from vllm_chatterbox.t3.turbo_model import ARCHITECTURE
from vllm_chatterbox.t3.turbo_sampling import check_sampling, turbo_extra_args

TURBO_SAMPLING_PROCESSOR = "vllm_chatterbox.t3.turbo_sampling:TurboSamplingLogitsProcessor"


def stop_marker(cfg: TurboT3Config) -> int:
    """The token id that ends a request: the logits column after the speech vocabulary."""
    return cfg.speech_vocab_size


def max_model_len(cfg: TurboT3Config) -> int:
    """Longest sequence: speaker + reference tokens + text + start + every generated token."""
    return min(cfg.max_positions, 2 + cfg.speech_cond_prompt_len + cfg.max_text_tokens + cfg.max_new_tokens)


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
        # Speech tokens plus the stop marker (t3/turbo_sampling.py).
        "vocab_size": cfg.speech_vocab_size + 1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "t3_turbo": asdict(cfg),
    }
    return t3_engine.write_vllm_model_dir(t3_weights, hf_config, "vllm-t3-turbo", t3_weights.resolve().name)


@dataclass(frozen=True)
class TurboParams:
    """One Turbo request's sampling knobs (the ``params`` of its :class:`T3Request`)."""

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int | None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)


class TurboT3Engine(t3_engine.T3Engine):
    """A vLLM engine serving the GPT-2 T3 of Turbo / Nano (requests: :class:`T3Request` with
    :class:`TurboParams`)."""

    def __init__(self, t3_weights: Path, cfg: TurboT3Config, *, extra_logits_processors: Iterable[str] = (),
                 after_sampler_processors: Iterable[str] = (), **engine_options):
        self._after_sampler_processors = list(after_sampler_processors)
        super().__init__(t3_weights, cfg, extra_logits_processors=extra_logits_processors, **engine_options)

    def vllm_model_dir(self, t3_weights: Path) -> Path:
        return vllm_model_dir(t3_weights, self.cfg)

    def default_max_model_len(self) -> int:
        return max_model_len(self.cfg)

    def logits_processors(self, extra: Iterable[str]) -> list[str]:
        # Extra processors (tests) see the raw logits; those after the sampler its processed logits.
        return [*extra, TURBO_SAMPLING_PROCESSOR, *self._after_sampler_processors]

    def sampling_params(self, request: T3Request, extra_args: dict | None = None, **overrides):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        params = {
            # Everything but the draw happens in the Turbo sampler processor.
            "temperature": 0.0 if p.temperature == 0 else 1.0,
            "top_p": 1.0,
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "max_tokens": p.max_new_tokens,
            "seed": p.seed,
            "stop_token_ids": [stop_marker(self.cfg)],
            "detokenize": False,
            "output_kind": RequestOutputKind.DELTA,
            "extra_args": {**turbo_extra_args(p.temperature, p.top_k, p.top_p, p.repetition_penalty),
                           **(extra_args or {})},
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
