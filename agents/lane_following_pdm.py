"""Lane-following PDM: PDM-Closed's recipe (IDM proposals, simulated, scored, the best kept) with w0sim's
improvements: objects forecast along their lanes with queueing (`agents.forecast`), the route followed lane by
lane from the lane reached, objects beyond 250 m left out.

It drives better than NAVSIM's PDM-Closed (`agents.navsim_pdm_closed`) and is the privileged expert of data
collection and the `pdm_lane_following` agent; no benchmark score is normalised by it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from agents.forecast import ObjectForecast, braking_between
from agents.pdm_closed import PlannerAgent
from agents.pdm_proposals import ProposalConfig, plan_proposals
from metrics.pdm import ScoringContext, score_states
from metrics.scoring_map import ScoringMap
from sim.dynamics import interpolate_global_poses, simulate
from sim.geometry import ego_center
from sim.map import RoadMap
from sim.route import route_from_ego
from sim.scene import STEP_S
from sim.state import AgentSlice, TrafficLightStatus, TrajectorySampling
from sim.world_view import WorldView

SCORED_STEPS = 40  # proposals are simulated and scored over 4 s, as NAVSIM's proposal sampling
PLANNING_RADIUS_M = 250.0  # objects beyond this cannot reach the ego within the horizon (closing speed < 60 m/s)


@dataclass(frozen=True)
class LaneFollowingPDMConfig:
    version: str = "v1.1"  # which scorer ranks the proposals (NAVSIM's v2 caches use the v2 scorer)
    proposals: ProposalConfig = ProposalConfig()
    map_radius: float = 100.0


@dataclass
class LaneFollowingPDMPlan:
    """The chosen proposal (T + 1, 3) global rear-axle poses at 0.1 s, every proposal's score, and the
    scoring context they were ranked in (map, forecast, centerline)."""

    poses: np.ndarray
    scores: np.ndarray
    best: int
    context: ScoringContext


class LaneFollowingPDMPlanner:
    """Plans from privileged state: the map, the route, the objects now and the lights now."""

    def __init__(self, config: LaneFollowingPDMConfig = LaneFollowingPDMConfig()):
        self.config = config

    def plan(self, road_map: RoadMap, route: list[str], ego_state: np.ndarray, agents: AgentSlice | None,
             light_ids: list[str], light_status: np.ndarray | None, braking: np.ndarray | None = None) -> LaneFollowingPDMPlan:
        """Plan from the objects now; `braking` (N,) their current deceleration (`agents.forecast.braking_between`).
        Objects farther than PLANNING_RADIUS_M cannot meet the ego within the horizon and are left out."""
        if agents is not None:
            far = np.hypot(agents.x - ego_state[0], agents.y - ego_state[1]) > PLANNING_RADIUS_M
            if (far & agents.valid).any():
                agents = replace(agents, valid=agents.valid & ~far)
        proposals, forecast = plan_proposals(road_map, route, ego_state, agents, light_ids, light_status,
                                             self.config.proposals, braking)
        times = np.arange(SCORED_STEPS + 1) * STEP_S
        references = interpolate_global_poses(proposals[:, : SCORED_STEPS + 1], times)
        states = simulate(ego_state, references)
        context = self._context(road_map, route, ego_state, forecast, light_ids, light_status)
        scores = score_states(states, context, self.config.version).score
        best = int(np.argmax(scores))  # first on ties, as NAVSIM
        return LaneFollowingPDMPlan(proposals[best], scores, best, context)

    def plan_view(self, world: WorldView) -> LaneFollowingPDMPlan:
        """Plan from a world view; the objects' braking is read from their speed change since `agents_before`."""
        braking = None if world.agents_before is None else braking_between(world.agents, world.agents_before,
                                                                            world.history_s)
        return self.plan(world.road_map, world.route, world.ego_state, world.agents, world.light_ids,
                         world.light_status, braking)

    def _context(self, road_map, route, ego_state, forecast: ObjectForecast, light_ids, light_status) -> ScoringContext:
        chain = route_from_ego(road_map, route, ego_state)
        centre = ego_center(ego_state, self.config.proposals.vehicle)
        scoring_map = ScoringMap.from_road_map(road_map, chain, centre, self.config.map_radius)
        observation = forecast.observation(SCORED_STEPS + 1, STEP_S)
        red = [lane for lane in chain if road_map.lane(lane).traffic_light in light_ids and light_status is not None
               and light_status[light_ids.index(road_map.lane(lane).traffic_light)] == TrafficLightStatus.RED]
        if red:
            polygons = [road_map.lane_polygons[road_map.lane_index[lane]] for lane in red]
            observation = observation.with_red_lights(red, polygons, np.ones((SCORED_STEPS + 1, len(red)), dtype=bool))
        centerline = road_map.route_polyline(chain)
        return ScoringContext(scoring_map, observation, centerline)


class LaneFollowingPDMAgent(PlannerAgent):
    """The lane-following PDM planner as an agent: plans from the world view (map, route ahead, objects, lights)."""

    def __init__(self, trajectory_sampling: TrajectorySampling = TrajectorySampling(),
                 config: LaneFollowingPDMConfig = LaneFollowingPDMConfig()):
        super().__init__(LaneFollowingPDMPlanner(config), trajectory_sampling)


__all__ = ["LaneFollowingPDMAgent", "LaneFollowingPDMConfig", "LaneFollowingPDMPlan", "LaneFollowingPDMPlanner"]
