"""Closed-loop tracking as NAVSIM's PDMSimulator does it (spec §3.2): batch `simulate` and the stepped `TrackedEgo`."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.dynamics.bicycle import KinematicBicycle
from sim.dynamics.checks import _array, _positive
from sim.dynamics.interpolation import interpolate_trajectory_states
from sim.dynamics.lqr import BatchLQRTracker, TrackingProfiles
from sim.state import STATE_SIZE


def simulate(
    initial_state,
    reference_states,
    tracker: BatchLQRTracker | None = None,
    model: KinematicBicycle | None = None,
    dt: float = 0.1,
) -> np.ndarray:
    """Track references (B, N, >=3) from initial state(s) (11,) / (B, 11): states (B, N, 11), row 0 = start.

    Step i (1..N-1) applies the tracker's command for reference index i-1 to state i-1 and propagates the
    bicycle by dt. As in NAVSIM, the tracker's discretization time is set to dt.
    """
    tracker = BatchLQRTracker() if tracker is None else tracker
    model = KinematicBicycle() if model is None else model
    if not isinstance(tracker, BatchLQRTracker) or not isinstance(model, KinematicBicycle):
        raise ValueError(f"tracker/model must be BatchLQRTracker/KinematicBicycle, got "
                         f"{type(tracker).__name__}/{type(model).__name__}")
    dt = _positive(dt, "dt")
    reference = _array(reference_states, "reference_states", (3,), min_last=3)
    batch, length = reference.shape[:2]
    start = _array(initial_state, "initial_state", (1, 2), last=STATE_SIZE)
    if start.ndim == 2 and start.shape[0] != batch:
        raise ValueError(f"initial_state has shape {start.shape}, expected ({STATE_SIZE},) or ({batch}, {STATE_SIZE})")
    start = np.broadcast_to(start, (batch, STATE_SIZE))
    if tracker.discretization_time != dt:
        tracker = replace(tracker, discretization_time=dt)
    prof = tracker.profiles_unchecked(reference)
    # NAVSIM advances the model by a TimeDuration of int(dt * 1e6) microseconds (0.1 s -> 0.09999999999999999).
    model_dt_us = int(dt * 1e6)
    if model_dt_us < 1:
        raise ValueError(f"dt must be at least one microsecond, got {dt!r}")
    model_dt = model_dt_us * 1e-6

    # (N, 11, B): state i is a contiguous (11, B) block that the model writes in place.
    out = np.zeros((length, STATE_SIZE, batch))
    out[0] = start.T
    constants = model.step_constants(model_dt)
    tan_steer = None
    for i in range(length - 1):
        accel_cmd, steer_rate_cmd = tracker.command_unchecked(i, out[i], prof)
        tan_steer = model.step_rows(out[i], accel_cmd, steer_rate_cmd, constants, out[i + 1], tan_steer)
    return out.transpose(2, 0, 1).copy()


def track_trajectories(
    initial_state,
    local_poses,
    interval: float,
    tracker: BatchLQRTracker | None = None,
    model: KinematicBicycle | None = None,
    num_samples: int = 41,
    dt: float = 0.1,
    t0_us: int = 0,
) -> np.ndarray:
    """Planned local poses (N, 3) / (B, N, 3) -> simulated states (B, num_samples, 11) (sample + track)."""
    reference = interpolate_trajectory_states(initial_state, local_poses, interval, num_samples, dt, t0_us)
    return simulate(initial_state, reference, tracker=tracker, model=model, dt=dt)


class TrackedEgo:
    """One ego state advanced step by step, tracking its latest plan (the closed-loop form of `simulate`).

    Inputs are checked once per plan; a step is then the same ~60 small numpy calls as one iteration
    of `simulate`, on the (11, 1) row layout the tracker and model share.
    """

    def __init__(self, state, tracker: BatchLQRTracker | None = None, model: KinematicBicycle | None = None,
                 dt: float = 0.1):
        self.tracker = BatchLQRTracker() if tracker is None else tracker
        self.model = KinematicBicycle() if model is None else model
        self._constants = self.model.step_constants(_positive(dt, "dt"))
        self._rows = _array(state, "state", (1,), last=STATE_SIZE).reshape(STATE_SIZE, 1).copy()
        self._tan_steer = None  # tan of the current steering angle, as the last step computed it
        self._profiles: TrackingProfiles | None = None
        self._index = 0

    @property
    def state(self) -> np.ndarray:
        """The current (11,) state (a copy)."""
        return self._rows[:, 0].copy()

    def plan(self, reference) -> None:
        """Follow reference states (N, >=3) from now on; index 0 is the current time."""
        self._profiles = self.tracker.profiles_unchecked(_array(reference, "reference", (2,), min_last=3)[None])
        self._index = 0

    def step(self, control=None) -> np.ndarray:
        """Advance dt with `control` (acceleration, steering rate), or with the tracker's command; returns the state."""
        if control is None:
            profiles = self._profiles
            if profiles is None:
                raise RuntimeError("TrackedEgo.step: call plan() first or pass a control")
            i = min(self._index, profiles.num_steps - 1)
            accel, steer_rate = self.tracker.command_unchecked(i, self._rows, profiles)
            self._index += 1
        else:
            control = _array(control, "control", (1,), last=2)
            accel, steer_rate = control[:1], control[1:]
        out = np.zeros((STATE_SIZE, 1))
        self._tan_steer = self.model.step_rows(self._rows, accel, steer_rate, self._constants, out, self._tan_steer)
        self._rows = out
        return out[:, 0]
