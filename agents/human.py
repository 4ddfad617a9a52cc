"""Human (log replay) agent: the logged future of the ego, in the current frame (NAVSIM's HumanAgent)."""
from __future__ import annotations

import numpy as np

from agents.base import Agent
from sim.scene import STEP_S, Scene
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.state import Trajectory, TrajectorySampling


def logged_poses(scene: Scene, step: int, ego_pose: np.ndarray, sampling: TrajectorySampling) -> np.ndarray:
    """(num_poses, 3) the logged ego poses after log step `step`, in the frame of `ego_pose` (3,)."""
    stride = sampling.interval / STEP_S
    if abs(stride - round(stride)) > 1e-9:
        raise ValueError(f"HumanAgent needs an interval that is a multiple of {STEP_S} s, got {sampling.interval}")
    steps = step + (np.arange(sampling.num_poses) + 1) * int(round(stride))
    # A log shorter than the horizon holds its last pose, as a trajectory that ends early does.
    poses = scene.ego_log[np.minimum(steps, scene.num_steps - 1), :3]
    return global_to_local(poses, ego_pose[:3])


class HumanAgent(Agent):
    requires_scene = True

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        if scene is None:
            raise ValueError("HumanAgent replays the scene's log: pass the scene to compute_trajectory")
        poses = logged_poses(scene, scene.current_index, scene.initial_ego_state, self.trajectory_sampling)
        return Trajectory(poses, self.trajectory_sampling)
