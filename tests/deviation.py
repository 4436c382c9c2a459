"""The fast mode's deviation from fp32 logits, measured and bounded (shared by the T3 and Turbo bf16 tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# fp32 on vLLM against an fp32 reference is ~1e-6 relative L2; bf16 must sit well above it.
FP32_REL_L2 = 1e-5


def assert_bounded_deviation(label: str, ours: Sequence[np.ndarray], expected: Sequence[np.ndarray], agreement: float,
                             *, max_abs_bound: float, rel_l2_bound: float, min_agreement: float) -> None:
    """Max |Δ| and relative L2 over all pairs of arrays, and the share of steps whose token agrees."""
    max_abs = max(float(np.abs(a - b).max()) for a, b in zip(ours, expected, strict=True))
    flat_ours = np.concatenate([a.ravel() for a in ours])
    flat_expected = np.concatenate([b.ravel() for b in expected])
    rel_l2 = float(np.linalg.norm(flat_ours - flat_expected) / np.linalg.norm(flat_expected))
    print(f"{label}: max |Δlogit| {max_abs:.3g}, rel L2 {rel_l2:.3g}, agreement {agreement:.3f}")
    assert rel_l2 > FP32_REL_L2, "no bf16 deviation at all: is the worker running bf16?"
    assert max_abs < max_abs_bound
    assert rel_l2 < rel_l2_bound
    assert agreement >= min_agreement
