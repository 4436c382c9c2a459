"""A vLLM logits processor for tests and benchmarks: records the raw [cond | uncond] logits,
optionally forces tokens.

It runs before the guidance processor, so it sees the model's raw output. Each request that
carries ``extra_args["record"] = {"dir": ..., "tag": ..., "forced": [...] | None}`` gets one
file per step, ``{dir}/{tag}.{step}.npy``, where ``step`` is the number of tokens generated so
far. A step's file is rewritten if the step is recomputed (a chunked-prefill partial row, a
preemption), so the last write, the one the token was sampled from, is what remains. Files are
written before the sampler runs, so they exist once the request's output is returned.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from vllm.v1.sample.logits_processor.interface import BatchUpdate, LogitsProcessor

from vllm_chatterbox.t3.batch_state import apply_batch_update

# How an engine loads it: ChatterboxTTS.from_dir(..., extra_logits_processors=[RECORDER]).
RECORDER = "reference.recorder:RecordingLogitsProcessor"


class RecordingLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device, is_pin_memory):
        self.states: dict[int, tuple[dict, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        apply_batch_update(self.states, batch_update, _recording)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, (record, output_tok_ids) in self.states.items():
            if index >= logits.shape[0]:
                continue
            step = len(output_tok_ids)
            path = os.path.join(record["dir"], self.file_name(record["tag"], step))
            tmp = path + ".tmp.npy"
            np.save(tmp, logits[index].float().cpu().numpy())
            os.replace(tmp, path)
            self.force(logits, index, record.get("forced"), step)
        return logits

    def file_name(self, tag: str, step: int) -> str:
        return f"{tag}.{step}.npy"

    def force(self, logits: torch.Tensor, index: int, forced: list[int] | None, step: int) -> None:
        """Only the forced id survives, in both halves of the packed row."""
        if forced is None or step >= len(forced):
            return
        keep = logits[index].clone()
        logits[index] = float("-inf")
        vocab = logits.shape[1] // 2
        token = forced[step]
        logits[index, token] = keep[token]
        logits[index, vocab + token] = keep[vocab + token]


def read_recorded(directory, tag: str, steps: int) -> np.ndarray:
    """(steps, 2, V) raw logits recorded for one request."""
    rows = [np.load(os.path.join(directory, f"{tag}.{step}.npy")) for step in range(steps)]
    stacked = np.stack(rows)
    return stacked.reshape(steps, 2, -1)


def _recording(params, output_tok_ids: list[int]) -> tuple[dict, list[int]] | None:
    """A request's recorder state: its ``record`` extra arg and live output ids (None: not recorded)."""
    record = (params.extra_args or {}).get("record")
    return None if record is None else (record, output_tok_ids)
