"""``t3/gpt2/forward.py``: the lean GPT-2 forward gives vLLM's own forward bit for bit.

The session's Turbo engine runs the same seeded requests (both voices, texts of different
lengths, sampled and greedy) with the lean forward the model uses on a CPU, then with vLLM's
``GPT2Model.forward`` switched back in inside the engine process. Every raw logit of every step
(the prefill's many rows and each decode row) and every token must be equal. Requests run one at
a time, so both sides see the same steps, and each side has its own cache salt, so neither reuses
the other's prefix KV.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import set_lean_forward
from tests.t3.gpt2.recorder import read
from tests.t3.gpt2.test_t3 import DEFAULTS, prompt, run
from vllm_chatterbox.t3.contract import T3Request
from vllm_chatterbox.t3.gpt2.params import TurboParams

CASES = ["t3_short_builtin", "t3_long_voice2", "t3_mid_voice2", "t3_tags_builtin"]
STEPS = 24


def run_alone(engine, builder, side: str, record_dir) -> dict:
    results = {}
    for i, case in enumerate(CASES):
        params = TurboParams(max_new_tokens=STEPS, seed=1000 + i, **{**DEFAULTS, "temperature": 0.0 if i == 3 else 0.8})
        request = T3Request(prompt_embeds=prompt(builder, case), cache_salt=f"{side}-{case}", params=params)
        results.update(run(engine, [(f"{side}-{case}", request, None, {})], record_dir))
    return results


def test_lean_forward_equals_vllms_forward(turbo_engine, prompt_builder, tmp_path):
    if turbo_engine.cpu_hold is None:
        pytest.skip("the lean forward runs on a CPU only")
    assert set_lean_forward(turbo_engine, True), "the Turbo model on a CPU should use the lean forward"
    lean = run_alone(turbo_engine, prompt_builder, "lean", tmp_path)
    try:
        set_lean_forward(turbo_engine, False)
        plain = run_alone(turbo_engine, prompt_builder, "plain", tmp_path)
    finally:
        set_lean_forward(turbo_engine, True)
    for case in CASES:
        tokens = lean[f"lean-{case}"].token_ids
        assert tokens and tokens == plain[f"plain-{case}"].token_ids
        np.testing.assert_array_equal(read(tmp_path, f"lean-{case}", "raw", len(tokens)),
                                      read(tmp_path, f"plain-{case}", "raw", len(tokens)))
