"""Comfort checks of NAVSIM's PDM scorer: v1.1 and v2.2 `ego_is_comfortable`, and v2.2 two-frame extended comfort."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import savgol_filter

from sim.geometry import PACIFICA
from sim.state import StateIndex as S

# Bounds (nuPlan ego_is_comfortable defaults, NAVSIM COMFORT module constants).
MIN_LON_ACCEL, MAX_LON_ACCEL = -4.05, 2.40
MAX_ABS_LAT_ACCEL = 4.89
MAX_ABS_JERK = 8.37
MAX_ABS_LON_JERK = 4.13
MAX_ABS_YAW_ACCEL = 1.93
MAX_ABS_YAW_RATE = 0.95
# Two-frame extended comfort RMS thresholds.
EC_MAX_ACCEL, EC_MAX_JERK, EC_MAX_YAW_RATE, EC_MAX_YAW_ACCEL = 0.7, 0.5, 0.1, 0.1
COMFORT_CHECKS = ("lon_accel", "lat_accel", "jerk", "lon_jerk", "yaw_accel", "yaw_rate")
# Savitzky-Golay windows per version: (accel smoothing, jerk derivative). Yaw checks always use window 5.
_WINDOWS = {"v1.1": (41, 41), "v2.2": (8, 15)}


@lru_cache(maxsize=128)
def _savgol_matrix(length: int, window: int, poly: int, deriv: int, delta: float) -> np.ndarray:
    """(length, length) matrix M with savgol_filter(y) == y @ M (mode 'interp' is linear in y; cached per shape)."""
    matrix = savgol_filter(np.eye(length), window_length=min(window, length), polyorder=poly, deriv=deriv, delta=delta,
                           axis=-1)
    matrix.setflags(write=False)
    return matrix


def _savgol(y: np.ndarray, window: int, poly: int, deriv: int = 0, delta: float = 1.0) -> np.ndarray:
    """scipy savgol along time (last axis), mode 'interp', window clipped to the sequence length.

    Applied as a cached linear operator: scipy's own call costs ~1 ms (edge polyfits) per series; the matrix
    form agrees with it to ~1e-15, far below the 8-decimal rounding of the checks.
    """
    return y @ _savgol_matrix(y.shape[-1], window, poly, deriv, float(delta))


def phase_unwrap(heading: np.ndarray) -> np.ndarray:
    """nuPlan's phase_unwrap along the last axis: subtract 2 pi times the cumulative rounded jumps."""
    adj = np.zeros_like(heading)
    adj[..., 1:] = np.cumsum(np.round(np.diff(heading, axis=-1) / (2.0 * np.pi)), axis=-1)
    return heading - 2.0 * np.pi * adj


def _center_accelerations(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rear-axle accelerations shifted to the box centre as nuPlan writes it: a + d w^2 + d alpha, d = (1.461, 0)."""
    d = PACIFICA.rear_axle_to_center
    w, alpha = states[..., S.ANGULAR_VELOCITY], states[..., S.ANGULAR_ACCELERATION]
    # The lateral displacement is 0, so the lateral terms add 0 * (...) as nuPlan's vector formula does.
    lon = states[..., S.ACCELERATION_X] + d * w**2 + d * alpha
    lat = states[..., S.ACCELERATION_Y] + 0.0 * w**2 + 0.0 * alpha
    return lon, lat


def comfort_checks(states: np.ndarray, version: str = "v1.1", dt: float = 0.1) -> np.ndarray:
    """(B, 6) bool per check (COMFORT_CHECKS order) over all T states of (B, T, 11), time grid arange(T) * dt."""
    if version not in _WINDOWS:
        raise ValueError(f"unknown comfort version {version!r}; expected one of {tuple(_WINDOWS)}")
    acc_window, jerk_window = _WINDOWS[version]
    # delta = mean of diff(arange(T) * dt), as nuPlan's _approximate_derivatives computes it.
    delta = float(np.diff(np.arange(states.shape[-2]) * dt).mean())
    if version == "v1.1":
        lon, lat = states[..., S.ACCELERATION_X], states[..., S.ACCELERATION_Y]
    else:
        lon, lat = _center_accelerations(states)
    magnitude = np.hypot(states[..., S.ACCELERATION_X], states[..., S.ACCELERATION_Y])
    length = states.shape[-2]
    # Series sharing a filter go through one matrix product: (B, k, T) @ (T, T).
    acc = np.stack([lon, lat], axis=-2) @ _savgol_matrix(length, acc_window, 2, 0, 1.0)
    smoothed = np.stack([magnitude, lon], axis=-2) @ _savgol_matrix(length, 8, 2, 0, 1.0)  # default window 8
    jerks = smoothed @ _savgol_matrix(length, jerk_window, 2, 1, delta)
    heading = phase_unwrap(states[..., S.HEADING])
    yaw_accel = _savgol(heading, 5, 3, 2, delta)
    yaw_rate = _savgol(heading, 5, 2, 1, delta)
    values = np.concatenate([acc, jerks, yaw_accel[..., None, :], yaw_rate[..., None, :]], axis=-2)  # (B, 6, T)
    values = np.round(values, 8)
    return np.all((values > _LOWER) & (values < _UPPER), axis=-1)


# Bounds per check (COMFORT_CHECKS order), as (6, 1) columns.
_LOWER = np.array([MIN_LON_ACCEL, -MAX_ABS_LAT_ACCEL, -MAX_ABS_JERK, -MAX_ABS_LON_JERK, -MAX_ABS_YAW_ACCEL,
                   -MAX_ABS_YAW_RATE])[:, None]
_UPPER = np.array([MAX_LON_ACCEL, MAX_ABS_LAT_ACCEL, MAX_ABS_JERK, MAX_ABS_LON_JERK, MAX_ABS_YAW_ACCEL,
                   MAX_ABS_YAW_RATE])[:, None]


def _ec_features(states: np.ndarray, delta: float) -> tuple[np.ndarray, ...]:
    accel = _savgol(np.hypot(states[..., S.ACCELERATION_X], states[..., S.ACCELERATION_Y]), 8, 2)
    jerk = _savgol(accel, 15, 2, 1, delta)
    heading = phase_unwrap(states[..., S.HEADING])
    return accel, jerk, _savgol(heading, 5, 2, 1, delta), _savgol(heading, 5, 2, 2, delta)


def two_frame_extended_comfort(now: np.ndarray, prev: np.ndarray, delta_s: float = 0.5, dt: float = 0.1) -> np.ndarray:
    """EC (...,) in {0, 1} of simulated states `now` (..., T, 11) against `prev` started delta_s earlier.

    Compares now[:-k] with prev[k:], k = round(delta_s / dt) (the same absolute times); EC = 1 iff the RMS
    differences of acceleration, jerk, yaw rate and yaw acceleration are within their thresholds.
    """
    if not 0.0 < delta_s < 0.55:
        raise ValueError(f"two-frame extended comfort needs 0 < delta_s < 0.55 s, got {delta_s!r}")
    k = int(round(delta_s / dt))
    a, b = np.asarray(now)[..., :-k, :], np.asarray(prev)[..., k:, :]
    delta = float(np.diff(np.arange(a.shape[-2]) * dt).mean())
    rms = [np.sqrt(np.mean((fa - fb) ** 2, axis=-1)) for fa, fb in zip(_ec_features(a, delta), _ec_features(b, delta))]
    ok = (rms[0] <= EC_MAX_ACCEL) & (rms[1] <= EC_MAX_JERK) & (rms[2] <= EC_MAX_YAW_RATE) & (rms[3] <= EC_MAX_YAW_ACCEL)
    return ok.astype(np.float64)
