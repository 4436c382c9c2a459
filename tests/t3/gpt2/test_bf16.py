"""Turbo's T3 in the fast mode (``dtype="bfloat16"``) against the original's fp32 recordings.

The eight fixture cases (four texts x two voices) are teacher-forced together through a bf16
Turbo engine on the original's tokens; every step's raw logits are compared with the original's
fp32 ones (all 6563 columns of one case, the 256 recorded columns of the others) and the argmax
must agree at nearly every step. Bounds sit a little above what bf16 measures here; the
deviation must also be well above fp32's own (max 4.6e-5, ``test_t3.py``): the worker really
runs bf16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.deviation import assert_bounded_deviation
from tests.paths import TURBO_REF
from tests.conftest import FORCING_RECORDER, KV_CACHE_BYTES, RAW_RECORDER
from tests.t3.gpt2.recorder import read
from tests.t3.gpt2.test_t3 import CASES, load, prompt, request, run

STEPS = 24
# Measured on this fixture (logits up to |186|): max |Δ| 1.04, rel L2 6.35e-3 over the compared
# columns; argmax agreement 190/192. Bounds about 1.5x the deviation.
MAX_ABS_BOUND = 1.6
REL_L2_BOUND = 9.5e-3
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def turbo_bf16(turbo_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(turbo_model_dir, dtype="bfloat16", extra_logits_processors=[RAW_RECORDER],
                                 after_sampler_processors=[FORCING_RECORDER], max_num_seqs=8,
                                 kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield tts
    tts.t3_engine.shutdown()


def test_turbo_bf16_logits_stay_close_to_original(turbo_bf16, prompt_builder, tmp_path):
    engine = turbo_bf16.t3_engine
    assert engine.engine.model_config.dtype == torch.bfloat16
    jobs = [(case, request(prompt(prompt_builder, case), max_new_tokens=STEPS, salt=case),
             load(case)["forced_tokens"][:STEPS], {}) for case in CASES]
    run(engine, jobs, tmp_path)

    ours, expected, agree = [], [], 0
    for case in CASES:
        data = load(case)
        raw = read(tmp_path, case, "raw", STEPS)[:, :6563]
        ours.append(raw[:, data["logit_cols"]])
        expected.append(data["tf_logits_cols"][:STEPS])
        agree += int((raw.argmax(1) == data["tf_logits_argmax"][:STEPS]).sum())
    with np.load(TURBO_REF / "t3_tags_voice2_full_logits.npz") as data:
        ours.append(read(tmp_path, "t3_tags_voice2", "raw", STEPS)[:, :6563])
        expected.append(data["tf_logits"][:STEPS])
    assert_bounded_deviation(f"Turbo bf16 vs the original's fp32 over {len(CASES)} x {STEPS} steps (argmax agreement)",
                             ours, expected, agree / (len(CASES) * STEPS),
                             max_abs_bound=MAX_ABS_BOUND, rel_l2_bound=REL_L2_BOUND, min_agreement=MIN_AGREEMENT)
