"""``reference/turbo.py`` (the benchmarks' Turbo baseline) is the original's computation.

Checked against the original's recordings on the tiny Turbo fixture: prompt rows, teacher-forced
raw logits, the processor list's output (bit for bit: it is transformers' own processors in the
original's order), and one whole seeded ``inference_turbo`` run drawing from torch's global RNG
as ``generate()`` does. The order check has teeth: the penalty moved first misses the vectors.
"""

import numpy as np
import pytest
import torch

from reference.turbo import ReferenceTurboT3
from tests.paths import TURBO_CKPT, TURBO_REF
from tests.t3.gpt2.conftest import turbo_voices
from vllm_chatterbox.config import tiny_turbo_config

CASES = [f"t3_{text}_{voice}" for text in ("short", "mid", "long", "tags") for voice in ("builtin", "voice2")]
SETTINGS = {
    "default": (0.8, 1000, 0.95, 1.2),
    "wide": (20.0, 1000, 0.95, 1.2),
    "narrow": (8.0, 50, 0.8, 2.0),
    "penalty_only": (1.0, 0, 1.0, 1.2),
}
START = 6561


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(TURBO_REF / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def reference():
    return ReferenceTurboT3(TURBO_CKPT / "t3_turbo_v1.safetensors", tiny_turbo_config().turbo_t3)


def prefill(reference, case: str, text_ids=None) -> torch.Tensor:
    voice = turbo_voices()[case.rsplit("_", 1)[1]]
    ids = load(case)["text_ids"].tolist() if text_ids is None else text_ids
    return reference.prefill_embeds(voice.speaker_emb, voice.cond_prompt_speech_tokens, ids)


@pytest.mark.parametrize("case", CASES)
def test_prompt_and_teacher_forced_logits_match_original(reference, case):
    data = load(case)
    embeds = prefill(reference, case)
    assert torch.allclose(embeds, torch.from_numpy(data["prefill_embeds"]), rtol=0, atol=1e-5)
    logits = reference.teacher_forced_logits(embeds, data["forced_tokens"].tolist())
    cols = torch.from_numpy(data["logit_cols"]).long()
    assert torch.allclose(logits[:, cols], torch.from_numpy(data["tf_logits_cols"]), rtol=0, atol=1e-3)
    assert torch.equal(logits.argmax(-1), torch.from_numpy(data["tf_logits_argmax"]).long())
    assert torch.allclose(logits.logsumexp(-1), torch.from_numpy(data["tf_logits_lse"]), rtol=0, atol=1e-3)


def _sampler_rows(data):
    for row, step in enumerate(data["sampler_steps"]):
        history = [START] if step == 0 else data["sampler_history"][:step].tolist()
        yield row, torch.from_numpy(data["sampler_raw_logits"][row]), history


@pytest.mark.parametrize("case", ["t3_mid_builtin", "t3_tags_voice2"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_processors_equal_original_bit_for_bit(reference, case, setting):
    data = load(case)
    for row, raw, history in _sampler_rows(data):
        processed = reference.processed_logits(raw, history, *SETTINGS[setting])
        assert torch.equal(processed, torch.from_numpy(data[f"sampler_{setting}_processed_logits"][row]))


@pytest.mark.parametrize("case", ["t3_mid_builtin", "t3_tags_voice2"])
def test_penalty_first_misses_the_original(reference, case):
    data = load(case)
    worst = 0.0
    for setting in ("default", "narrow"):
        for row, raw, history in _sampler_rows(data):
            probs = reference.processed_logits(raw, history, *SETTINGS[setting], penalty_first=True).softmax(-1)
            worst = max(worst, (probs - torch.from_numpy(data[f"sampler_{setting}_probs"][row])).abs().max().item())
    assert worst > 1e-2


def test_seeded_generate_reproduces_the_original_run(reference):
    """``torch.manual_seed(4322)`` then the loop with max_gen_len 30: the original's 31 draws."""
    data = load("e2e_builtin")
    embeds = reference.prefill_embeds(turbo_voices()["builtin"].speaker_emb,
                                      turbo_voices()["builtin"].cond_prompt_speech_tokens, data["text_ids"].tolist())
    with torch.random.fork_rng():
        torch.manual_seed(4322)
        tokens = reference.generate(embeds, max_gen_len=30)
    assert tokens == data["t3_tokens"].tolist()
    assert len(tokens) == 31
