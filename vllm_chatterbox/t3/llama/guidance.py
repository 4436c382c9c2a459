"""The per-request logits step that vLLM's sampler does not know: CFG, then repetition penalty.

The model returns ``[cond | uncond]`` logits (width 2V). Here, for every request:
1. classifier-free guidance ``cond + w * (cond - uncond)`` with the request's own ``w``;
2. the original's repetition penalty over the *set* {BOS} ∪ generated tokens (vLLM's built-in
   penalty would count the embedding-only prompt as token 0, so it is left at 1.0);
and the uncond half is set to -inf so it can never be sampled.

Sampling order, the original's (``T3.inference``: CFG, ``RepetitionPenaltyLogitsProcessor``,
``/ temperature``, ``MinPLogitsWarper``, ``TopPLogitsWarper``, multinomial):
CFG -> repetition penalty (this processor; it must stay non-argmax-invariant so vLLM runs it
before temperature) -> temperature -> min_p -> top_p -> draw (vLLM's sampler).
``tests/t3/llama/test_sampling_distribution.py`` checks the final distribution against the original's.

Parameters travel in ``SamplingParams.extra_args["t3"]`` (see
:func:`~vllm_chatterbox.t3.llama.engine_spec.guidance_extra_args`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor.interface import BatchUpdate, LogitsProcessor

from vllm_chatterbox.t3.batch_state import apply_batch_update
from vllm_chatterbox.t3.llama.engine_spec import EXTRA_ARGS_KEY
from vllm_chatterbox.t3.llama.layout import split_logits


@dataclass
class _RequestState:
    cfg_weight: float
    repetition_penalty: float
    output_tok_ids: list[int]  # live reference to the request's generated tokens
    penalised: torch.Tensor  # (V,) bool: BOS and every generated id so far
    consumed: int = 0  # how many of output_tok_ids are already in `penalised`


class T3GuidanceLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        t3 = vllm_config.model_config.hf_config.t3
        self.vocab_size: int = t3["speech_vocab_size"]
        self.start_speech_token: int = t3["start_speech_token"]
        self.device = device
        self.states: dict[int, _RequestState] = {}
        self._weights: torch.Tensor | None = None  # (B, 1), rebuilt when the batch changes
        self._penalties: torch.Tensor | None = None

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if args is None:
            raise ValueError(f"T3 requests need extra_args[{EXTRA_ARGS_KEY!r}] (cfg_weight, repetition_penalty)")
        weight, penalty = args.get("cfg_weight"), args.get("repetition_penalty")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"cfg_weight must be a finite number >= 0, got {weight!r}")
        if not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty <= 0:
            raise ValueError(f"repetition_penalty must be a finite number > 0, got {penalty!r}")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if apply_batch_update(self.states, batch_update, self._new_state):
            self._weights = self._penalties = None

    def _new_state(self, params: SamplingParams, output_tok_ids: list[int]) -> _RequestState:
        args = (params.extra_args or {}).get(EXTRA_ARGS_KEY, {})
        penalised = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        penalised[self.start_speech_token] = True
        return _RequestState(
            cfg_weight=float(args.get("cfg_weight", 0.0)),
            repetition_penalty=float(args.get("repetition_penalty", 1.0)),
            output_tok_ids=output_tok_ids,
            penalised=penalised,
        )

    def _batch_parameters(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._weights is None or self._weights.shape[0] != batch_size:
            weights, penalties = [], []
            for index in range(batch_size):
                state = self.states.get(index)
                weights.append(state.cfg_weight if state else 0.0)
                penalties.append(state.repetition_penalty if state else 1.0)
            self._weights = torch.tensor(weights, dtype=torch.float32, device=self.device)[:, None]
            self._penalties = torch.tensor(penalties, dtype=torch.float32, device=self.device)[:, None]
        return self._weights, self._penalties

    def _penalised_mask(self, batch_size: int) -> torch.Tensor:
        rows = []
        for index in range(batch_size):
            state = self.states.get(index)
            if state is None:
                rows.append(torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device))
                continue
            new_tokens = state.output_tok_ids[state.consumed:]
            # -1 marks a token not yet known under async scheduling: it is read on a later step.
            known = next((i for i, t in enumerate(new_tokens) if t < 0), len(new_tokens))
            state.consumed += known
            valid = [t for t in new_tokens[:known] if t < self.vocab_size]
            if valid:
                state.penalised[torch.tensor(valid, device=self.device)] = True
            rows.append(state.penalised)
        return torch.stack(rows)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        batch_size = logits.shape[0]
        if batch_size == 0:
            return logits
        vocab = self.vocab_size
        weights, penalties = self._batch_parameters(batch_size)
        cond, uncond = split_logits(logits, vocab)
        # Built-in masks (e.g. min_tokens) act before us on both halves; a masked uncond entry
        # must not turn into NaN through -inf - -inf.
        uncond = torch.where(torch.isfinite(uncond), uncond, cond)
        guided = cond + weights * (cond - uncond)
        guided = torch.where(torch.isneginf(cond), cond, guided)
        penalised_values = torch.where(guided < 0, guided * penalties, guided / penalties)
        guided = torch.where(self._penalised_mask(batch_size), penalised_values, guided)
        logits[:, :vocab] = guided
        logits[:, vocab:] = float("-inf")
        return logits
