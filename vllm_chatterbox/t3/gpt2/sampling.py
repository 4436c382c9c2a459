"""Turbo's sampler, in the original's order, as one vLLM logits processor.

The original (``T3.inference_turbo``) runs HF's processors in this order:
temperature (only if T > 0 and T != 1) -> top-k (only if k > 0) -> top-p (only if p < 1) ->
repetition penalty (only if != 1; over ``[start]`` at the first step, afterwards over the
generated tokens only) -> softmax -> multinomial. vLLM's own sampler would apply the penalty
first (and over prompt ids too), so this processor does all of it and vLLM samples from the
result with temperature 1 and no filters (temperature 0: argmax of the same processed logits).

Stopping: the original never checks the FIRST sampled token for the stop id (6562 is fed back
like any token), and stops on 6562 afterwards. The model returns one extra logits column
(``stop_marker`` = speech vocab size); from the second step on, this processor moves the stop
id's processed logit there, and the engine stops on the marker id. At the first step the marker
is -inf and 6562 stays an ordinary candidate. Probabilities are unchanged either way.

Parameters travel in ``SamplingParams.extra_args["t3_turbo"]`` (see
:func:`~vllm_chatterbox.t3.gpt2.params.turbo_extra_args`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor.interface import BatchUpdate, LogitsProcessor

from vllm_chatterbox.t3.batch_state import apply_batch_update
from vllm_chatterbox.t3.gpt2.params import EXTRA_ARGS_KEY, check_sampling

@dataclass(frozen=True)
class TurboSamplingTensors:
    """Per-row settings of a batch, as the tensors :func:`process_turbo_logits` needs."""

    temperature: torch.Tensor  # (B, 1) float32; 1.0 where the original skips temperature
    top_k: torch.Tensor  # (B,) int64; 0 = off
    top_p_cut: torch.Tensor  # (B, 1) float32: 1 - top_p, or -inf where top-p is off
    penalty: torch.Tensor  # (B, 1) float32

    @classmethod
    def build(cls, settings: list[tuple[float, int, float, float]], device) -> "TurboSamplingTensors":
        temps, ks, cuts, penalties = [], [], [], []
        for temperature, top_k, top_p, penalty in settings:
            temps.append(temperature if temperature > 0 and temperature != 1.0 else 1.0)
            ks.append(top_k)
            # HF compares float32 cumulative probabilities with the float (1 - p).
            cuts.append(1.0 - top_p if top_p < 1.0 else float("-inf"))
            penalties.append(penalty)
        return cls(
            temperature=torch.tensor(temps, dtype=torch.float32, device=device)[:, None],
            top_k=torch.tensor(ks, dtype=torch.int64, device=device),
            top_p_cut=torch.tensor(cuts, dtype=torch.float32, device=device)[:, None],
            penalty=torch.tensor(penalties, dtype=torch.float32, device=device)[:, None],
        )


def process_turbo_logits(logits: torch.Tensor, params: TurboSamplingTensors, penalised: torch.Tensor) -> torch.Tensor:
    """(B, V) float32 raw speech logits -> the logits the original's processor list returns.

    ``penalised`` (B, V) bool marks each row's penalty history (``[start]`` at the first step,
    the generated tokens afterwards). Filtered entries are -inf.
    """
    vocab = logits.shape[1]
    x = logits / params.temperature

    k = params.top_k.clamp(max=vocab)
    if bool((k > 0).any()):
        k_max = int(k.max())
        kth = torch.topk(x, k_max, dim=-1).values.gather(1, (k.clamp(min=1) - 1)[:, None])
        kth = torch.where((k > 0)[:, None], kth, torch.full_like(kth, float("-inf")))
        x = x.masked_fill(x < kth, float("-inf"))

    if bool(torch.isfinite(params.top_p_cut).any()):
        sorted_x, order = torch.sort(x, dim=-1, descending=False)
        cumulative = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= params.top_p_cut
        remove_sorted[:, -1] = False  # the most likely token always survives
        remove = remove_sorted.scatter(1, order, remove_sorted)
        x = x.masked_fill(remove, float("-inf"))

    penalised_x = torch.where(x < 0, x * params.penalty, x / params.penalty)
    return torch.where(penalised, penalised_x, x)


@dataclass
class _RequestState:
    settings: tuple[float, int, float, float]  # temperature, top_k, top_p, repetition_penalty
    output_tok_ids: list[int]  # live reference to the request's generated tokens
    penalised: torch.Tensor  # (V,) bool
    consumed: int = 0  # how many of output_tok_ids are already in `penalised`


class TurboSamplingLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        t3 = vllm_config.model_config.hf_config.t3_turbo
        self.vocab_size: int = t3["speech_vocab_size"]
        self.start_speech_token: int = t3["start_speech_token"]
        self.stop_speech_token: int = t3["stop_speech_token"]
        self.device = device
        self.states: dict[int, _RequestState] = {}
        self._params: TurboSamplingTensors | None = None  # rebuilt when the batch changes

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if args is None:
            raise ValueError(f"Turbo T3 requests need extra_args[{EXTRA_ARGS_KEY!r}]")
        check_sampling(args.get("temperature"), args.get("top_k"), args.get("top_p"), args.get("repetition_penalty"))

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if apply_batch_update(self.states, batch_update, self._new_state):
            self._params = None

    def _new_state(self, params: SamplingParams, output_tok_ids: list[int]) -> _RequestState:
        args = (params.extra_args or {})[EXTRA_ARGS_KEY]
        return _RequestState(
            settings=(args["temperature"], args["top_k"], args["top_p"], args["repetition_penalty"]),
            output_tok_ids=output_tok_ids,
            penalised=torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device),
        )

    def _penalised_row(self, state: _RequestState) -> torch.Tensor:
        outputs = state.output_tok_ids
        if not outputs:
            row = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            row[self.start_speech_token] = True
            return row
        # -1 marks a token not known yet under async scheduling: take it up on a later step.
        known = len(outputs) if -1 not in outputs[state.consumed:] else outputs.index(-1, state.consumed)
        new = [t for t in outputs[state.consumed:known] if 0 <= t < self.vocab_size]
        if new:
            state.penalised[torch.tensor(new, device=self.device)] = True
        state.consumed = known
        return state.penalised

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        batch_size = logits.shape[0]
        if batch_size == 0:
            return logits
        vocab = self.vocab_size
        if self._params is None or self._params.top_k.shape[0] != batch_size:
            default = (1.0, 0, 1.0, 1.0)
            self._params = TurboSamplingTensors.build(
                [self.states[i].settings if i in self.states else default for i in range(batch_size)], self.device)
        rows, first_step = [], []
        for index in range(batch_size):
            state = self.states.get(index)
            if state is None:
                rows.append(torch.zeros(vocab, dtype=torch.bool, device=self.device))
                first_step.append(True)
            else:
                rows.append(self._penalised_row(state))
                first_step.append(len(state.output_tok_ids) == 0)
        processed = process_turbo_logits(logits[:, :vocab], self._params, torch.stack(rows))
        first = torch.tensor(first_step, device=self.device)
        stop = processed[:, self.stop_speech_token]
        logits[:, :vocab] = processed
        # Later steps: the stop id is sampled as the marker column, which ends the request.
        logits[:, vocab] = torch.where(first, torch.full_like(stop, float("-inf")), stop)
        logits[:, self.stop_speech_token] = torch.where(first, stop, torch.full_like(stop, float("-inf")))
        return logits
