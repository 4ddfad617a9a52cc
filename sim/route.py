"""Where the ego is on its route: the route lane it has reached, and the route ahead of it (one pass at a time)."""
from __future__ import annotations

import numpy as np
import shapely

from sim.geometry import principal_value
from sim.map import RoadMap

ROUTE_LOOKAHEAD_M = 1000.0  # planning needs the route only this far ahead (long Leaderboard routes)
ROUTE_SEARCH_M = 300.0  # the ego's lane is looked for on the route's first lane and this far beyond it
MAX_ROUTE_HEADING_ERROR = np.pi / 3
ROUTE_MATCH_TOLERANCE_M = 1.0


def route_lane_groups(road_map: RoadMap, route: list[str]) -> list[str]:
    """The lane groups (roadblocks) of a lane route in driving order, consecutive repeats merged: what a NAVSIM log
    lists as the route's roadblocks."""
    groups: list[str] = []
    for lane_id in route:
        group = road_map.lane(lane_id).lane_group
        if not groups or groups[-1] != group:
            groups.append(group)
    return groups


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
    error = np.abs(principal_value(ego_state[2] - road_map.heading_at(indices, s)))
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
