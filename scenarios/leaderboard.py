"""CARLA Leaderboard routes: read route XML files, densify each route along a town's lane graph, build closed-loop scenes.

A Leaderboard route lists sparse waypoints in CARLA's frame; the Leaderboard densifies them with
CARLA's global route planner (1 m hops along the road network, lane changes allowed) and scores
route completion on that dense route. Here the same happens on the town's `RoadMap`: a shortest
path over lanes (successor links, plus lane changes to a parallel lane of the same lane group)
between consecutive waypoints gives the route's lane chain (`RoadMap.route_polyline` drives a
lane change along a blend of the two lanes), and a closed-loop `Scene` with the ego standing at the first waypoint and seeded IDM traffic.
"""
from __future__ import annotations

import heapq
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely

from scenarios.opendrive import Town, carla_to_local, load_town
from scenarios.scene import STEP_S, Scene
from sim.map import MapError, RoadMap
from sim.state import AgentTracks, AgentType
from sim.traffic import light_status_table

DENSE_STEP_M = 1.0  # the Leaderboard's route-planner hop
LANE_CHANGE_COST_M = 20.0  # a lane change costs like this much extra driving (keeps routes in lane)
HISTORY_STEPS = 15  # 1.5 s standing start: the agents' history frames
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
    """Lanes one can change into: the other non-connector lanes of the same lane group."""
    groups: dict[str, list[str]] = {}
    for lane in road_map.lanes:
        if not lane.is_connector:
            groups.setdefault(lane.lane_group, []).append(lane.id)
    return {lane_id: tuple(m for m in members if m != lane_id) for members in groups.values() for lane_id in members}


def _candidates(road_map: RoadMap, waypoint: np.ndarray, where: str) -> dict[int, float]:
    """{lane index: arc length} of the lanes a waypoint may lie on: every lane within WAYPOINT_MATCH_M running
    the waypoint's way (at junctions several connectors overlap), else the nearest lane."""
    pose = np.asarray(waypoint, dtype=np.float64).copy()
    if not np.isfinite(pose[2]):
        pose[2] = 0.0
    point = shapely.Point(pose[:2])
    near = road_map.lane_tree.query(point, predicate="dwithin", distance=WAYPOINT_MATCH_M)
    s = road_map.project(near, np.tile(pose[:2], (len(near), 1))) if len(near) else np.zeros(0)
    error = np.abs(np.angle(np.exp(1j * (pose[2] - road_map.heading_at(near, s))))) if len(near) else np.zeros(0)
    aligned = error < MAX_HEADING_ERROR
    if aligned.any():
        return {int(k): float(v) for k, v in zip(near[aligned], s[aligned])}
    lane = int(road_map.nearest_lanes(pose[None])[0])
    distance = shapely.distance(road_map.lane_centerlines[lane], point)
    if distance > WAYPOINT_SNAP_M:
        raise RouteFileError(f"{where} lies {distance:.1f} m from the nearest lane of map {road_map.name!r}")
    return {lane: float(road_map.project([lane], pose[None, :2])[0])}


def _lane_path(road_map: RoadMap, start: int, start_s: float, goals: dict[int, float],
               neighbours: dict[str, tuple[str, ...]]) -> list[tuple[str, bool]]:
    """[(lane id, reached by a lane change)] from the start lane to the nearest of the goal lanes: Dijkstra
    over successor and lane-change edges. The start lane itself counts when its goal point lies ahead."""
    lanes = road_map.lanes
    if start in goals and goals[start] >= start_s - 1e-6:
        return [(lanes[start].id, False)]
    goal_ids = {lanes[g].id for g in goals}
    start_id = lanes[start].id
    best = {(start_id, False): 0.0}
    previous: dict[tuple[str, bool], tuple[str, bool]] = {}
    queue = [(0.0, start_id, False)]
    while queue:
        cost, lane_id, changed = heapq.heappop(queue)
        if lane_id in goal_ids and (lane_id, changed) in previous:
            node, path = (lane_id, changed), []
            while node in previous:
                path.append(node)
                node = previous[node]
            return [(start_id, False)] + path[::-1]
        if cost > best.get((lane_id, changed), np.inf):
            continue
        lane = road_map.lane(lane_id)
        moves = [(nxt, False, road_map.lane(nxt).length) for nxt in lane.successors]
        if not changed:  # no two lane changes in a row: the chain must stay drivable
            moves += [(nxt, True, LANE_CHANGE_COST_M) for nxt in neighbours.get(lane_id, ())]
        for nxt, change, step in moves:
            node = (nxt, change)
            if cost + step < best.get(node, np.inf):
                best[node] = cost + step
                previous[node] = (lane_id, changed)
                heapq.heappush(queue, (cost + step, nxt, change))
    raise MapError(f"map {road_map.name!r}: no path from lane {start_id!r} to any of lanes {sorted(goal_ids)}")


def densify(road_map: RoadMap, waypoints: np.ndarray, where: str = "route") -> DenseRoute:
    """The dense route through the waypoints (K, 3) on `road_map`, as the Leaderboard's planner gives it."""
    neighbours = _lane_neighbours(road_map)
    candidates = [_candidates(road_map, w, f"{where}: waypoint {k}") for k, w in enumerate(waypoints)]
    # Start on the first waypoint's nearest candidate; each leg ends on whichever candidate it reaches first.
    first = min(candidates[0], key=lambda lane: shapely.distance(road_map.lane_centerlines[lane],
                                                                 shapely.Point(waypoints[0][:2])))
    current, current_s = first, candidates[0][first]
    path: list[tuple[str, bool]] = [(road_map.lanes[current].id, False)]
    for k in range(len(waypoints) - 1):
        try:
            leg = _lane_path(road_map, current, current_s, candidates[k + 1], neighbours)
        except MapError as err:
            raise RouteFileError(f"{where}: waypoints {k} and {k + 1} are not connected ({err})") from None
        path.extend(leg[1:])
        current = road_map.lane_index[leg[-1][0]]
        current_s = candidates[k + 1][current]
    chain = [lane_id for k, (lane_id, _) in enumerate(path) if k == 0 or lane_id != path[k - 1][0]]
    polyline = road_map.route_polyline(chain)
    line = shapely.LineString(polyline)
    start_s = candidates[0][first]  # on the first lane (a route may pass its start again later)
    # The goal lies on the last lane: project onto it and offset by the chain before it.
    last = road_map.lane_index[chain[-1]]
    end_s = float(line.length - road_map.lane_lengths[last] + road_map.project([last], waypoints[-1][None, :2])[0])
    if end_s <= start_s:
        raise RouteFileError(f"{where}: the last waypoint is not ahead of the first along the route")
    s = np.append(np.arange(start_s, end_s, DENSE_STEP_M), end_s)
    points = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
    return DenseRoute(chain, points, start_s, end_s)


__all__ = ["DENSE_STEP_M", "DenseRoute", "LeaderboardRoute", "RouteFileError", "densify", "read_routes", "town_for"]
