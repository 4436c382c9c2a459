"""Per-request state of a vLLM logits processor, kept by batch row as vLLM moves requests.

vLLM tells a processor how its persistent batch changed (``update_state``): rows removed, then
requests added at a row, then rows moved or swapped. Every T3 processor (CFG + penalty, the
Turbo sampler, the tests' logit recorders) keeps one state per row in a dict; this applies
those changes to it in vLLM's order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vllm import SamplingParams
from vllm.v1.sample.logits_processor.interface import BatchUpdate, MoveDirectionality

State = TypeVar("State")


def apply_batch_update(states: dict[int, State], batch_update: BatchUpdate | None,
                       new_state: Callable[[SamplingParams, list[int]], State | None]) -> bool:
    """Bring ``states`` (batch row -> state) up to date with ``batch_update``.

    ``new_state(params, output_tok_ids)`` makes an added request's state (``output_tok_ids`` is
    vLLM's live list of its generated ids), or None to keep no state for it. Returns whether the
    batch changed (None means it did not).
    """
    if batch_update is None:
        return False
    for index in batch_update.removed:
        states.pop(index, None)
    for index, params, _prompt_ids, output_tok_ids in batch_update.added:
        state = new_state(params, output_tok_ids)
        if state is None:
            states.pop(index, None)
        else:
            states[index] = state
    for a, b, direction in batch_update.moved:
        state_a = states.pop(a, None)
        state_b = states.pop(b, None)
        if state_a is not None:
            states[b] = state_a
        if direction == MoveDirectionality.SWAP and state_b is not None:
            states[a] = state_b
    return True
