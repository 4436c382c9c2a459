"""With temperature > 0: the distribution vLLM samples from equals the original's, step by step.

The engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=-1``: for every
generated token vLLM returns the log-softmax of the very logits its sampler draws from, i.e.
after our guidance processor (CFG, repetition penalty over {BOS} + generated), temperature,
min_p and top_p (vllm/v1/sample/sampler.py ``Sampler.sample`` -> ``TopKTopPSampler``, which
computes them after ``apply_top_k_top_p``, on CPU and GPU alike). The plain-PyTorch reference
(reference/t3.py) rebuilds the original's chain on its own raw logits, teacher-forced on
the tokens vLLM sampled, and the two distributions must agree for a mixed batch of four
requests with different voices, texts and sampling parameters, at every step.

Order matters and is checked: the same comparison fails when the reference applies temperature
after min_p, top_p before min_p or the repetition penalty after min_p. (The penalty and the
temperature commute, x / p / T = x / T / p, so no test can or needs to tell those two apart.)
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from reference.t3 import SAMPLING_ORDER, Perturbation, ReferenceT3, SamplingParams
from tests.conftest import KV_CACHE_BYTES
from tests.paths import FIXTURE_CKPT
from tests.t3.llama.driver import mixed_voices
from vllm_chatterbox.config import tiny_config

STEPS = 16
HEAD_SCALE = 0.15
# Measured max |Δ log p| over all steps and kept ids: 9.4e-6 (fp32 logits, temperatures down to 0.5).
LOGPROB_ATOL = 5e-5
# An id within this relative distance of the min_p or top_p threshold may legitimately land on
# the other side in fp32; it is then left out of the comparison.
THRESHOLD_RTOL = 1e-3
NEGLIGIBLE_LOGPROB = -80.0  # mass below 1e-35: fp32 softmax underflow, not part of any choice


@dataclass(frozen=True)
class Job:
    tag: str
    text: str
    voice: int
    exaggeration: float
    params: SamplingParams
    seed: int


JOBS = [
    Job("default", "The lighthouse keeper counted ships until the fog rolled in.", 0, 0.5,
        SamplingParams(cfg_weight=0.5, repetition_penalty=1.2, temperature=0.8, min_p=0.05, top_p=1.0), 3),
    Job("nucleus", "Seven bright lanterns swung above the market square.", 1, 0.9,
        SamplingParams(cfg_weight=0.3, repetition_penalty=1.5, temperature=1.3, min_p=0.02, top_p=0.8), 4),
    Job("sharp", "Hi.", 2, 0.3,
        SamplingParams(cfg_weight=1.0, repetition_penalty=2.0, temperature=0.5, min_p=0.2, top_p=0.95), 5),
    Job("no-cfg", "After the storm, the village gathered on the beach.", 3, 1.2,
        SamplingParams(cfg_weight=0.0, repetition_penalty=1.0, temperature=1.0, min_p=0.0, top_p=0.9), 6),
]


@pytest.fixture(scope="module")
def flat_model_dir(tmp_path_factory):
    """The fixture checkpoint with its speech head scaled by HEAD_SCALE. The fixture's logits are
    so peaked (|logit| up to ~190) that min_p keeps one or two ids and the order of the filters
    could not show; flatter logits leave tens to hundreds of ids to each filter."""
    directory = tmp_path_factory.mktemp("flat-head-model")
    for name in ("s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"):
        (directory / name).symlink_to(FIXTURE_CKPT / name)
    state = load_file(str(FIXTURE_CKPT / "t3_cfg.safetensors"))
    state["speech_head.weight"] = state["speech_head.weight"] * HEAD_SCALE
    save_file(state, str(directory / "t3_cfg.safetensors"))
    tiny_config().save(directory)
    return directory


@pytest.fixture(scope="module")
def tts_processed(flat_model_dir):
    """An engine whose returned logprobs are the sampler's final ones."""
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(flat_model_dir, logprobs_mode="processed_logprobs", max_logprobs=-1,
                                   max_num_seqs=8, max_model_len=512, kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield model
    model.t3_engine.shutdown()


@pytest.fixture(scope="module")
def voices():
    return mixed_voices()


@pytest.fixture(scope="module")
def reference(flat_model_dir):
    return ReferenceT3(flat_model_dir / "t3_cfg.safetensors", tiny_config().t3)


async def _tokens_and_logprobs(engine, request, request_id: str) -> tuple[list[int], list[dict]]:
    """One request through vLLM's engine with full-vocabulary logprobs (the T3Engine's own
    results carry token ids only)."""
    params = engine.sampling_params(request, logprobs=-1)
    prompt = {"prompt_embeds": request.prompt_embeds, "cache_salt": request.cache_salt}
    tokens, logprobs = [], []
    async for out in engine.engine.generate(prompt, params, request_id):
        tokens += out.outputs[0].token_ids
        logprobs += out.outputs[0].logprobs or []
    return tokens, logprobs


async def _decode_together(engine, requests):
    yield await asyncio.gather(*(_tokens_and_logprobs(engine, r, f"dist-{i}") for i, r in enumerate(requests)))


@pytest.fixture(scope="module")
def sampled(tts_processed, voices):
    """Per job: the tokens vLLM sampled and its final log-probabilities (steps, 2V), all four
    requests decoding in one batch."""
    tts = tts_processed
    requests = [
        tts.prepare_t3_requests(job.text, voices[job.voice], exaggeration=job.exaggeration,
                                cfg_weight=job.params.cfg_weight, repetition_penalty=job.params.repetition_penalty,
                                temperature=job.params.temperature, min_p=job.params.min_p,
                                top_p=job.params.top_p, max_new_tokens=STEPS, seed=job.seed)[0]
        for job in JOBS
    ]
    engine = tts.t3_engine
    [outputs] = list(engine.iterate_in_loop(_decode_together(engine, requests)))
    width = 2 * tts.config.t3.speech_vocab_size
    results = {}
    for job, (tokens, logprobs) in zip(JOBS, outputs):
        assert len(logprobs) == len(tokens)
        dense = np.full((len(tokens), width), -np.inf, dtype=np.float32)
        for step, by_id in enumerate(logprobs):
            ids = np.fromiter(by_id.keys(), dtype=np.int64, count=len(by_id))
            dense[step, ids] = [entry.logprob for entry in by_id.values()]
        results[job.tag] = (tokens, torch.from_numpy(dense))
    return results


def reference_raw_logits(tts, reference, voices, job: Job, tokens: list[int]) -> torch.Tensor:
    voice = voices[job.voice]
    conditioning = reference.conditioning(voice.speaker_emb, voice.cond_prompt_speech_tokens, job.exaggeration)
    prefill = reference.prefill_embeds(conditioning, tts.text_token_ids(job.text))
    return reference.teacher_forced_logits(prefill, tokens)


def compare_step(ours: torch.Tensor, reference: ReferenceT3, raw: torch.Tensor, params: SamplingParams,
                 penalised: set[int]) -> tuple[str | None, float]:
    """(mismatch description or None, max |Δ log p| over the kept ids) for one step."""
    vocab = raw.shape[-1]
    if not torch.isneginf(ours[vocab:]).all():
        return "an unconditional column can be sampled", math.inf
    ours = ours[:vocab]
    expected = torch.log_softmax(reference.sampling_logits(raw, params, penalised), -1)
    # Ids whose side of the min_p / top_p threshold flips when the thresholds move by a hair.
    loose = replace(params, min_p=params.min_p * (1 - THRESHOLD_RTOL),
                    top_p=1 - (1 - params.top_p) * (1 - THRESHOLD_RTOL))
    tight = replace(params, min_p=params.min_p * (1 + THRESHOLD_RTOL),
                    top_p=1 - (1 - params.top_p) * (1 + THRESHOLD_RTOL))
    borderline = (torch.isfinite(reference.sampling_logits(raw, loose, penalised))
                  != torch.isfinite(reference.sampling_logits(raw, tight, penalised)))
    kept_ours, kept_ref = torch.isfinite(ours), torch.isfinite(expected)
    negligible = torch.where(kept_ours, ours, expected) < NEGLIGIBLE_LOGPROB
    differ = (kept_ours != kept_ref) & ~borderline & ~negligible
    if differ.any():
        ids = torch.nonzero(differ).flatten()[:5].tolist()
        return f"kept ids differ at {ids} (vLLM keeps {int(kept_ours.sum())}, reference {int(kept_ref.sum())})", math.inf
    common = kept_ours & kept_ref
    ours_common = ours[common] - torch.logsumexp(ours[common], 0)
    ref_common = expected[common] - torch.logsumexp(expected[common], 0)
    return None, (ours_common - ref_common).abs().max().item()


def compare_job(tts, reference, voices, job: Job, sampled) -> list[tuple[int, str | None, float]]:
    tokens, ours = sampled[job.tag]
    raw = reference_raw_logits(tts, reference, voices, job, tokens)
    penalised = {tts.config.t3.start_speech_token}
    results = []
    for step, token in enumerate(tokens):
        results.append((step, *compare_step(ours[step], reference, raw[step], job.params, penalised)))
        penalised.add(token)
    return results


def test_mixed_batch_sampling_distribution_matches_original(tts_processed, reference, voices, sampled):
    for job in JOBS:
        tokens, ours = sampled[job.tag]
        assert len(tokens) == STEPS or tokens[-1] == tts_processed.config.t3.stop_speech_token
        assert ours.shape[0] == len(tokens)
        for step, problem, diff in compare_job(tts_processed, reference, voices, job, sampled):
            assert problem is None, f"{job.tag} step {step}: {problem}"
            assert diff <= LOGPROB_ATOL, f"{job.tag} step {step}: |Δ log p| {diff:.2e}"
        # The sampled token lies inside the distribution it was drawn from.
        assert all(torch.isfinite(ours[step, token]) for step, token in enumerate(tokens))


def test_steps_in_the_wrong_order_are_detected(tts_processed, flat_model_dir, voices, sampled):
    """The comparison above has teeth: each swap of two steps of the chain fails it."""
    swaps = {
        "temperature after min_p": ("repetition_penalty", "min_p", "temperature", "top_p"),
        "top_p before min_p": ("repetition_penalty", "temperature", "top_p", "min_p"),
        "repetition penalty after min_p": ("temperature", "min_p", "repetition_penalty", "top_p"),
    }
    for name, order in swaps.items():
        assert sorted(order) == sorted(SAMPLING_ORDER)
        swapped = ReferenceT3(flat_model_dir / "t3_cfg.safetensors", tiny_config().t3,
                              Perturbation(sampling_order=order))
        caught = [
            (job.tag, step)
            for job in JOBS
            for step, problem, diff in compare_job(tts_processed, swapped, voices, job, sampled)
            if problem is not None or diff > LOGPROB_ATOL
        ]
        assert caught, f"reference with {name} still matches vLLM"

