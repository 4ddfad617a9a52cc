"""PDM-Closed as an agent: NAVSIM's reference planner (`agents.navsim_pdm_closed`) driving from the world view."""
from __future__ import annotations

import numpy as np

from agents.base import Agent, require_world
from agents.navsim_pdm_closed import NavsimPDMClosedConfig, NavsimPDMClosedPlanner
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.scene import STEP_S
from sim.state import Trajectory, TrajectorySampling
from sim.world_view import WorldView


class PlannerAgent(Agent):
    """A privileged agent that drives a planner's plan: `planner.plan_view(world).poses`, 10 Hz global rear-axle
    poses from now, sampled at the agent's trajectory sampling."""

    privileged = True

    def __init__(self, planner, trajectory_sampling: TrajectorySampling = TrajectorySampling()):
        super().__init__(trajectory_sampling)
        self.planner = planner

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        world = require_world(self, world)
        plan = self.planner.plan_view(world)
        return Trajectory(plan_to_local(plan.poses, world.ego_state, self.trajectory_sampling), self.trajectory_sampling)


class PDMClosedAgent(PlannerAgent):
    """NAVSIM's PDM-Closed, planned afresh at every decision from the map, route, objects and lights."""

    def __init__(self, trajectory_sampling: TrajectorySampling = TrajectorySampling(),
                 config: NavsimPDMClosedConfig = NavsimPDMClosedConfig()):
        super().__init__(NavsimPDMClosedPlanner(config), trajectory_sampling)


def plan_to_local(poses_10hz: np.ndarray, ego_state: np.ndarray, sampling: TrajectorySampling) -> np.ndarray:
    """Poses at the sampling's times from 10 Hz global poses (pose 0 = now), in the ego frame."""
    times = (np.arange(sampling.num_poses) + 1) * sampling.interval
    idx = np.minimum(np.round(times / STEP_S).astype(int), len(poses_10hz) - 1)
    return global_to_local(poses_10hz[idx], ego_state[:3])


__all__ = ["PDMClosedAgent", "PlannerAgent", "plan_to_local"]
