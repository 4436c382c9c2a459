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

from reference.recorder import RecordingLogitsProcessor


class _Recorder(RecordingLogitsProcessor):
    """The T3 recorder's bookkeeping and files (``reference/recorder.py``), named ``{tag}.{kind}.{step}.npy``."""

    kind = ""

    def __init__(self, vllm_config, device, is_pin_memory):
        super().__init__(vllm_config, device, is_pin_memory)
        t3 = vllm_config.model_config.hf_config.t3_turbo
        self.stop = t3["stop_speech_token"]
        self.marker = t3["speech_vocab_size"]

    def file_name(self, tag: str, step: int) -> str:
        return f"{tag}.{self.kind}.{step}.npy"

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

