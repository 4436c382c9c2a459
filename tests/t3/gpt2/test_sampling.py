"""Turbo's sampler (temperature -> top-k -> top-p -> repetition penalty) vs the original's vectors.

``sampler_*`` arrays of ``t3_mid_builtin`` / ``t3_tags_voice2``: raw logits at six steps, the
history, and the processed logits / probabilities the original handed to ``multinomial`` with
four settings. All rows of a case go through one batched call, as the vLLM processor runs them.
"""

import numpy as np
import pytest
import torch

from tests.paths import TURBO_REF
from vllm_chatterbox.t3.gpt2.params import check_sampling
from vllm_chatterbox.t3.gpt2.sampling import TurboSamplingTensors, process_turbo_logits

START = 6561
SETTINGS = {
    "default": (0.8, 1000, 0.95, 1.2),
    "wide": (20.0, 1000, 0.95, 1.2),
    "narrow": (8.0, 50, 0.8, 2.0),
    "penalty_only": (1.0, 0, 1.0, 1.2),
}
# Measured on these cases: processed logits bit-equal, probabilities within 3e-8 (the batched softmax).
PROB_TOL = 1e-6


def _inputs(case: str):
    data = np.load(TURBO_REF / f"{case}.npz")
    steps = data["sampler_steps"]
    raw = torch.from_numpy(data["sampler_raw_logits"])
    penalised = torch.zeros(raw.shape, dtype=torch.bool)
    for row, step in enumerate(steps):
        history = [START] if step == 0 else data["sampler_history"][:step].tolist()
        penalised[row, history] = True
    return data, raw, penalised


def _process(raw, penalised, settings, order="original"):
    params = TurboSamplingTensors.build([settings] * raw.shape[0], raw.device)
    if order == "penalty_first":
        # vLLM's stock order: penalty on the raw logits, then temperature and the filters.
        penalised_raw = torch.where(raw < 0, raw * params.penalty, raw / params.penalty)
        raw = torch.where(penalised, penalised_raw, raw)
        no_penalty = TurboSamplingTensors.build([(*settings[:3], 1.0)] * raw.shape[0], raw.device)
        return process_turbo_logits(raw, no_penalty, penalised)
    return process_turbo_logits(raw, params, penalised)


@pytest.mark.parametrize("case", ["t3_mid_builtin", "t3_tags_voice2"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_processed_logits_and_probs_match_original(case, setting):
    data, raw, penalised = _inputs(case)
    processed = _process(raw, penalised, SETTINGS[setting])
    expected = torch.from_numpy(data[f"sampler_{setting}_processed_logits"])
    assert torch.equal(torch.isinf(processed), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(processed[finite], expected[finite], rtol=0, atol=1e-5)
    probs = processed.softmax(-1)
    diff = (probs - torch.from_numpy(data[f"sampler_{setting}_probs"])).abs().max().item()
    assert diff <= PROB_TOL, diff


@pytest.mark.parametrize("case", ["t3_mid_builtin", "t3_tags_voice2"])
def test_penalty_first_order_is_detected(case):
    """The check has teeth: vLLM's order (penalty first) misses the recorded vectors."""
    data, raw, penalised = _inputs(case)
    worst = 0.0
    for setting in ("default", "narrow"):
        probs = _process(raw, penalised, SETTINGS[setting], order="penalty_first").softmax(-1)
        worst = max(worst, (probs - torch.from_numpy(data[f"sampler_{setting}_probs"])).abs().max().item())
    assert worst > 100 * PROB_TOL


def test_mixed_settings_in_one_batch_equal_separate_runs():
    data, raw, penalised = _inputs("t3_mid_builtin")
    names = list(SETTINGS)
    settings = [SETTINGS[names[i % len(names)]] for i in range(raw.shape[0])]
    batched = process_turbo_logits(raw, TurboSamplingTensors.build(settings, "cpu"), penalised)
    for i, s in enumerate(settings):
        alone = process_turbo_logits(raw[i:i + 1], TurboSamplingTensors.build([s], "cpu"), penalised[i:i + 1])
        assert torch.equal(batched[i:i + 1], alone)


@pytest.mark.parametrize("bad", [(-0.1, 1000, 0.95, 1.2), (0.8, -1, 0.95, 1.2), (0.8, 1000, 1.5, 1.2),
                                 (0.8, 1000, 0.95, 0.0), (0.8, 2.5, 0.95, 1.2), (float("nan"), 1000, 0.95, 1.2)])
def test_bad_sampling_values_are_refused(bad):
    with pytest.raises(ValueError):
        check_sampling(*bad)
