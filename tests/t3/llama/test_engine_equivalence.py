"""The vLLM T3 path against the plain-PyTorch reference loop, under the engine's own conditions:
mixed batches, chunked prefill, preemption, late arrivals, prefix caching.

At every decode step of every request we check (a) the raw cond and uncond logits equal the
reference's, teacher-forced on the tokens vLLM produced (atol 1e-3, as in the fixture tests),
and (b) vLLM's greedy token is the argmax of the reference's guided logits (CFG + repetition
penalty), unless the reference's top-2 margin is below 1e-2 (then either token is legitimate).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reference.t3 import ReferenceT3
from tests.paths import FIXTURE_CKPT
from tests.t3.llama.driver import TEXTS, assert_matches_reference, mixed_voices, run_recorded
from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.voice.voice import Voice

LOGITS_ATOL = 1e-3
FLIP_MARGIN = 1e-2
STEPS = 48
REPETITION_PENALTY = 1.2


@dataclass(frozen=True)
class Job:
    tag: str
    text: str
    voice: Voice
    exaggeration: float
    cfg_weight: float


@pytest.fixture(scope="module")
def reference():
    return ReferenceT3(FIXTURE_CKPT / "t3_cfg.safetensors", tiny_config().t3)


@pytest.fixture(scope="module")
def voices():
    return mixed_voices()


def mixed_jobs(voices, prefix="job") -> list[Job]:
    weights = [0.5, 0.3, 0.0, 1.0]
    exaggerations = [0.5, 0.9, 0.3, 1.2]
    return [Job(f"{prefix}{i}", TEXTS[i], voices[i], exaggerations[i], weights[i]) for i in range(4)]


def submit_and_check(tts, reference, jobs, tmp_path, steps_before=None):
    requests = [
        tts.prepare_t3_requests(j.text, j.voice, exaggeration=j.exaggeration, cfg_weight=j.cfg_weight,
                                repetition_penalty=REPETITION_PENALTY, temperature=0, max_new_tokens=STEPS)[0]
        for j in jobs
    ]
    outputs = run_recorded(tts.t3_engine, requests, tmp_path, [j.tag for j in jobs], steps_before=steps_before)
    for job in jobs:
        check_against_reference(tts, reference, job, outputs[job.tag], tmp_path)
    return outputs


def check_against_reference(tts, reference, job: Job, output, record_dir) -> None:
    tokens = list(output.token_ids)
    assert len(tokens) == STEPS or tokens[-1] == tts.config.t3.stop_speech_token
    assert_matches_reference(reference, tts, job, tts.text_token_ids(job.text), tokens, record_dir,
                             repetition_penalty=REPETITION_PENALTY, logits_atol=LOGITS_ATOL, flip_margin=FLIP_MARGIN)


def test_mixed_batch_matches_reference(tts, reference, voices, tmp_path):
    """Four requests decoding together: different text lengths, voices (two from audio, two
    random; 150 and 60 prompt tokens), CFG weights (incl. 0) and exaggerations."""
    submit_and_check(tts, reference, mixed_jobs(voices), tmp_path)


def test_requests_arriving_while_others_decode(tts, reference, voices, tmp_path):
    jobs = mixed_jobs(voices, "late")
    submit_and_check(tts, reference, jobs, tmp_path, steps_before=[0, 0, 9, 17])


def test_chunked_prefill_and_preemption_match_reference(tts_constrained, reference, voices, tmp_path):
    """32-token scheduling budget (prompts of 40-160 rows prefill in chunks) and 14 KV blocks
    for ~4 x 200 tokens, so vLLM must preempt and recompute requests mid-decode."""
    jobs = mixed_jobs(voices, "tight") + [Job("tight4", TEXTS[3], voices[0], 0.7, 0.5)]
    submit_and_check(tts_constrained, reference, jobs, tmp_path)
    from vllm.v1.metrics.reader import get_metrics_snapshot

    preemptions = sum(getattr(m, "value", 0) for m in get_metrics_snapshot() if m.name == "vllm:num_preemptions")
    assert preemptions > 0, "the constrained engine was meant to preempt at least one request"


def test_prefix_cache_shares_voice_prefix_and_stays_exact(tts, reference, voices, tmp_path):
    """Same voice, same prompt length, different text: the voice rows come from the cache.
    Same voice, other prompt length: other RoPE shift, so nothing may be shared wrongly."""
    base = tts.text_token_ids(TEXTS[1])
    same_length_text = "The lighthouse keeper painted ships until the dog rolled in."
    assert len(tts.text_token_ids(same_length_text)) == len(base)
    first = Job("cache-a", TEXTS[1], voices[2], 0.5, 0.5)
    same_length = Job("cache-b", same_length_text, voices[2], 0.5, 0.5)
    other_length = Job("cache-c", TEXTS[2], voices[2], 0.5, 0.5)
    submit_and_check(tts, reference, [first], tmp_path)
    outputs = submit_and_check(tts, reference, [same_length, other_length], tmp_path)
    block = tts.t3_engine.vllm_config.cache_config.block_size
    assert outputs["cache-b"].num_cached_tokens >= block, "voice prefix was not reused"
