"""Human (log replay) agent: the logged future of the ego, in the current frame (NAVSIM's HumanAgent)."""
from __future__ import annotations

import numpy as np

from agents.base import Agent
from scenarios.scene import STEP_S, Scene
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.state import Trajectory


class HumanAgent(Agent):
    requires_scene = True

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        if scene is None:
            raise ValueError("HumanAgent replays the scene's log: pass the scene to compute_trajectory")
        sampling = self.trajectory_sampling
        stride = sampling.interval / STEP_S
        if abs(stride - round(stride)) > 1e-9:
            raise ValueError(f"HumanAgent needs an interval that is a multiple of {STEP_S} s, got {sampling.interval}")
        steps = scene.current_index + (np.arange(sampling.num_poses) + 1) * int(round(stride))
        # A log shorter than the horizon holds its last pose, as a trajectory that ends early does.
        poses = scene.ego_log[np.minimum(steps, scene.num_steps - 1), :3]
        return Trajectory(global_to_local(poses, scene.initial_ego_state[:3]), sampling)
