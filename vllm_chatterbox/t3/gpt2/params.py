"""One Turbo / Nano request's sampling parameters, and how they reach the sampler processor.

They travel in ``SamplingParams.extra_args["t3_turbo"]`` to ``t3/gpt2/sampling.py``, which applies
them in the original's order; the client checks them first (:func:`check_sampling`), and the
processor checks again what vLLM hands it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXTRA_ARGS_KEY = "t3_turbo"


def turbo_extra_args(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> dict:
    return {EXTRA_ARGS_KEY: {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                             "repetition_penalty": float(repetition_penalty)}}


def check_sampling(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> None:
    """ValueError naming the first bad value (the ranges the original's processors accept)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
        raise ValueError(f"top_p must be a number in [0, 1], got {top_p!r}")
    if isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, (int, float)) \
            or not math.isfinite(repetition_penalty) or repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty!r}")


@dataclass(frozen=True)
class TurboParams:
    """One Turbo request's sampling knobs (the ``params`` of its :class:`~vllm_chatterbox.t3.contract.T3Request`)."""

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int | None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
