"""CARLA Leaderboard routes: read route XML files and densify each route along a town's lane graph.

A Leaderboard route lists sparse waypoints in CARLA's frame; the Leaderboard densifies them with
CARLA's global route planner (1 m hops along the road network, lane changes allowed) and scores
route completion on that dense route. Here the same happens on the town's `RoadMap`: a shortest
path over lanes (successor links, plus lane changes to a parallel lane of the same lane group)
between consecutive waypoints gives the route's lane chain (`RoadMap.route_polyline` drives a
lane change along a blend of the two lanes). `scenarios.route_scenes` turns it into a closed-loop scene.
"""
from __future__ import annotations

import heapq
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely

from scenarios.opendrive import Town, carla_to_local, load_town
from sim.geometry import principal_value
from sim.map import RoadMap

DENSE_STEP_M = 1.0  # the Leaderboard's route-planner hop
LANE_CHANGE_COST_M = 20.0  # a lane change costs like this much extra driving (keeps routes in lane)
WAYPOINT_SNAP_M = 5.0  # a waypoint farther than this from every lane is an error
WAYPOINT_MATCH_M = 1.5  # lanes this close to a waypoint (and running its way) may carry the route there
MAX_HEADING_ERROR = np.pi / 3


class RouteFileError(ValueError):
    """A route file cannot be used: names the file, the route and what is wrong."""


@dataclass(frozen=True)
class LeaderboardRoute:
    """One `<route>`: waypoints (K, 3) = x, y, heading in w0sim's right-handed frame."""

    route_id: str
    town: str
    waypoints: np.ndarray
    source: str = ""
    metadata: dict = field(default_factory=dict)  # weather and other elements this simulator does not use


@dataclass(frozen=True)
class DenseRoute:
    """A route on a map: the lane chain, its 1 m polyline, and where the route starts and ends on it."""

    lane_ids: list[str]
    points: np.ndarray  # (M, 2) every DENSE_STEP_M from start_s to end_s along the chain
    start_s: float
    end_s: float

    @property
    def length_m(self) -> float:
        return self.end_s - self.start_s


# --- route files -----------------------------------------------------------------------------


def read_routes(path: str | Path) -> list[LeaderboardRoute]:
    """All routes of a Leaderboard route XML (1.0 `<waypoint>` lists, 2.x `<waypoints><position>` lists)."""
    path = Path(path)
    if not path.is_file():
        raise RouteFileError(f"{path}: no such route file")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise RouteFileError(f"{path}: not valid XML ({err})") from None
    if root.tag != "routes":
        raise RouteFileError(f"{path}: root element is <{root.tag}>, expected <routes>")
    routes = [_read_route(path, element) for element in root.iter("route")]
    if not routes:
        raise RouteFileError(f"{path}: holds no <route> elements")
    ids = [r.route_id for r in routes]
    if len(set(ids)) != len(ids):
        raise RouteFileError(f"{path}: duplicate route ids")
    return routes


def _read_route(path: Path, element: ElementTree.Element) -> LeaderboardRoute:
    route_id, town = element.get("id"), element.get("town")
    if route_id is None or town is None:
        raise RouteFileError(f"{path}: a <route> lacks its 'id' or 'town' attribute ({element.attrib})")
    where = f"{path}: route {route_id}"
    points = element.findall("waypoint") or element.findall("waypoints/position")
    if len(points) < 2:
        raise RouteFileError(f"{where} has {len(points)} waypoints; a route needs at least 2")
    rows = []
    for k, point in enumerate(points):
        try:
            rows.append([float(point.get("x")), float(point.get("y")), float(point.get("yaw", "nan"))])
        except (TypeError, ValueError):
            raise RouteFileError(f"{where}: waypoint {k} has no numeric x/y ({point.attrib})") from None
    xyz = np.array(rows)
    x, y, heading = carla_to_local(xyz[:, 0], xyz[:, 1], xyz[:, 2])
    metadata = {"attributes": dict(element.attrib), "z": [float(p.get("z", 0.0)) for p in points]}
    for child in element:
        if child.tag not in ("waypoint", "waypoints"):
            metadata.setdefault("elements", []).append(ElementTree.tostring(child, encoding="unicode").strip())
    return LeaderboardRoute(route_id, town, np.stack([x, y, heading], -1), str(path), metadata)


@lru_cache(maxsize=4)
def town_for(town_dir: str, name: str) -> Town:
    """The town `name` from `<town_dir>/<name>.xodr`, loaded once per process."""
    path = Path(town_dir) / f"{name}.xodr"
    if not path.is_file():
        known = sorted(p.stem for p in Path(town_dir).glob("*.xodr"))
        raise RouteFileError(f"unknown town {name!r}: no {path} (towns in {town_dir}: {', '.join(known) or 'none'})")
    return load_town(path, name)


# --- densification -----------------------------------------------------------------------------


def _lane_neighbours(road_map: RoadMap) -> dict[str, tuple[str, ...]]:
    """Lanes one can change into: those of the same lane group the map counts as a lane change
    (`RoadMap.is_lane_change`, the rule `route_polyline` drives by)."""
    groups: dict[str, list[str]] = {}
    for lane in road_map.lanes:
        groups.setdefault(lane.lane_group, []).append(lane.id)
    return {a: tuple(b for b in members if road_map.is_lane_change(a, b)) for members in groups.values() for a in members}


def _candidates(road_map: RoadMap, waypoint: np.ndarray, where: str) -> dict[int, float]:
    """{lane index: arc length} of the lanes a waypoint may lie on: every lane within WAYPOINT_MATCH_M running
    the waypoint's way (at junctions several connectors overlap), else the nearest lane."""
    pose = np.asarray(waypoint, dtype=np.float64).copy()
    if not np.isfinite(pose[2]):
        pose[2] = 0.0
    point = shapely.Point(pose[:2])
    near = road_map.lane_tree.query(point, predicate="dwithin", distance=WAYPOINT_MATCH_M)
    s = road_map.project(near, np.tile(pose[:2], (len(near), 1))) if len(near) else np.zeros(0)
    error = np.abs(principal_value(pose[2] - road_map.heading_at(near, s))) if len(near) else np.zeros(0)
    aligned = error < MAX_HEADING_ERROR
    if aligned.any():
        return {int(k): float(v) for k, v in zip(near[aligned], s[aligned])}
    lane = int(road_map.nearest_lanes(pose[None])[0])
    distance = shapely.distance(road_map.lane_centerlines[lane], point)
    if distance > WAYPOINT_SNAP_M:
        raise RouteFileError(f"{where} lies {distance:.1f} m from the nearest lane of map {road_map.name!r}")
    return {lane: float(road_map.project([lane], pose[None, :2])[0])}


def _paths_to(road_map: RoadMap, start: int, start_s: float, goals: dict[int, float],
              neighbours: dict[str, tuple[str, ...]]) -> dict[int, tuple[float, list[tuple[str, bool]]]]:
    """{goal lane: (metres, [(lane id, reached by a lane change)])} from the point `start_s` of the start lane to
    the goal point (arc length in `goals`) of every reachable goal lane: Dijkstra over successor and
    lane-change edges. The start lane itself is a goal when its goal point lies ahead."""
    lanes = road_map.lanes
    found: dict[int, tuple[float, list[tuple[str, bool]]]] = {}
    if start in goals and goals[start] >= start_s - 1e-6:
        found[start] = (goals[start] - start_s, [(lanes[start].id, False)])
    goal_s = {lanes[g].id: s for g, s in goals.items()}
    start_id = lanes[start].id
    # Costs are metres to the end of a lane; a queue entry marked `arrive` is a goal point itself.
    best = {(start_id, False): road_map.lane(start_id).length - start_s}
    previous: dict[tuple[str, bool], tuple[str, bool]] = {}
    queue = [(best[(start_id, False)], start_id, False, False)]
    while queue and len(found) < len(goals):
        cost, lane_id, changed, arrive = heapq.heappop(queue)
        if arrive:
            index = road_map.lane_index[lane_id]
            if index not in found:
                node, path = (lane_id, changed), []
                while node in previous:
                    path.append(node)
                    node = previous[node]
                found[index] = (cost, [(start_id, False)] + path[::-1])
            continue
        if cost > best.get((lane_id, changed), np.inf):
            continue
        lane = road_map.lane(lane_id)
        moves = [(nxt, False, cost, road_map.lane(nxt).length) for nxt in lane.successors]
        if not changed:  # no two lane changes in a row: the chain must stay drivable
            start_of_lane = cost - lane.length  # the change drives the neighbour over the same stretch
            moves += [(nxt, True, start_of_lane + LANE_CHANGE_COST_M, road_map.lane(nxt).length)
                      for nxt in neighbours.get(lane_id, ())]
        for nxt, change, at_start, length in moves:
            node = (nxt, change)
            if at_start + length < best.get(node, np.inf):
                best[node] = at_start + length
                previous[node] = (lane_id, changed)
                heapq.heappush(queue, (at_start + length, nxt, change, False))
                if nxt in goal_s:
                    heapq.heappush(queue, (at_start + goal_s[nxt], nxt, change, True))
    return found


def _best_lane_path(road_map: RoadMap, candidates: list[dict[int, float]], where: str) -> list[tuple[str, bool]]:
    """The shortest lane path through one candidate lane of every waypoint (Viterbi over the candidates: where
    junction connectors overlap, the waypoint after decides which one the route takes)."""
    neighbours = _lane_neighbours(road_map)
    # Per candidate of the current waypoint: (total metres, path so far).
    states = {lane: (0.0, [(road_map.lanes[lane].id, False)]) for lane in candidates[0]}
    for k in range(len(candidates) - 1):
        following: dict[int, tuple[float, list[tuple[str, bool]]]] = {}
        for lane, (total, path) in states.items():
            legs = _paths_to(road_map, lane, candidates[k][lane], candidates[k + 1], neighbours)
            for goal, (cost, leg) in legs.items():
                if total + cost < following.get(goal, (np.inf,))[0]:
                    following[goal] = (total + cost, path + leg[1:])
        if not following:
            raise RouteFileError(f"{where}: waypoints {k} and {k + 1} are not connected on map {road_map.name!r}")
        states = following
    return min(states.values(), key=lambda state: state[0])[1]


def densify(road_map: RoadMap, waypoints: np.ndarray, where: str = "route") -> DenseRoute:
    """The dense route through the waypoints (K, 3) on `road_map`, as the Leaderboard's planner gives it."""
    candidates = [_candidates(road_map, w, f"{where}: waypoint {k}") for k, w in enumerate(waypoints)]
    path = _best_lane_path(road_map, candidates, where)
    chain = [lane_id for k, (lane_id, _) in enumerate(path) if k == 0 or lane_id != path[k - 1][0]]
    polyline = road_map.route_polyline(chain)
    line = shapely.LineString(polyline)
    start_s = candidates[0][road_map.lane_index[path[0][0]]]  # on the first lane (a route may pass its start again)
    # The goal lies on the last lane: project onto it and offset by the chain before it.
    last = road_map.lane_index[chain[-1]]
    end_s = float(line.length - road_map.lane_lengths[last] + road_map.project([last], waypoints[-1][None, :2])[0])
    if end_s <= start_s:
        raise RouteFileError(f"{where}: the last waypoint is not ahead of the first along the route")
    s = np.append(np.arange(start_s, end_s, DENSE_STEP_M), end_s)
    points = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
    return DenseRoute(chain, points, start_s, end_s)


__all__ = ["DENSE_STEP_M", "DenseRoute", "LeaderboardRoute", "RouteFileError", "densify", "read_routes", "town_for"]
