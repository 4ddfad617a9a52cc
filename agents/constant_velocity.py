"""Constant-velocity baseline: keep the current speed and heading for the whole horizon (as NAVSIM's)."""
from __future__ import annotations

import numpy as np

from agents.base import Agent
from sim.agent_input import AgentInput
from sim.state import Trajectory
from sim.world_view import WorldView


class ConstantVelocityAgent(Agent):
    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        speed = float(np.hypot(*agent_input.ego_velocity[-1]))
        times = (np.arange(self.trajectory_sampling.num_poses) + 1) * self.trajectory_sampling.interval
        poses = np.stack([speed * times, np.zeros_like(times), np.zeros_like(times)], axis=-1)
        return Trajectory(poses, self.trajectory_sampling)
