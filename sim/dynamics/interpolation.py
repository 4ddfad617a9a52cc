"""Trajectory sampling as NAVSIM does it (transform_trajectory + get_trajectory_as_array, spec §1.1 steps 2-3)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from sim.dynamics.checks import _array, _count, _positive, _timestamp
from sim.geometry import local_to_global
from sim.state import STATE_SIZE, StateIndex

_S = StateIndex
_HEADING = int(_S.HEADING)
# nuPlan's InterpolatedTrajectory interpolates x, y, velocities, accelerations and the steering angle
# linearly (EgoState.to_split_state) and the heading unwrapped; steering rate, yaw rate and yaw acceleration
# come back as 0. Knots get those three columns zeroed (and the heading unwrapped), so that one linear rule
# over all 11 columns gives exactly that.
_ZEROED = slice(int(_S.STEERING_RATE), STATE_SIZE)
assert (_S.STEERING_RATE, _S.ANGULAR_VELOCITY, _S.ANGULAR_ACCELERATION) == tuple(range(_ZEROED.start, STATE_SIZE))
_PI, _TWO_PI = np.array(np.pi), np.array(2.0 * np.pi)


def _check_times(times: np.ndarray) -> None:
    """ValueError unless the integer knot times (N,) are at least 2 and strictly increasing."""
    if times.shape[0] < 2 or np.any(np.diff(times) <= 0):
        raise ValueError(f"knot_times_us must hold >= 2 strictly increasing times, got {times.tolist()}")


def _sampling(times: np.ndarray, t0_us: int, num_samples: int, dt: float):
    """Where S samples fall among checked knot times (N,): (segments, span, offset).

    Sample k is at int((k dt + t0_us 1e-6) 1e6) us, clipped to the knots' time span. segments (2 S,) holds
    the lower knot index of every sample, then the upper one; span and offset (S, 1) are the segment's
    length and the sample's offset into it, in us.
    """
    # The same float round trip as NAVSIM (seconds since the epoch, then int(t * 1e6)), so truncation by one
    # microsecond happens exactly where it happens there.
    sample_s = np.arange(num_samples, dtype=np.float64) * dt + t0_us * 1e-6
    sample_us = np.clip((sample_s * 1e6).astype(np.int64), times[0], times[-1])
    # scipy interp1d's linear rule: segment [lo, lo + 1] with searchsorted(left) clipped to [1, N - 1].
    hi = np.clip(np.searchsorted(times, sample_us, side="left"), 1, len(times) - 1)
    lo = hi - 1
    offset = (sample_us - times[lo]).astype(np.float64)[:, None]
    span = (times[hi] - times[lo]).astype(np.float64)[:, None]
    segments = np.concatenate([lo, hi])
    for arr in (segments, span, offset):
        arr.setflags(write=False)
    return segments, span, offset


@lru_cache(maxsize=64)
def _trajectory_sampling(count: int, interval: float, t0_us: int, num_samples: int, dt: float):
    """`_sampling` of `count` poses at t0 + (i + 1) interval after a knot at t0 (cached: replanning repeats it)."""
    # nuPlan's _get_fixed_timesteps: arange(0, horizon, interval) + interval + t0 seconds, then int(t * 1e6).
    pose_s = (np.arange(count, dtype=np.float64) * interval + interval) + t0_us * 1e-6
    times = np.concatenate([[t0_us], (pose_s * 1e6).astype(np.int64)])
    _check_times(times)
    return _sampling(times, t0_us, num_samples, dt)


def _unwrap_headings(knots: np.ndarray) -> None:
    """Unwrap the heading column of knots (B, N, 11) along N in place (np.unwrap's values, its cost only if needed)."""
    heading = knots[..., _HEADING]
    jump = heading[:, 1:] - heading[:, :-1]
    # Where every step is below pi, np.unwrap adds 0 to every heading: nothing to do.
    if np.abs(jump, out=jump).max() >= np.pi:  # N >= 2: never empty
        knots[..., _HEADING] = np.unwrap(heading, axis=1)


def _sample(knots: np.ndarray, sampling) -> np.ndarray:
    """Linear interpolation (B, S, 11) of prepared knots (B, N, 11) (zeroed columns, unwrapped heading)."""
    segments, span, offset = sampling
    count = span.shape[0]
    ends = knots[:, segments]  # (B, 2 S, 11): the lower knots, then the upper ones
    low = ends[:, :count]
    out = np.subtract(ends[:, count:], low)  # scipy interp1d: (y_hi - y_lo) / span * offset + y_lo
    out /= span
    out *= offset
    out += low
    heading = out[..., _HEADING]  # principal_value: (h + pi) mod 2 pi - pi
    heading += _PI
    np.remainder(heading, _TWO_PI, out=heading)
    heading -= _PI
    return out


def interpolate_states(
    knot_states, knot_times_us, t0_us: int = 0, num_samples: int = 41, dt: float = 0.1
) -> np.ndarray:
    """Sample knot states (N, 11) / (B, N, 11) at microsecond times (N,) like nuPlan's InterpolatedTrajectory.

    Sample k is at int((k dt + t0_us 1e-6) 1e6) us (NAVSIM's float-seconds round trip, truncated), clipped to
    the knots' time span. x, y, velocities, accelerations and steering angle are linear in time; heading is
    unwrapped over the knots, interpolated and wrapped to [-pi, pi); steering rate, yaw rate and yaw
    acceleration are 0. Returns (B, num_samples, 11).
    """
    knots = _array(knot_states, "knot_states", (2, 3), last=STATE_SIZE)
    knots = knots[None] if knots.ndim == 2 else knots
    times = np.asarray(knot_times_us)
    if times.shape != (knots.shape[1],) or not np.issubdtype(times.dtype, np.integer):
        raise ValueError(
            f"knot_times_us must be {knots.shape[1]} integer microsecond times, got {times.dtype} {times.shape}"
        )
    _check_times(times)
    num_samples = _count(num_samples, "num_samples", 1)
    dt = _positive(dt, "dt")
    t0_us = _timestamp(t0_us)
    knots = knots.copy()  # the caller's array stays as it is
    knots[..., _ZEROED] = 0.0
    _unwrap_headings(knots)
    return _sample(knots, _sampling(times, t0_us, num_samples, dt))


def interpolate_trajectory_states(
    initial_state, local_poses, interval: float, num_samples: int = 41, dt: float = 0.1, t0_us: int = 0
) -> np.ndarray:
    """States (B, num_samples, 11) of planned poses (N, 3) / (B, N, 3) in the initial rear-axle frame.

    Pose i is at t0 + (i + 1) * interval with zero velocity, acceleration and steering; the initial state
    (with its logged velocity and acceleration) is prepended as the knot at t0. t0_us only matters through
    microsecond truncation (NAVSIM stamps poses with int(seconds * 1e6)).
    """
    start = _array(initial_state, "initial_state", (1,), last=STATE_SIZE)
    poses = _array(local_poses, "local_poses", (2, 3), last=3)
    poses = poses[None] if poses.ndim == 2 else poses
    if poses.shape[1] < 1:
        raise ValueError(f"local_poses must hold at least one pose, got shape {poses.shape}")
    interval = _positive(interval, "interval")
    t0_us = _timestamp(t0_us)
    num_samples = _count(num_samples, "num_samples", 1)
    dt = _positive(dt, "dt")
    batch, count = poses.shape[:2]
    sampling = _trajectory_sampling(count, interval, t0_us, num_samples, dt)
    knots = np.zeros((batch, count + 1, STATE_SIZE))
    knots[:, 0, :_ZEROED.start] = start[:_ZEROED.start]
    knots[:, 1:, :3] = local_to_global(poses, start[:3].tolist())  # a float origin: same values, fewer numpy scalars
    _unwrap_headings(knots)
    return _sample(knots, sampling)


def interpolate_global_poses(
    global_poses, times_s, num_samples: int = 41, dt: float = 0.1, t0_us: int = 0
) -> np.ndarray:
    """States (B, num_samples, 11) of global poses (N, 3) / (B, N, 3) at times_s (N,) seconds after t0.

    For references that carry no dynamics, e.g. the cached PDM-Closed trajectory (51 poses at k * 0.1 s,
    the first at the ego start): every knot has zero velocity, acceleration and steering.
    """
    poses = _array(global_poses, "global_poses", (2, 3), last=3)
    poses = poses[None] if poses.ndim == 2 else poses
    times_s = _array(times_s, "times_s", (1,))
    if times_s.shape != (poses.shape[1],):
        raise ValueError(f"times_s has shape {times_s.shape}, expected ({poses.shape[1]},) to match global_poses")
    t0_us = _timestamp(t0_us)
    # Offsets are rounded to whole microseconds (nuPlan TimePoints are integers).
    times = t0_us + np.round(times_s * 1e6).astype(np.int64)
    _check_times(times)
    num_samples = _count(num_samples, "num_samples", 1)
    dt = _positive(dt, "dt")
    knots = np.zeros(poses.shape[:2] + (STATE_SIZE,))
    knots[..., :3] = poses
    sampling = _sampling(times, t0_us, num_samples, dt)
    _unwrap_headings(knots)
    return _sample(knots, sampling)
