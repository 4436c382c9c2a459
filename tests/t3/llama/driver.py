"""Helpers that drive a T3Engine request by request, with the test-only logits recorder."""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass

import numpy as np
import torch

from tests.paths import FIXTURE_CKPT, FIXTURE_DIR, FIXTURE_REF
from reference.recorder import read_recorded
from vllm_chatterbox.demo_model import random_voice
from vllm_chatterbox.voice.voice import Voice



@dataclass(frozen=True)
class FixtureCase:
    name: str
    text: str
    voice: str
    exaggeration: float

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(FIXTURE_REF / f"{self.name}.npz") as data:
            return {k: data[k] for k in data.files}

    def full_logits(self) -> np.ndarray:
        with np.load(FIXTURE_REF / f"{self.name}_full_logits.npz") as data:
            return data["tf_logits"]


def fixture_cases() -> list[FixtureCase]:
    index = json.loads((FIXTURE_DIR / "index.json").read_text())
    return [FixtureCase(c["case"], c["text"], c["voice"], c["exaggeration"]) for c in index["t3"]]


def fixture_voices() -> dict[str, Voice]:
    """The builtin voice (conds.pt) and voice2 (its T3 conditioning arrays; S3Gen part reused)."""
    builtin = Voice.load(FIXTURE_CKPT / "conds.pt")
    with np.load(FIXTURE_REF / "voice_voice2.npz") as data:
        voice2 = Voice(
            speaker_emb=torch.from_numpy(data["ve_speaker_emb"]),
            cond_prompt_speech_tokens=torch.from_numpy(data["t3_cond_prompt_tokens"]).long(),
            exaggeration=0.5,
            prompt_token=torch.from_numpy(data["gen_prompt_token"]).long(),
            prompt_feat=torch.from_numpy(data["gen_prompt_feat"]),
            embedding=torch.from_numpy(data["xvector"]),
        )
    return {"builtin": builtin, "voice2": voice2}


# A mixed-length batch: one very short, two medium and one long text.
TEXTS = [
    "Hi.",
    "The lighthouse keeper counted ships until the fog rolled in.",
    "Seven bright lanterns swung above the market square.",
    "After the storm, the village gathered on the beach to count what the sea had returned: "
    "driftwood, glass floats, a child's red boot, and a letter nobody could read.",
]


def mixed_voices() -> list[Voice]:
    """The two fixture voices and two random ones of other prompt lengths (150 and 60 tokens)."""
    named = fixture_voices()
    return [named["builtin"], named["voice2"],
            random_voice(torch.Generator().manual_seed(11), prompt_tokens=150),
            random_voice(torch.Generator().manual_seed(12), prompt_tokens=60)]


def run_recorded(engine, requests, record_dir, tags, forced=None, steps_before=None, **sampling_overrides):
    """Submit requests (tag per request, optional forced tokens), drain, return T3Results by tag.

    ``steps_before[i]``: request i is submitted once the first request has generated that many
    more tokens since request i-1 was submitted, so requests arrive while earlier ones decode.
    """
    events: queue.Queue = queue.Queue()
    outputs, futures = {}, []
    first_tokens = 0

    def drain(until_first_tokens: int) -> None:
        nonlocal first_tokens
        while first_tokens < until_first_tokens and tags[0] not in outputs:
            tag, (kind, value) = events.get(timeout=120)
            if kind == "tokens" and tag == tags[0]:
                first_tokens += len(value)
            elif kind == "done":
                outputs[tag] = value
            elif kind == "error":
                raise value

    try:
        for i, (request, tag) in enumerate(zip(requests, tags)):
            drain(first_tokens + (steps_before[i] if steps_before else 0))
            record = {"dir": str(record_dir), "tag": tag,
                      "forced": None if forced is None else list(map(int, forced[i]))}
            sink = lambda event, tag=tag: events.put((tag, event))  # noqa: E731
            futures.append(engine.submit(request, sink, extra_args={"record": record}, **sampling_overrides))
        while len(outputs) < len(requests):
            tag, (kind, value) = events.get(timeout=300)
            if kind == "done":
                outputs[tag] = value
            elif kind == "error":
                raise value
    finally:
        for future in futures:
            future.cancel()
    return outputs


def recorded_logits(record_dir, tag: str, steps: int) -> np.ndarray:
    return read_recorded(record_dir, tag, steps)


def assert_matches_reference(reference, tts, job, text_ids, tokens, record_dir, *, repetition_penalty,
                             logits_atol=1e-3, flip_margin=1e-2) -> None:
    """Every decode step of one request against the plain-PyTorch reference.

    (a) the recorded raw cond/uncond logits equal the reference's, teacher-forced on the tokens
    vLLM produced; (b) each token is the argmax of the reference's guided logits (CFG, then the
    repetition penalty over {BOS} + generated), unless the reference's top-2 margin is below
    ``flip_margin`` (then either token is legitimate). ``job`` has tag, voice, exaggeration and
    cfg_weight.
    """
    voice = job.voice
    conditioning = reference.conditioning(voice.speaker_emb, voice.cond_prompt_speech_tokens, job.exaggeration)
    expected = reference.teacher_forced_logits(reference.prefill_embeds(conditioning, text_ids), tokens)
    ours = recorded_logits(record_dir, job.tag, len(tokens))
    diff = np.abs(ours - expected.numpy()).max(axis=(1, 2))
    assert diff.max() < logits_atol, f"{job.tag}: step {diff.argmax()} |Δlogit| {diff.max():.2e}"

    penalised = {tts.config.t3.start_speech_token}
    for step, token in enumerate(tokens):
        guided = type(reference).guided(expected[step].clone(), job.cfg_weight, penalised, repetition_penalty)
        top2 = torch.topk(guided, 2)
        if token != int(top2.indices[0]):
            margin = float(top2.values[0] - top2.values[1])
            assert margin < flip_margin, f"{job.tag}: step {step} chose {token}, reference {int(top2.indices[0])}"
        penalised.add(token)
