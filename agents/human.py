"""Human (log replay) agent: the logged future of the ego, in the current frame (NAVSIM's HumanAgent)."""
from __future__ import annotations

import numpy as np

from agents.base import Agent, require_world
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.scene import STEP_S
from sim.state import Trajectory, TrajectorySampling
from sim.world_view import WorldView


def logged_poses(ego_log: np.ndarray, step: int, ego_pose: np.ndarray, sampling: TrajectorySampling) -> np.ndarray:
    """(num_poses, 3) the logged ego poses (`ego_log` (T, 11) at 10 Hz) after log step `step`, in the frame of
    `ego_pose` (3,)."""
    stride = sampling.interval / STEP_S
    if abs(stride - round(stride)) > 1e-9:
        raise ValueError(f"HumanAgent needs an interval that is a multiple of {STEP_S} s, got {sampling.interval}")
    steps = step + (np.arange(sampling.num_poses) + 1) * int(round(stride))
    # A log shorter than the horizon holds its last pose, as a trajectory that ends early does.
    poses = ego_log[np.minimum(steps, len(ego_log) - 1), :3]
    return global_to_local(poses, ego_pose[:3])


class HumanAgent(Agent):
    """Replays the ego's log from now, wherever the ego is (in closed loop the log's path from the current time)."""

    privileged = True

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        world = require_world(self, world)
        poses = logged_poses(world.ego_log, world.step, world.ego_state, self.trajectory_sampling)
        return Trajectory(poses, self.trajectory_sampling)
