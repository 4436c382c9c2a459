"""T3's fast mode (``dtype="bfloat16"``) against the exact fp32 computation: a bounded deviation.

The bf16 engine decodes a mixed batch greedily (four texts, two fixture voices and two random
ones, CFG weights 0 to 1); the plain-PyTorch fp32 reference (equal to our fp32 path at 1e-3,
``test_engine_equivalence.py``) is teacher-forced on the tokens bf16 chose. Every step's raw cond
and uncond logits are compared (max |Δ| and relative L2 over all of them), and bf16's token must
be the fp32 reference's guided argmax at nearly every step. The bounds sit a little above what
bf16 measures on this model; a broken bf16 path (positions lost, prompt or RoPE mis-cast) lands
far outside them. The deviation must also be above fp32's own noise: the worker really runs bf16.
"""

from __future__ import annotations

import pytest
import torch

from tests.deviation import assert_bounded_deviation
from tests.paths import FIXTURE_CKPT
from tests.t3.llama.driver import TEXTS, mixed_voices, recorded_logits, run_recorded
from reference.t3 import ReferenceT3
from vllm_chatterbox.config import tiny_config

STEPS = 48
REPETITION_PENALTY = 1.2
# Measured on the tiny fixture model (logits of std ~11, magnitude up to ~190): max |Δ| 1.63,
# rel L2 0.0071, greedy agreement 0.974 (187 of 192 steps). Bounds about 1.5x the deviation.
MAX_ABS_BOUND = 2.5
REL_L2_BOUND = 0.0105
MIN_AGREEMENT = 0.95
CFG_WEIGHTS = [0.5, 0.3, 0.0, 1.0]
EXAGGERATIONS = [0.5, 0.9, 0.3, 1.2]


@pytest.fixture(scope="module")
def reference():
    return ReferenceT3(FIXTURE_CKPT / "t3_cfg.safetensors", tiny_config().t3)


def test_bf16_logits_stay_close_to_fp32(tts_bf16, reference, tmp_path):
    assert tts_bf16.t3_engine.engine.model_config.dtype == torch.bfloat16
    voices = mixed_voices()
    tags = [f"bf16-{i}" for i in range(len(TEXTS))]
    requests = [
        tts_bf16.prepare_t3_requests(text, voice, exaggeration=exaggeration, cfg_weight=weight,
                                     repetition_penalty=REPETITION_PENALTY, temperature=0, max_new_tokens=STEPS)[0]
        for text, voice, exaggeration, weight in zip(TEXTS, voices, EXAGGERATIONS, CFG_WEIGHTS)
    ]
    outputs = run_recorded(tts_bf16.t3_engine, requests, tmp_path, tags)

    ours, expected, agree, steps = [], [], 0, 0
    for tag, text, voice, exaggeration, weight in zip(tags, TEXTS, voices, EXAGGERATIONS, CFG_WEIGHTS):
        tokens = list(outputs[tag].token_ids)
        conditioning = reference.conditioning(voice.speaker_emb, voice.cond_prompt_speech_tokens, exaggeration)
        prefill = reference.prefill_embeds(conditioning, tts_bf16.text_token_ids(text))
        fp32 = reference.teacher_forced_logits(prefill, tokens)
        ours.append(recorded_logits(tmp_path, tag, len(tokens)))
        expected.append(fp32.numpy())
        penalised = {tts_bf16.config.t3.start_speech_token}
        for step, token in enumerate(tokens):
            guided = ReferenceT3.guided(fp32[step].clone(), weight, penalised, REPETITION_PENALTY)
            agree += token == int(guided.argmax())
            steps += 1
            penalised.add(token)
    assert_bounded_deviation(f"bf16 vs fp32 over {steps} steps (greedy agreement)", ours, expected, agree / steps,
                             max_abs_bound=MAX_ABS_BOUND, rel_l2_bound=REL_L2_BOUND, min_agreement=MIN_AGREEMENT)
