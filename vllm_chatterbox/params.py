"""Per-request generation parameters: defaults, ranges, and scalar-or-per-text broadcasting.

Every check runs before anything reaches vLLM, so bad input fails with a ValueError that names
the parameter (and the text's index when values are given per text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# name -> (default, lower, upper, lower inclusive, kind). Ranges follow the original's demo UI
# where vLLM allows it; temperature is capped at vLLM's 2.0 (0 means greedy).
T3_PARAMETERS: dict[str, tuple[Any, float, float, bool, type]] = {
    "exaggeration": (0.5, 0.0, 2.0, True, float),
    "cfg_weight": (0.5, 0.0, 2.0, True, float),
    "temperature": (0.8, 0.0, 2.0, True, float),
    "top_p": (1.0, 0.0, 1.0, False, float),
    "min_p": (0.05, 0.0, 1.0, True, float),
    "repetition_penalty": (1.2, 0.0, 10.0, False, float),
    "max_new_tokens": (1000, 1, 4096, True, int),
}


@dataclass(frozen=True)
class T3Params:
    exaggeration: float
    cfg_weight: float
    temperature: float
    top_p: float
    min_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int | None


def per_text(name: str, value: Any, count: int) -> list[Any]:
    """A scalar repeated ``count`` times, or a per-text sequence of exactly ``count`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name}: got {len(value)} values for {count} texts (give one value or one per text)")
        return list(value)
    return [value] * count


def check_number(name: str, value: Any, where: str = "") -> float | int:
    default, lower, upper, lower_inclusive, kind = T3_PARAMETERS[name]
    label = f"{name}{where}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{label} must be a number, got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise ValueError(f"{label} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{label} must be finite, got {value!r}")
    too_low = value < lower if lower_inclusive else value <= lower
    if too_low or value > upper:
        bracket = "[" if lower_inclusive else "("
        raise ValueError(f"{label} must be in {bracket}{lower}, {upper}], got {value!r}")
    return kind(value)


def check_seed(value: Any, where: str = "") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"seed{where} must be None or an integer >= 0, got {value!r}")
    return value


def check_timesteps(value: Any, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError(f"n_timesteps{where} must be an integer in [1, 100], got {value!r}")
    return value


def t3_params(count: int, parameters: dict[str, Any]) -> list[T3Params]:
    """Validated parameters for ``count`` texts from scalar-or-per-text ``parameters``; a
    parameter not given takes its default, an unknown name is an error."""
    known = (*T3_PARAMETERS, "seed")
    reject_unknown({k: v for k, v in parameters.items() if k not in known}, known)
    values = {name: parameters.get(name, T3_PARAMETERS[name][0]) for name in T3_PARAMETERS}
    values["seed"] = parameters.get("seed")
    columns = {name: per_text(name, values[name], count) for name in known}
    result = []
    for i in range(count):
        where = f" (text {i})" if count > 1 else ""
        numbers = {name: check_number(name, columns[name][i], where) for name in T3_PARAMETERS}
        result.append(T3Params(seed=check_seed(columns["seed"][i], where), **numbers))
    return result


def reject_unknown(unknown: dict[str, Any], known: Sequence[str]) -> None:
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; known parameters: {', '.join(known)}")
