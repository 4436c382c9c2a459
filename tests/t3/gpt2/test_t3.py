"""Turbo T3 on vLLM vs the original (``tiny-turbo/ref/t3_*.npz``, ``t3_stop_handling``, ``e2e_builtin``).

All cases decode together in one vLLM batch (8 teacher-forced, 8 greedy with the generate()
defaults, 8 greedy without processing), so every comparison is made under continuous batching.
Measured on this fixture (CPU, fp32): prefix rows max |diff| 0 (same tables, same rows);
teacher-forced raw logits 4.6e-5 with |logits| up to 186 (the original's own fp32-vs-fp64
spread is 4.9e-5, its parallel-vs-loop spread 5.3e-5); sampler probabilities 1.8e-5; greedy tokens all equal.
"""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch

from tests.paths import TURBO_REF
from tests.t3.gpt2.conftest import turbo_voices
from tests.t3.gpt2.recorder import read
from vllm_chatterbox.t3.contract import T3Request
from vllm_chatterbox.t3.gpt2.params import TurboParams
from vllm_chatterbox.t3.gpt2.tokens import returned_tokens, tokens_for_s3gen

CASES = [f"t3_{text}_{voice}" for text in ("short", "mid", "long", "tags") for voice in ("builtin", "voice2")]
STEPS = 48
DEFAULTS = dict(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2)
PLAIN = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
LOGIT_TOL = 1e-3
# Probabilities from our own logits: a logit difference of 1e-4 moves a probability by up to
# ~3e-5 at temperature 0.8 (given the original's raw logits the sampler is exact, test_sampling).
PROB_TOL = 1e-4


def load(case: str) -> dict[str, np.ndarray]:
    with np.load(TURBO_REF / f"{case}.npz") as data:
        return {k: data[k] for k in data.files}


def prompt(builder, case: str, text_ids=None) -> torch.Tensor:
    voice = turbo_voices()[case.rsplit("_", 1)[1]]
    ids = load(case)["text_ids"].tolist() if text_ids is None else text_ids
    return builder.prompt_embeds(builder.conditioning(voice), ids)


def request(embeds, max_new_tokens=STEPS, salt="s", **sampling):
    params = TurboParams(max_new_tokens=max_new_tokens, seed=None, **{**DEFAULTS, **sampling})
    return T3Request(prompt_embeds=embeds, cache_salt=salt, params=params)


def run(engine, jobs, record_dir, **overrides):
    """jobs: (tag, T3Request, forced ids or None, sampling overrides) -> T3Results by tag, all in flight together."""
    events: queue.Queue = queue.Queue()
    futures = []
    try:
        for tag, req, forced, job_overrides in jobs:
            record = {"dir": str(record_dir), "tag": tag,
                      "forced": None if forced is None else [int(t) for t in forced]}
            sink = lambda event, tag=tag: events.put((tag, event))  # noqa: E731
            futures.append(engine.submit(req, sink, extra_args={"record": record}, **{**overrides, **job_overrides}))
        outputs = {}
        while len(outputs) < len(jobs):
            tag, (kind, value) = events.get(timeout=600)
            if kind == "done":
                outputs[tag] = value
            elif kind == "error":
                raise value
    finally:
        for future in futures:
            future.cancel()
    return outputs


@pytest.fixture(scope="module")
def mixed_batch(turbo_engine, prompt_builder, tmp_path_factory):
    record_dir = tmp_path_factory.mktemp("turbo-t3")
    jobs = []
    for case in CASES:
        embeds = prompt(prompt_builder, case)
        jobs.append((f"{case}-tf", request(embeds, salt=case), load(case)["forced_tokens"], {}))
        # Greedy: vLLM takes the argmax of the sampler's processed logits.
        jobs.append((f"{case}-gd", request(embeds, salt=case), None, {"temperature": 0.0}))
        jobs.append((f"{case}-gp", request(embeds, salt=case, **PLAIN), None, {"temperature": 0.0}))
    return record_dir, run(turbo_engine, jobs, record_dir)


@pytest.mark.parametrize("case", CASES)
def test_prefix_rows_match_original(prompt_builder, case):
    data = load(case)
    embeds = prompt(prompt_builder, case)
    assert int(data["len_cond"]) == 1 + turbo_voices()[case.rsplit("_", 1)[1]].cond_prompt_speech_tokens.shape[1]
    torch.testing.assert_close(embeds, torch.from_numpy(data["prefill_embeds"][0]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_teacher_forced_logits_every_step(mixed_batch, case):
    record_dir, outputs = mixed_batch
    data = load(case)
    assert list(outputs[f"{case}-tf"].token_ids) == data["forced_tokens"].tolist()
    raw = read(record_dir, f"{case}-tf", "raw", STEPS)[:, :6563]
    np.testing.assert_allclose(raw[:, data["logit_cols"]], data["tf_logits_cols"], rtol=0, atol=LOGIT_TOL)
    top_val = np.take_along_axis(raw, data["tf_logits_top16_idx"].astype(np.int64), axis=1)
    np.testing.assert_allclose(top_val, data["tf_logits_top16_val"], rtol=0, atol=LOGIT_TOL)
    np.testing.assert_array_equal(raw.argmax(1), data["tf_logits_argmax"])
    lse = torch.logsumexp(torch.from_numpy(raw), dim=1).numpy()
    np.testing.assert_allclose(lse, data["tf_logits_lse"], rtol=0, atol=LOGIT_TOL)
    # The probabilities the sampler hands to the draw, with the forced history.
    probs = torch.from_numpy(read(record_dir, f"{case}-tf", "proc", STEPS)).softmax(-1).numpy()
    top8 = np.take_along_axis(probs, data["tf_probs_default_top8_idx"].astype(np.int64), axis=1)
    np.testing.assert_allclose(top8, data["tf_probs_default_top8_val"], rtol=0, atol=PROB_TOL)


def test_all_raw_logits_of_one_case(mixed_batch):
    record_dir, _ = mixed_batch
    with np.load(TURBO_REF / "t3_tags_voice2_full_logits.npz") as data:
        expected = data["tf_logits"]
    raw = read(record_dir, "t3_tags_voice2-tf", "raw", STEPS)
    np.testing.assert_allclose(raw[:, :6563], expected, rtol=0, atol=LOGIT_TOL)


@pytest.mark.parametrize("case", CASES)
def test_greedy_tokens_match_original(mixed_batch, case):
    _, outputs = mixed_batch
    data = load(case)
    assert list(outputs[f"{case}-gd"].token_ids) == data["greedy_tokens_default"].tolist()
    assert list(outputs[f"{case}-gp"].token_ids) == data["greedy_tokens_plain"].tolist()


def test_stop_handling_matches_original(turbo_engine, prompt_builder, tmp_path):
    with np.load(TURBO_REF / "t3_stop_handling.npz") as data:
        stop = {k: data[k] for k in data.files}
    short = load("t3_short_builtin")
    embeds = prompt(prompt_builder, "t3_short_builtin")
    cases = {"eos_at_step10": 30, "eos_first_then_eos_at_step5": 30, "no_eos_max_gen_len5": 6}
    jobs = [(name, request(embeds, max_new_tokens=n), stop[f"{name}_forced"], {}) for name, n in cases.items()]
    outputs = run(turbo_engine, jobs, tmp_path)
    cfg = turbo_engine.cfg
    for name in cases:
        tokens = list(outputs[name].token_ids)
        assert returned_tokens(tokens, cfg) == stop[f"{name}_returned"].tolist(), name
        assert tokens_for_s3gen(tokens, cfg) == stop[f"{name}_to_s3gen"].tolist(), name
    assert short["text_ids"].size == 7


def test_e2e_sampling_distributions(turbo_engine, prompt_builder, tmp_path):
    """The e2e run's 31 vectors handed to multinomial (real sampling, defaults), replayed."""
    with np.load(TURBO_REF / "e2e_builtin.npz") as data:
        e2e = {k: data[k] for k in data.files}
    embeds = prompt(prompt_builder, "t3_short_builtin", e2e["text_ids"].tolist())
    n = e2e["t3_tokens"].shape[0]
    outputs = run(turbo_engine, [("e2e", request(embeds, max_new_tokens=n), e2e["t3_sampled"], {})], tmp_path)
    tokens = list(outputs["e2e"].token_ids)
    assert returned_tokens(tokens, turbo_engine.cfg) == e2e["t3_tokens"].tolist()
    assert tokens_for_s3gen(tokens, turbo_engine.cfg) == e2e["tokens_to_s3gen"].tolist()
    probs = torch.from_numpy(read(tmp_path, "e2e", "proc", n)[:, :6563]).softmax(-1).numpy()
    assert np.array_equal(probs == 0, e2e["t3_probs"] == 0)
    np.testing.assert_allclose(probs, e2e["t3_probs"], rtol=0, atol=PROB_TOL)
