"""CARLA Leaderboard routes: read route XML files and densify each route as the Leaderboard does.

A Leaderboard route lists sparse waypoints in CARLA's frame; the Leaderboard densifies them with
CARLA's global route planner (1 m hops along the road network, lane changes allowed), one
`trace_route` per pair of consecutive waypoints, and scores route completion on that dense route.
`densify` does the same on the town's offline `carla.Map` with our implementation of that planner
(`scenarios.carla_route_planner`), so the route is the Leaderboard's, detours included, and maps it
onto the town's `RoadMap` lanes. `scenarios.route_scenes` turns it into a closed-loop scene.
"""
from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from scenarios.carla_route_planner import NoRouteError, TurnDecisions, planner_for
from scenarios.opendrive import Town, carla_to_local, load_town
from scenarios.opendrive.lanes import lane_id, waypoint_key
from scenarios.opendrive.validate import MAX_ABS_COORDINATE_M
from sim.map import RoadMap

DENSE_STEP_M = 1.0  # the Leaderboard's route-planner hop
FAR_WAYPOINT_M = 5.0  # a waypoint this far from every driving lane is snapped as CARLA snaps it, with a warning
BRIDGE_LANES = 4  # a gap in the trace's lane chain is bridged by at most this many lanes ...
BACKTRACK_LANES = 3  # ... from at most this many lanes back
MAX_STRAY_POINTS = 5  # trace points in a row on lanes nothing connects (graph-node artefacts) that are skipped
# Route files: ids as the Leaderboard's (it sorts route subsets by int(id)); a town is a file name in the town dir.
ROUTE_ID = re.compile(r"[0-9]+")
TOWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
MAX_WAYPOINTS = 100_000  # per route (the Leaderboard's have 2-100)
MAX_ABS_WAYPOINT_M = MAX_ABS_COORDINATE_M  # as a town's coordinates: CARLA keeps float32 locations
MAX_ABS_YAW_DEG = 1e4
# A route whose waypoints all lie this close to the first is traced by CARLA's planner into a route of no length
# (a leg shorter than 2 hops ends at its first sample): it can never be completed.
MIN_ROUTE_SPAN_M = 2 * DENSE_STEP_M


class RouteFileError(ValueError):
    """A route file cannot be used: names the file, the route and what is wrong."""


class FarWaypointWarning(UserWarning):
    """A route waypoint lies far from every driving lane; CARLA's planner snaps it to the nearest one."""


@dataclass(frozen=True)
class LeaderboardRoute:
    """One `<route>`: waypoints (K, 3) = x, y, heading in w0sim's right-handed frame, and `carla_xyz` (K, 3) as
    the file gives them (CARLA's frame, z included: the planner locates waypoints in 3-D)."""

    route_id: str
    town: str
    waypoints: np.ndarray
    carla_xyz: np.ndarray
    source: str = ""
    metadata: dict = field(default_factory=dict)  # weather and other elements this simulator does not use


@dataclass(frozen=True)
class DenseRoute:
    """A route as the Leaderboard drives it: (M, 3) points x, y, z in our frame (about 1 m apart; a lane change
    is a jump to the neighbour lane), the planner's RoadOption per point, and the lanes of `RoadMap` it runs on.
    (A route record's length is measured as the Leaderboard measures it: `metrics.leaderboard.criteria.route_length`.)"""

    points: np.ndarray
    road_options: np.ndarray
    lane_ids: list[str]
    warnings: tuple[str, ...] = ()

    @property
    def length_m(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


# --- route files -----------------------------------------------------------------------------


def read_routes(path: str | Path) -> list[LeaderboardRoute]:
    """All routes of a Leaderboard route XML (1.0 `<waypoint>` lists, 2.x `<waypoints><position>` lists), checked:
    ids are distinct non-negative integers (the Leaderboard sorts route subsets by int(id)), towns plain names
    (a town is looked up as `<town dir>/<town>.xodr`), waypoints finite and within MAX_ABS_WAYPOINT_M, and a route
    leads somewhere (its waypoints do not all lie within MIN_ROUTE_SPAN_M of the first). Consecutive identical
    waypoints are allowed, as the Leaderboard allows them: CARLA's planner traces a zero-length leg between them."""
    path = Path(path)
    if not path.is_file():
        raise RouteFileError(f"{path}: no such route file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RouteFileError(f"{path}: cannot read the route file ({err})") from None
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise RouteFileError(f"{path}: holds a DTD or entity declaration, which route files do not use")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise RouteFileError(f"{path}: not valid XML ({err})") from None
    if root.tag != "routes":
        raise RouteFileError(f"{path}: root element is <{root.tag}>, expected <routes>")
    routes = [_read_route(path, element) for element in root.iter("route")]
    if not routes:
        raise RouteFileError(f"{path}: holds no <route> elements")
    seen: set[str] = set()
    for route in routes:
        if route.route_id in seen:
            raise RouteFileError(f"{path}: route id {route.route_id} is used by more than one route")
        seen.add(route.route_id)
    return routes


def _read_route(path: Path, element: ElementTree.Element) -> LeaderboardRoute:
    route_id, town = element.get("id"), element.get("town")
    if route_id is None or town is None:
        raise RouteFileError(f"{path}: a <route> lacks its 'id' or 'town' attribute ({element.attrib})")
    if not ROUTE_ID.fullmatch(route_id):
        raise RouteFileError(f"{path}: route id {route_id!r} is not a non-negative integer (as the Leaderboard's "
                             "route ids are)")
    where = f"{path}: route {route_id}"
    if not TOWN_NAME.fullmatch(town):
        raise RouteFileError(f"{where}: town {town!r} is not a town name (letters, digits, '_' and '-')")
    points = element.findall("waypoint") or element.findall("waypoints/position")
    if len(points) < 2:
        raise RouteFileError(f"{where} has {len(points)} waypoints; a route needs at least 2")
    if len(points) > MAX_WAYPOINTS:
        raise RouteFileError(f"{where} has {len(points)} waypoints, more than the bound {MAX_WAYPOINTS}")
    rows = []
    for k, point in enumerate(points):
        try:
            row = [float(point.get("x")), float(point.get("y")), float(point.get("z", "0")),
                   float(point.get("yaw", "nan"))]
        except (TypeError, ValueError):
            raise RouteFileError(f"{where}: waypoint {k} has no numeric x/y ({point.attrib})") from None
        for name, value, bound in zip(("x", "y", "z"), row, (MAX_ABS_WAYPOINT_M,) * 3):
            if not math.isfinite(value) or abs(value) > bound:
                raise RouteFileError(f"{where}: waypoint {k} has {name}={point.get(name)!r}; waypoint coordinates "
                                     f"must be finite and within +-{bound:g} m")
        if point.get("yaw") is not None and not (math.isfinite(row[3]) and abs(row[3]) <= MAX_ABS_YAW_DEG):
            raise RouteFileError(f"{where}: waypoint {k} has yaw={point.get('yaw')!r}; a yaw must be finite and within "
                                 f"+-{MAX_ABS_YAW_DEG:g} degrees")
        rows.append(row)
    rows = np.array(rows)
    reach = np.linalg.norm(rows[:, :3] - rows[0, :3], axis=1)
    if reach.max() < MIN_ROUTE_SPAN_M:
        raise RouteFileError(f"{where}: its waypoints 0..{len(rows) - 1} all lie within {reach.max():.2f} m of "
                             f"waypoint 0; a route must lead at least {MIN_ROUTE_SPAN_M:g} m away (CARLA's planner "
                             "makes a route of no length of it, which can never be completed)")
    x, y, heading = carla_to_local(rows[:, 0], rows[:, 1], rows[:, 3])
    metadata = {"attributes": dict(element.attrib)}
    for child in element:
        if child.tag not in ("waypoint", "waypoints"):
            metadata.setdefault("elements", []).append(ElementTree.tostring(child, encoding="unicode").strip())
    return LeaderboardRoute(route_id, town, np.stack([x, y, heading], -1), rows[:, :3], str(path), metadata)


@lru_cache(maxsize=4)
def town_for(town_dir: str, name: str) -> Town:
    """The town `name` from `<town_dir>/<name>.xodr`, loaded once per process."""
    path = Path(town_dir) / f"{name}.xodr"
    if not path.is_file():
        known = sorted(p.stem for p in Path(town_dir).glob("*.xodr"))
        raise RouteFileError(f"unknown town {name!r}: no {path} (towns in {town_dir}: {', '.join(known) or 'none'})")
    return load_town(path, name)


# --- densification -----------------------------------------------------------------------------


def densify(town: Town, route: LeaderboardRoute) -> DenseRoute:
    """The route's dense route on `town`, as the Leaderboard's `interpolate_trajectory` builds it: one planner
    trace per pair of consecutive waypoints, concatenated. Waypoints far from every lane are snapped (warned)."""
    import carla

    where = f"{route.source}: route {route.route_id}"
    try:
        planner = planner_for(town.carla_map, DENSE_STEP_M)
    except NoRouteError as err:
        raise RouteFileError(f"{where}: the road graph of town {town.name!r} cannot be built ({err})") from None
    locations = [carla.Location(x=float(x), y=float(y), z=float(z)) for x, y, z in route.carla_xyz]
    notes = tuple(_far_waypoint_notes(town.carla_map, locations, where))
    for note in notes:
        warnings.warn(note, FarWaypointWarning, stacklevel=2)
    turns = TurnDecisions()  # the Leaderboard builds one planner per route: its turn state starts afresh
    trace = []
    for k in range(len(locations) - 1):
        try:
            trace += planner.trace(locations[k], locations[k + 1], turns)
        except NoRouteError as err:
            raise RouteFileError(f"{where}: waypoints {k} and {k + 1} are not connected on town {town.name!r} ({err})") \
                from None
    if len(trace) < 2:
        raise RouteFileError(f"{where}: the dense route has {len(trace)} point(s); the waypoints lie on one spot")
    raw = np.array([(w.transform.location.x, w.transform.location.y, w.transform.location.z) for w, _ in trace])
    x, y, _ = carla_to_local(raw[:, 0], raw[:, 1], np.zeros(len(raw)))
    lanes = _lane_chain(town.road_map, [lane_id(waypoint_key(w)) for w, _ in trace], where)
    return DenseRoute(np.stack([x, y, raw[:, 2]], -1), np.array([int(o) for _, o in trace], dtype=np.int8), lanes,
                      notes)


def _far_waypoint_notes(carla_map, locations: list, where: str):
    for k, location in enumerate(locations):
        snapped = carla_map.get_waypoint(location)
        distance = snapped.transform.location.distance(location)
        if distance > FAR_WAYPOINT_M:
            yield (f"{where}: waypoint {k} lies {distance:.1f} m from the nearest driving lane; snapped to it "
                   f"(road {snapped.road_id}, lane {snapped.lane_id}) as CARLA's route planner does")


def _lane_chain(road_map: RoadMap, keys: list[str], where: str) -> list[str]:
    """The `RoadMap` lanes the trace runs on, in order: consecutive repeats dropped and lanes the map splices out
    (zero-length sections) skipped. The trace's lanes do not always follow one another: a lane change lands a few
    samples ahead, maybe past the neighbour lane's end; CARLA's lane-change edge goes wherever `get_waypoint`
    puts the neighbour's position (an overlapping lane of another road); and graph nodes are lane ends rounded
    to whole metres, so at a node the trace can show the start of a sibling lane, or join the end of a short
    junction lane to another lane's start. Where the next lane does not follow, the shortest chain of successors
    and lane changes bridges the gap, from the last lane or, dropping up to BACKTRACK_LANES lanes, from one
    before it; a point on a lane that nothing connects is a stray one and skipped, up to MAX_STRAY_POINTS in a row."""
    chain: list[str] = []
    stray = 0
    for key in keys:
        if key not in road_map.lane_index or (chain and chain[-1] == key):
            continue
        if chain and not _follows(road_map, chain[-1], key):
            for back in range(1, min(len(chain), BACKTRACK_LANES + 1) + 1):
                anchor = chain[-back]
                bridge = [] if back > 1 and anchor == key else _bridge(road_map, anchor, key)
                if bridge is not None:
                    del chain[len(chain) - back + 1:]
                    break
            else:
                stray += 1
                if stray > MAX_STRAY_POINTS:
                    raise RouteFileError(f"{where}: the dense route leaves lane {chain[-1]} for lanes the town's lane "
                                         f"graph does not connect to it (last: {key})")
                continue
            if chain[-1] == key:
                continue
            chain += bridge
        stray = 0
        chain.append(key)
    return chain


def _follows(road_map: RoadMap, a: str, b: str) -> bool:
    return b in road_map.lane(a).successors or road_map.is_lane_change(a, b)


def _bridge(road_map: RoadMap, start: str, goal: str) -> list[str] | None:
    """The lanes strictly between `start` and `goal` on the shortest chain of successors and lane changes with
    at most BRIDGE_LANES lanes between them (breadth first)."""
    frontier, seen = [[start]], {start}
    for _ in range(BRIDGE_LANES + 1):
        following = []
        for chain in frontier:
            for nxt in _next_lanes(road_map, chain[-1]):
                if nxt == goal:
                    return chain[1:]
                if nxt not in seen:
                    seen.add(nxt)
                    following.append(chain + [nxt])
        frontier = following
    return None


def _next_lanes(road_map: RoadMap, lane: str) -> list[str]:
    group = road_map.lane(lane).lane_group
    return [*road_map.lane(lane).successors,
            *(other.id for other in road_map.lanes if other.lane_group == group and road_map.is_lane_change(lane, other.id))]


__all__ = ["DENSE_STEP_M", "DenseRoute", "FarWaypointWarning", "LeaderboardRoute", "RouteFileError", "densify",
           "read_routes", "town_for"]
