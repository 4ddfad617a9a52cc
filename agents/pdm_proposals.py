"""PDM-Closed's proposals: IDM rollouts along the route centerline and its lateral offsets, at several speeds.

As NAVSIM's PDM-Closed (spec §3.7 steps 3-6): paths = centerline of the route and its +-1 m parallels,
target speeds = fractions of the lane speed limit, other objects forecast (`agents.forecast`: NAVSIM's
constant velocity, or lane following by default), red-light stop lines on the route. Works from a RoadMap, so
every scene source gets the same planner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from agents.forecast import ObjectForecast
from sim.scene import STEP_S
from sim.geometry import PACIFICA, VehicleParameters
from sim.map import RoadMap
from sim.state import AgentSlice, TrafficLightStatus
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


ROUTE_LOOKAHEAD_M = 1000.0  # planning needs the route only this far ahead (long Leaderboard routes)
ROUTE_SEARCH_M = 300.0  # the ego's lane is looked for on the route's first lane and this far beyond it
MAX_ROUTE_HEADING_ERROR = np.pi / 3
ROUTE_MATCH_TOLERANCE_M = 1.0


def route_index_from_ego(road_map: RoadMap, route: list[str], ego_state: np.ndarray,
                         search_m: float = ROUTE_SEARCH_M) -> int:
    """Index of the route lane the ego is on: the nearest lane running its way among the first lane and those
    that start within `search_m` after it (a route that passes a junction twice must not skip ahead to its second
    visit; a crossing lane at right angles is not the ego's)."""
    indices = np.array([road_map.lane_index[lane_id] for lane_id in route])
    ends = np.cumsum(road_map.lane_lengths[indices])
    starts = ends - road_map.lane_lengths[indices]
    indices = indices[starts - ends[0] <= search_m]  # the first lane, and those starting within search_m after it
    point = shapely.Point(ego_state[:2])
    distance = shapely.distance(road_map.lane_centerlines[indices], point)
    s = shapely.line_locate_point(road_map.lane_centerlines[indices], point)
    error = np.abs(np.angle(np.exp(1j * (ego_state[2] - road_map.heading_at(indices, s)))))
    cost = np.where(error < MAX_ROUTE_HEADING_ERROR, distance, distance + 1e6)
    # The first of the lanes about as near as the nearest: where a route passes one junction twice, the
    # lanes of both passes start at the ego; the earlier pass is the one being driven.
    return int(np.argmax(cost <= cost.min() + ROUTE_MATCH_TOLERANCE_M))


def route_from_ego(road_map: RoadMap, route: list[str], ego_state: np.ndarray,
                   lookahead_m: float = ROUTE_LOOKAHEAD_M) -> list[str]:
    """The route from the lane the ego is on (`route_index_from_ego`) onwards, up to `lookahead_m` beyond
    that lane's start and short of the first lane it would enter a second time (a route that loops back
    past the ego is planned one pass at a time)."""
    best = route_index_from_ego(road_map, route, ego_state)
    lengths = np.cumsum(road_map.lane_lengths[[road_map.lane_index[lane_id] for lane_id in route[best:]]])
    chain = list(route[best : best + int(np.searchsorted(lengths, lookahead_m)) + 1])
    repeated = next((k for k, lane_id in enumerate(chain) if lane_id in chain[:k]), len(chain))
    return chain[:repeated]


def idm_proposals(road_map: RoadMap, route: list[str], ego_state: np.ndarray, agents: AgentSlice | None,
                  light_ids: list[str], light_status: np.ndarray | None,
                  config: ProposalConfig = ProposalConfig(), braking: np.ndarray | None = None) -> np.ndarray:
    """(P, horizon_steps + 1, 3) rear-axle global poses at 0.1 s, pose 0 = now; proposal order: offset-major."""
    return plan_proposals(road_map, route, ego_state, agents, light_ids, light_status, config, braking)[0]


def plan_proposals(road_map: RoadMap, route: list[str], ego_state: np.ndarray, agents: AgentSlice | None,
                   light_ids: list[str], light_status: np.ndarray | None, config: ProposalConfig = ProposalConfig(),
                   braking: np.ndarray | None = None) -> tuple[np.ndarray, ObjectForecast]:
    """The proposals (see `idm_proposals`) and the object forecast they were rolled out against.
    `braking` (N,): the objects' current deceleration (`agents.forecast.braking_rates`), aligned with `agents`."""
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
                                    _red_stop_lines(planner, centre_row, light_status), road_map)
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


def _red_stop_lines(planner: IDMTraffic, row: int, light_status: np.ndarray | None) -> np.ndarray:
    """Sorted arc lengths of the red stop lines on one proposal's path."""
    if light_status is None or planner._light_lanes.size == 0:
        return np.zeros(0)
    red = np.asarray(light_status)[planner._light_columns] == TrafficLightStatus.RED
    stops = planner._stop_s[row][red]
    return np.sort(stops[np.isfinite(stops)])
