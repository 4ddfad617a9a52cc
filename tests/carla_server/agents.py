"""A cheap privileged agent for the CARLA backend's tests: poses along the world view's route at a fixed speed."""
from __future__ import annotations

import numpy as np

from agents.base import Agent
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.state import Trajectory
from sim.world_view import WorldView

SPEED_MPS = 8.0


class RouteTracerAgent(Agent):
    """Drives the route's lanes at 8 m/s, blind to everything else (about 1 ms a decision, so tests spend their time
    in the backend, not in a planner)."""

    privileged = True

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        line = world.road_map.route_polyline(world.route)
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
        start = s[int(np.argmin(np.linalg.norm(line - world.ego_state[:2], axis=1)))]
        times = (np.arange(self.trajectory_sampling.num_poses) + 1) * self.trajectory_sampling.interval
        along = np.minimum(start + SPEED_MPS * times, s[-1])
        x, y = np.interp(along, s, line[:, 0]), np.interp(along, s, line[:, 1])
        ahead = np.minimum(along + 1.0, s[-1])
        heading = np.arctan2(np.interp(ahead, s, line[:, 1]) - y, np.interp(ahead, s, line[:, 0]) - x)
        return Trajectory(global_to_local(np.stack([x, y, heading], -1), world.ego_state[:3]), self.trajectory_sampling)
