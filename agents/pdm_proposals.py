"""PDM-Closed's proposals: IDM rollouts along the route centerline and its lateral offsets, at several speeds.

As NAVSIM's PDM-Closed (spec §3.7 steps 3-6): paths = centerline of the route and its +-1 m parallels,
target speeds = fractions of the lane speed limit, other objects forecast (`agents.forecast`: NAVSIM's
constant velocity, or lane following by default), red-light stop lines on the route. Works from a RoadMap, so
every scene source gets the same planner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.forecast import ObjectForecast
from sim.geometry import PACIFICA, VehicleParameters
from sim.map import RoadMap
from sim.route import route_from_ego
from sim.scene import STEP_S
from sim.state import AgentSlice
from sim.traffic import PATH_STEP_M, AgentPaths, IDMParameters, IDMTraffic


@dataclass(frozen=True)
class ProposalConfig:
    """NAVSIM's PDM-Closed settings (MetricCacheProcessor): 3 paths x 5 speeds, 5 s at 10 Hz."""

    # The centerline first, then its offsets, as PDM-Closed orders its paths: on a tie the centerline wins.
    lateral_offsets: tuple[float, ...] = (0.0, -1.0, 1.0)
    speed_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    horizon_steps: int = 50
    idm: IDMParameters = IDMParameters(min_gap=1.0, headway=1.5, accel_max=1.5, decel_comfort=3.0, decel_max=3.0,
                                       corridor_lookahead=40.0, follow_each_other=False, lead_update_steps=2)
    vehicle: VehicleParameters = PACIFICA
    forecast: str = "lane_following"  # agents.forecast.FORECASTS; NAVSIM's is "constant_velocity"

    @property
    def count(self) -> int:
        return len(self.lateral_offsets) * len(self.speed_fractions)


def idm_proposals(road_map: RoadMap, route: list[str], ego_state: np.ndarray, agents: AgentSlice | None,
                  light_ids: list[str], light_status: np.ndarray | None,
                  config: ProposalConfig = ProposalConfig(), braking: np.ndarray | None = None) -> np.ndarray:
    """(P, horizon_steps + 1, 3) rear-axle global poses at 0.1 s, pose 0 = now; proposal order: offset-major."""
    return plan_proposals(road_map, route, ego_state, agents, light_ids, light_status, config, braking)[0]


def plan_proposals(road_map: RoadMap, route: list[str], ego_state: np.ndarray, agents: AgentSlice | None,
                   light_ids: list[str], light_status: np.ndarray | None, config: ProposalConfig = ProposalConfig(),
                   braking: np.ndarray | None = None) -> tuple[np.ndarray, ObjectForecast]:
    """The proposals (see `idm_proposals`) and the object forecast they were rolled out against.
    `braking` (N,): the objects' current deceleration (`agents.forecast.braking_between`), aligned with `agents`."""
    vehicle = config.vehicle
    chain = route_from_ego(road_map, route, ego_state)
    offsets = np.repeat(config.lateral_offsets, len(config.speed_fractions))
    fractions = np.tile(config.speed_fractions, len(config.lateral_offsets))
    paths = AgentPaths.build(road_map, [chain] * len(offsets), offsets)
    # Start every proposal where the ego's box centre projects onto the centerline.
    heading = ego_state[2]
    centre = ego_state[:2] + vehicle.rear_axle_to_center * np.array([np.cos(heading), np.sin(heading)])
    centre_row = int(np.argmin(np.abs(offsets)))  # all paths share the centerline's arc length
    # Searched on the first lane only (and a little beyond): a route may pass the ego's position again later.
    first = int((road_map.lane_lengths[road_map.lane_index[chain[0]]] + 20.0) / PATH_STEP_M) + 1
    s0 = float(np.argmin(np.linalg.norm(paths.points[centre_row, :first] - centre, axis=1))) * PATH_STEP_M
    limit = road_map.lane(chain[0]).speed_limit
    n = len(offsets)
    planner = IDMTraffic(road_map, paths, s=np.full(n, s0), v=np.full(n, max(float(ego_state[3]), 0.0)),
                         desired_speed=fractions * limit, length=np.full(n, vehicle.length),
                         width=np.full(n, vehicle.width), light_ids=light_ids, params=config.idm)
    centre_path = (paths.points[centre_row], paths.heading[centre_row])
    forecast = ObjectForecast.build(agents, config.forecast, braking, centre_path,
                                    planner.red_stop_lines(centre_row, light_status), road_map)
    obstacles = forecast.obstacles(np.arange(config.horizon_steps) * STEP_S)
    poses = np.empty((n, config.horizon_steps + 1, 3))
    for k in range(config.horizon_steps + 1):
        x, y, h = planner.poses()
        poses[:, k] = np.stack([x - vehicle.rear_axle_to_center * np.cos(h), y - vehicle.rear_axle_to_center * np.sin(h), h], -1)
        if k < config.horizon_steps:
            planner.step(STEP_S, obstacles[k], light_status)
    # The rollout starts on the path; the first pose is the ego itself, as in NAVSIM's proposals.
    poses[:, 0] = ego_state[:3]
    return poses, forecast
