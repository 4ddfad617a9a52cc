"""Score one agent trajectory like NAVSIM's `pdm_score`: validate, sample + track with PDM-Closed, score, or fail."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.pdm import PDMRows, ScoringContext, apply_human_filter, score_states
from sim.dynamics import interpolate_global_poses, interpolate_trajectory_states, simulate, track_trajectories

NUM_SAMPLES, DT = 41, 0.1  # proposal sampling: 40 poses at 0.1 s plus the initial state


@dataclass
class PDMReference:
    """The cached PDM-Closed part of a metric cache: initial ego state and the reference sampled at 10 Hz."""

    initial_state: np.ndarray  # (11,) rear axle, logged velocity / acceleration
    reference_states: np.ndarray  # (41, 11) PDM-Closed trajectory sampled on the scoring grid
    t0_us: int = 0

    @classmethod
    def from_global_poses(cls, initial_state, poses: np.ndarray, interval: float = 0.1,
                          t0_us: int = 0) -> "PDMReference":
        """From the cached PDM-Closed poses (N, 3), pose k at t0 + k * interval (the first is the start)."""
        poses = np.asarray(poses, dtype=np.float64)
        times = np.arange(len(poses)) * interval
        reference = interpolate_global_poses(poses, times, NUM_SAMPLES, DT, t0_us)[0]
        return cls(np.asarray(initial_state, dtype=np.float64), reference, int(t0_us))


def _validate(local_poses, interval) -> tuple[np.ndarray | None, str]:
    """(poses (N, 3) float64 through NAVSIM's float32 Trajectory, '') or (None, reason)."""
    try:
        poses = np.asarray(local_poses, dtype=np.float64)
    except (TypeError, ValueError) as err:
        return None, f"trajectory poses are not numeric: {err}"
    if poses.ndim != 2 or poses.shape[1] != 3:
        return None, f"trajectory poses must have shape (N, 3), got {poses.shape}"
    if poses.shape[0] == 0:
        return None, "trajectory is empty"
    if not np.isfinite(poses).all():
        return None, "trajectory holds non-finite values (NaN or inf)"
    if not isinstance(interval, (int, float, np.floating, np.integer)) or not np.isfinite(interval) or interval <= 0:
        return None, f"trajectory interval must be a positive number of seconds, got {interval!r}"
    with np.errstate(over="ignore"):
        poses32 = poses.astype(np.float32)
    if not np.isfinite(poses32).all():
        return None, "trajectory overflows float32"
    # NAVSIM's Trajectory stores float32 poses.
    return poses32.astype(np.float64), ""


def score_agent(local_poses, interval: float, reference: PDMReference, context: ScoringContext,
                version: str = "v1.1", human_poses=None, human_interval: float = 0.5) -> PDMRows:
    """The agent's row (1 row) scored against PDM-Closed, or a failed row with the reason.

    Agent and PDM-Closed are tracked together (batch of 2, as NAVSIM does). v2.2 with `human_poses` applies
    the human-agent filter (the human trajectory scored alone, without history comfort).
    """
    poses, reason = _validate(local_poses, interval)
    if poses is None:
        return PDMRows.failed(version, reason, NUM_SAMPLES)
    try:
        agent_ref = interpolate_trajectory_states(reference.initial_state, poses, float(interval), NUM_SAMPLES, DT,
                                                  reference.t0_us)
        references = np.concatenate([reference.reference_states[None], agent_ref])
        states = simulate(reference.initial_state, references, dt=DT)
        if not np.isfinite(states).all():
            return PDMRows.failed(version, "simulated states are not finite", NUM_SAMPLES)
        rows = score_states(states, context, version).take(slice(1, 2))
        if human_poses is not None and version == "v2.2":
            human = np.asarray(human_poses, dtype=np.float32).astype(np.float64)
            human_states = track_trajectories(reference.initial_state, human, human_interval, num_samples=NUM_SAMPLES,
                                              dt=DT, t0_us=reference.t0_us)
            rows = apply_human_filter(rows, score_states(human_states, context, version, with_history=False))
        return rows
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        return PDMRows.failed(version, f"scoring failed: {err}", NUM_SAMPLES)


__all__ = ["PDMReference", "score_agent"]
