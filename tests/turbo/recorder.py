"""Test-only vLLM logits processors around the Turbo sampler.

A request with ``extra_args["record"] = {"dir", "tag", "forced": [...] | None}`` gets, per step
(= tokens generated so far), ``{tag}.raw.{step}.npy`` (the model's logits, before the sampler)
and ``{tag}.proc.{step}.npy`` (the sampler's output, what vLLM draws from). Forcing happens
after the sampler, so the sampler sees the true history and raw logits; the forced id keeps its
processed value and everything else becomes -inf. A forced stop id after the first step is
kept in the stop-marker column, where the sampler moved it. Files are rewritten if a step is
recomputed, so the last write (the one sampled from) remains.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from vllm.v1.sample.logits_processor.interface import BatchUpdate, LogitsProcessor

from vllm_chatterbox.t3.batch_state import apply_batch_update


class _Recorder(LogitsProcessor):
    kind = ""

    def __init__(self, vllm_config, device, is_pin_memory):
        t3 = vllm_config.model_config.hf_config.t3_turbo
        self.stop = t3["stop_speech_token"]
        self.marker = t3["speech_vocab_size"]
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
            path = os.path.join(record["dir"], f"{record['tag']}.{self.kind}.{step}.npy")
            np.save(path + ".tmp.npy", logits[index].float().cpu().numpy())
            os.replace(path + ".tmp.npy", path)
            self.force(logits, index, record.get("forced"), step)
        return logits

    def force(self, logits, index, forced, step):
        pass


class RawRecorder(_Recorder):
    kind = "raw"


class ForcingRecorder(_Recorder):
    kind = "proc"

    def force(self, logits, index, forced, step):
        if forced is None or step >= len(forced):
            return
        column = self.marker if forced[step] == self.stop and step > 0 else forced[step]
        keep = logits[index, column].clone()
        logits[index] = float("-inf")
        logits[index, column] = keep if torch.isfinite(keep) else 0.0


def read(directory, tag: str, kind: str, steps: int) -> np.ndarray:
    return np.stack([np.load(os.path.join(directory, f"{tag}.{kind}.{step}.npy")) for step in range(steps)])


def _recording(params, output_tok_ids: list[int]) -> tuple[dict, list[int]] | None:
    """A request's recorder state: its ``record`` extra arg and live output ids (None: not recorded)."""
    record = (params.extra_args or {}).get("record")
    return None if record is None else (record, output_tok_ids)
