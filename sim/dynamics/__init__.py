"""Ego motion as NAVSIM scores it: 10 Hz trajectory sampling, batch LQR tracking and a kinematic bicycle."""
from __future__ import annotations

from sim.dynamics.bicycle import KinematicBicycle
from sim.dynamics.interpolation import interpolate_global_poses, interpolate_states, interpolate_trajectory_states
from sim.dynamics.lqr import BatchLQRTracker, TrackingProfiles
from sim.dynamics.simulation import TrackedEgo, simulate, track_trajectories

__all__ = [
    "KinematicBicycle",
    "BatchLQRTracker",
    "TrackingProfiles",
    "simulate",
    "interpolate_states",
    "interpolate_trajectory_states",
    "interpolate_global_poses",
    "track_trajectories",
    "TrackedEgo",
]
