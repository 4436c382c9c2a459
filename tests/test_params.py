"""Parameter checks: numpy scalars count as numbers, seeds fit vLLM's 64-bit range."""

import numpy as np
import pytest

from vllm_chatterbox.pipeline.long_text import check_join_options
from vllm_chatterbox.params import MAX_SEED, T3_PARAMETERS, check_number, check_seed, check_timesteps, t3_params


@pytest.mark.parametrize("value", [np.float32(0.7), np.float64(0.7), np.int64(1), np.int32(1), np.uint8(1)])
@pytest.mark.parametrize("name", [n for n in T3_PARAMETERS if n != "max_new_tokens"])
def test_numpy_scalars_are_numbers(name, value):
    checked = check_number(name, value)
    assert type(checked) is float and checked == pytest.approx(float(value))


@pytest.mark.parametrize("value", [np.int64(12), np.int32(12), np.uint16(12), np.float32(12.0)])
def test_numpy_integers_for_integer_parameters(value):
    assert type(check_number("max_new_tokens", value)) is int and check_number("max_new_tokens", value) == 12
    assert type(check_timesteps(value)) is int and check_timesteps(value) == 12
    assert type(check_seed(np.int64(12))) is int and check_seed(np.uint64(12)) == 12
    check_join_options(np.int64(24000), np.float32(50), np.int64(100))


@pytest.mark.parametrize("value", [np.bool_(True), True, "1", None, np.array([1.0])])
def test_non_numbers_are_still_rejected(value):
    with pytest.raises(ValueError, match="cfg_weight must be a number"):
        check_number("cfg_weight", value)


def test_t3_params_accept_numpy_scalars_per_text():
    values = {name: T3_PARAMETERS[name][0] for name in T3_PARAMETERS}
    values.update(temperature=[np.float32(0.5), 0.7], max_new_tokens=np.int64(9), seed=[np.int64(3), None])
    params = t3_params(2, values)
    assert [p.temperature for p in params] == [0.5, 0.7]
    assert [p.max_new_tokens for p in params] == [9, 9] and [p.seed for p in params] == [3, None]


def test_seed_bound_is_vllms():
    """vLLM sends seeds to its engine as msgpack integers and seeds a torch.Generator: both take
    at most 2**64 - 1 (2**64 raised OverflowError inside vLLM)."""
    assert MAX_SEED == 2 ** 64 - 1
    assert check_seed(2 ** 64 - 1) == 2 ** 64 - 1
    with pytest.raises(ValueError, match=r"seed must be None or an integer in \[0, 2\*\*64 - 1\]"):
        check_seed(2 ** 64)


def test_exaggeration_none_means_the_voices_own():
    values = {name: T3_PARAMETERS[name][0] for name in T3_PARAMETERS}
    values.update(exaggeration=None, seed=None)
    assert T3_PARAMETERS["exaggeration"][0] is None
    assert t3_params(1, values)[0].exaggeration is None
