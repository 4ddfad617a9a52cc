"""Input validation helpers shared by the dynamics modules: every public entry point checks its inputs once."""
from __future__ import annotations

import math

import numpy as np


def _array(value, name: str, ndims: tuple[int, ...], last: int | None = None,
           min_last: int | None = None) -> np.ndarray:
    """`value` as a finite float64 array with one of `ndims` dimensions, else ValueError naming `name`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__} that numpy cannot convert") from exc
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if last is not None and arr.shape[-1] != last:
        raise ValueError(f"{name} must have {last} values in its last axis, got shape {arr.shape}")
    if min_last is not None and arr.shape[-1] < min_last:
        raise ValueError(f"{name} must have at least {min_last} values in its last axis, got shape {arr.shape}")
    # isfinite(sum) is one reduction instead of an elementwise pass plus all(); the sum of finite values can
    # only overflow to inf, so that (rare) case falls back to the exact elementwise check.
    if not math.isfinite(arr.sum()) and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite values (shape {arr.shape})")
    return arr


def _positive(value, name: str) -> float:
    """`value` as a positive finite float, else ValueError naming `name`."""
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from exc
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _timestamp(value, name: str = "t0_us") -> int:
    """`value` as an integer number of microseconds (bool and float rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of microseconds, got {value!r}")
    return int(value)


def _count(value, name: str, minimum: int) -> int:
    """`value` as an integer >= minimum (bool and float rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
