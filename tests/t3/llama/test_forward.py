"""``t3/cpu_attention.py`` in the original-family model: the attention layers calling vLLM's CPU
kernels directly give vLLM's ``Attention`` layer bit for bit.

The folder's engine runs the same seeded requests (both fixture voices, texts of different lengths,
sampled and greedy, CFG on and off) with the direct attention the model uses on a CPU, then with
vLLM's ``Attention`` layer switched back in inside the engine process. The raw cond / uncond logits
of every decode step and every token must be equal. Requests run one at a time, so both sides see
the same steps, and each side has its own cache salt, so neither reuses the other's prefix KV.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.common import set_lean_forward
from tests.t3.llama.driver import TEXTS, fixture_voices, recorded_logits, run_recorded

STEPS = 16
# (text, voice, cfg_weight, temperature)
CASES = [(TEXTS[0], "builtin", 0.5, 0.8), (TEXTS[3], "voice2", 0.5, 0.8), (TEXTS[1], "voice2", 0.0, 0.8),
         (TEXTS[2], "builtin", 0.7, 0.0)]


def run_alone(tts, side: str, record_dir) -> dict:
    voices = fixture_voices()
    outputs = {}
    for i, (text, voice, cfg_weight, temperature) in enumerate(CASES):
        request = tts.prepare_t3_requests(text, voices[voice], cfg_weight=cfg_weight, temperature=temperature,
                                          max_new_tokens=STEPS, seed=2000 + i)[0]
        request = dataclasses.replace(request, cache_salt=f"{side}-{request.cache_salt}")
        outputs.update(run_recorded(tts.t3_engine, [request], record_dir, [f"{side}-{i}"]))
    return outputs


def test_direct_attention_equals_vllms_attention_layer(tts, tmp_path):
    if tts.t3_engine.cpu_hold is None:
        pytest.skip("the direct attention runs on a CPU only")
    assert set_lean_forward(tts.t3_engine, True), "the original-family model on a CPU should call the kernels directly"
    lean = run_alone(tts, "lean", tmp_path)
    try:
        set_lean_forward(tts.t3_engine, False)
        plain = run_alone(tts, "plain", tmp_path)
    finally:
        set_lean_forward(tts.t3_engine, True)
    for i in range(len(CASES)):
        tokens = list(lean[f"lean-{i}"].token_ids)
        assert len(tokens) > 1 and tokens == list(plain[f"plain-{i}"].token_ids)
        np.testing.assert_array_equal(recorded_logits(tmp_path, f"lean-{i}", len(tokens)),
                                      recorded_logits(tmp_path, f"plain-{i}", len(tokens)))
