"""The IDM route follower: a privileged driver for demos and scene checks (PDM-Closed's centre proposal at full
speed, without the scoring: objects forecast at constant velocity, red lights, leads on the next 40 m)."""
from __future__ import annotations

from agents.base import Agent, require_world
from agents.pdm_closed import plan_to_local
from agents.pdm_proposals import ProposalConfig, idm_proposals
from sim.agent_input import AgentInput
from sim.scene import STEP_S
from sim.state import Trajectory, TrajectorySampling
from sim.traffic import IDMParameters
from sim.world_view import WorldView


class RouteFollowerAgent(Agent):
    privileged = True

    def __init__(self, trajectory_sampling: TrajectorySampling = TrajectorySampling()):
        super().__init__(trajectory_sampling)
        self.config = ProposalConfig(lateral_offsets=(0.0,), speed_fractions=(1.0,),
                                     horizon_steps=int(round(trajectory_sampling.time_horizon / STEP_S)),
                                     idm=IDMParameters(corridor_lookahead=40.0, follow_each_other=False))

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        world = require_world(self, world)
        poses = idm_proposals(world.road_map, world.route, world.ego_state, world.agents, world.light_ids,
                              world.light_status, self.config)[0]
        return Trajectory(plan_to_local(poses, world.ego_state, self.trajectory_sampling), self.trajectory_sampling)
