"""CARLA's global route planner, as the Leaderboard densifies routes, on an offline `carla.Map`.

The Leaderboard turns a route's sparse waypoints into its dense route with CARLA's `GlobalRoutePlanner`
(PythonAPI `agents/navigation`, 1 m hop), calling `trace_route` for each pair of consecutive waypoints.
This module is our implementation of that algorithm, step for step, so that the route is the same:

- the topology: every segment of `carla.Map.get_topology()`, sampled with `next(hop)` from its entry
  until within one hop of its exit; graph nodes are segment ends rounded to whole metres;
- edges weighted by their sample count; segments with an unconnected exit continued to the lane's end
  ("loose ends"); zero-cost lane-change edges from a segment's entry to the neighbour segment, at the
  first sample whose lane marking allows the change (outside junctions, same road);
- A* with the Euclidean distance between node positions as heuristic, expanding and breaking ties
  in the order networkx's `astar_path` does (the planner's search), so equal-cost paths come out the same;
- localisation by `carla.Map.get_waypoint` (3-D nearest driving lane, no yaw, no distance limit),
  trusted as is: where junction connector lanes overlap it can pick one that A* reaches only by going
  round a block, and the Leaderboard's route then makes that detour; so does ours;
- the trace: the samples of each edge from the one nearest the current waypoint, a lane change as a jump
  five samples ahead on the neighbour lane, the last leg cut within two hops of the destination, and a
  RoadOption per sample.

A town's graph is built once per process (`planner_for`); the Leaderboard builds it again for each route.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import numpy as np

MAX_SEGMENT_HOPS = 100_000  # a lane segment longer than this many hops (100 km at 1 m) never meets its exit
TURN_THRESHOLD = math.radians(35)  # below this deviation a junction crossing is STRAIGHT
LANE_CHANGE_LOOKAHEAD = 5  # a lane change lands this many samples ahead on the neighbour lane


class RoadOption(IntEnum):
    """CARLA's RoadOption values (agents.navigation.local_planner)."""

    VOID = -1
    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


class NoRouteError(ValueError):
    """No path on the road graph from one waypoint to the next."""


@dataclass
class _Segment:
    entry: object  # carla.Waypoint
    exit: object
    entry_xyz: tuple
    exit_xyz: tuple
    path: list


def _forward(waypoint) -> np.ndarray:
    vector = waypoint.transform.rotation.get_forward_vector()
    return np.array([vector.x, vector.y, vector.z])


def _unit_chord(a, b) -> list[float]:
    """The unit vector from location a to b, with the planner's epsilon in the norm."""
    x, y, z = b.x - a.x, b.y - a.y, b.z - a.z
    norm = np.linalg.norm([x, y, z]) + np.finfo(float).eps
    return [x / norm, y / norm, z / norm]


def _key(waypoint) -> tuple[int, int, int]:
    return waypoint.road_id, waypoint.section_id, waypoint.lane_id


class GlobalRoutePlanner:
    """The road graph of one `carla.Map` at a hop resolution, and routes traced on it."""

    def __init__(self, carla_map, hop_m: float = 1.0):
        import carla

        self._carla = carla
        self.map = carla_map
        self.hop_m = hop_m
        self._segments = [self._segment(a, b) for a, b in carla_map.get_topology()]
        self._vertex: dict[int, tuple] = {}
        self._node_of: dict[tuple, int] = {}
        self._adjacency: dict[int, dict[int, dict]] = {}  # node -> {node: edge attributes}, in insertion order
        self._edge_of_lane: dict[tuple[int, int, int], tuple[int, int]] = {}
        self._build_graph()
        self._add_loose_ends()
        self._add_lane_changes()

    # --- the graph ---------------------------------------------------------------------------------

    def _segment(self, entry, exit_) -> _Segment:
        a, b = entry.transform.location, exit_.transform.location
        rounded = np.round([a.x, a.y, a.z, b.x, b.y, b.z], 0)
        path = []
        if a.distance(b) > self.hop_m:
            following = entry.next(self.hop_m)
            while following and following[0].transform.location.distance(b) > self.hop_m:
                path.append(following[0])
                following = following[0].next(self.hop_m)
                if len(path) > MAX_SEGMENT_HOPS:  # CARLA's planner would walk on forever
                    raise NoRouteError(f"lane segment road {entry.road_id} section {entry.section_id} lane "
                                       f"{entry.lane_id} does not reach its exit within {MAX_SEGMENT_HOPS} hops")
        else:
            following = entry.next(self.hop_m)
            path += following[:1]  # a dead end shorter than a hop (2019 Town03) has no next: an empty path
        return _Segment(entry, exit_, tuple(rounded[:3]), tuple(rounded[3:]), path)

    def _node(self, vertex: tuple) -> int:
        if vertex not in self._node_of:
            node = len(self._node_of)
            self._node_of[vertex] = node
            self._vertex[node] = vertex
            self._adjacency[node] = {}
        return self._node_of[vertex]

    def _add_edge(self, a: int, b: int, **attrs) -> None:
        self._adjacency.setdefault(a, {}).setdefault(b, {}).update(attrs)  # an edge added again is updated, as in a DiGraph
        self._adjacency.setdefault(b, {})

    def _build_graph(self) -> None:
        for segment in self._segments:
            a, b = self._node(segment.entry_xyz), self._node(segment.exit_xyz)
            self._edge_of_lane[_key(segment.entry)] = (a, b)
            self._add_edge(a, b, length=len(segment.path) + 1, path=segment.path, entry_waypoint=segment.entry,
                           exit_waypoint=segment.exit, entry_vector=_forward(segment.entry),
                           exit_vector=_forward(segment.exit),
                           net_vector=_unit_chord(segment.entry.transform.location, segment.exit.transform.location),
                           intersection=segment.entry.is_junction, type=RoadOption.LANEFOLLOW)

    def _add_loose_ends(self) -> None:
        """Segments whose exit lane starts no segment: continue along that lane to its end, as a new edge."""
        loose = 0
        for segment in self._segments:
            end = segment.exit
            key = _key(end)
            if key in self._edge_of_lane:
                continue
            loose += 1
            a, b = self._node_of[segment.exit_xyz], -loose
            self._edge_of_lane[key] = (a, b)
            path = []
            following = end.next(self.hop_m)
            while following and _key(following[0]) == key:
                path.append(following[0])
                following = following[0].next(self.hop_m)
            if path:
                last = path[-1].transform.location
                self._vertex[b] = (last.x, last.y, last.z)
                self._add_edge(a, b, length=len(path) + 1, path=path, entry_waypoint=end, exit_waypoint=path[-1],
                               entry_vector=None, exit_vector=None, net_vector=None, intersection=end.is_junction,
                               type=RoadOption.LANEFOLLOW)

    def _add_lane_changes(self) -> None:
        """Zero-cost edges from a segment's entry to the segment of its left / right neighbour lane, at the first
        sample whose lane marking allows the change (segments outside junctions only)."""
        carla = self._carla
        sides = ((carla.LaneChange.Right, "right_lane_marking", "get_right_lane", RoadOption.CHANGELANERIGHT),
                 (carla.LaneChange.Left, "left_lane_marking", "get_left_lane", RoadOption.CHANGELANELEFT))
        for segment in self._segments:
            if segment.entry.is_junction:
                continue
            found = set()
            for waypoint in segment.path:
                for flag, marking, neighbour_of, option in sides:
                    lane_marking = getattr(waypoint, marking)  # None where the lane has no <roadMark>, as CARLA checks
                    if option in found or lane_marking is None or not lane_marking.lane_change & flag:
                        continue
                    neighbour = getattr(waypoint, neighbour_of)()
                    if (neighbour is None or neighbour.lane_type != carla.LaneType.Driving
                            or neighbour.road_id != waypoint.road_id):
                        continue
                    target = self._localize(neighbour.transform.location)
                    if target is not None:
                        self._add_edge(self._node_of[segment.entry_xyz], target[0], entry_waypoint=waypoint,
                                       exit_waypoint=neighbour, intersection=False, exit_vector=None, path=[],
                                       length=0, type=option, change_waypoint=neighbour)
                        found.add(option)
                if len(found) == 2:
                    break

    def _localize(self, location) -> tuple[int, int] | None:
        """The edge of the lane segment `carla.Map.get_waypoint` puts the location on."""
        return self._edge_of_lane.get(_key(self.map.get_waypoint(location)))

    # --- search --------------------------------------------------------------------------------------

    def _heuristic(self, a: int, b: int) -> float:
        return float(np.linalg.norm(np.array(self._vertex[a]) - np.array(self._vertex[b])))

    def _path_search(self, origin, destination) -> list[int]:
        start, end = self._localize(origin), self._localize(destination)
        if start is None or end is None:
            raise NoRouteError("a waypoint lies on a lane the road graph does not hold")
        return astar_path(self._steps, self._heuristic, start[0], end[0]) + [end[1]]

    def _steps(self, node: int):
        return ((neighbour, edge.get("length", 1)) for neighbour, edge in self._adjacency[node].items())

    # --- the trace -----------------------------------------------------------------------------------

    def trace(self, origin, destination, turns: TurnDecisions) -> list[tuple[object, RoadOption]]:
        """[(carla.Waypoint, RoadOption)] from `origin` to `destination` (carla.Location), as `trace_route`;
        `turns` carries the turn-decision state from one leg of a route to the next."""
        route = self._path_search(origin, destination)
        current = self.map.get_waypoint(origin)
        goal = self.map.get_waypoint(destination)
        trace: list[tuple[object, RoadOption]] = []
        for i in range(len(route) - 1):
            option = turns.decide(self, i, route)
            edge = self._adjacency[route[i]][route[i + 1]]
            if edge["type"] not in (RoadOption.LANEFOLLOW, RoadOption.VOID):
                trace.append((current, option))
                after = self._edge_of_lane[_key(edge["exit_waypoint"])]
                following = self._adjacency[after[0]][after[1]]
                if following["path"]:
                    index = _closest(current, following["path"])
                    current = following["path"][min(len(following["path"]) - 1, index + LANE_CHANGE_LOOKAHEAD)]
                else:
                    current = following["exit_waypoint"]
                trace.append((current, option))
                continue
            samples = [edge["entry_waypoint"], *edge["path"], edge["exit_waypoint"]]
            start = _closest(current, samples)
            last_leg = len(route) - i <= 2
            for waypoint in samples[start:]:
                current = waypoint
                trace.append((current, option))
                if last_leg and waypoint.transform.location.distance(destination) < 2 * self.hop_m:
                    break
                if last_leg and _key(current) == _key(goal) and start > _closest(goal, samples):
                    break
        return trace

    def edge(self, a: int, b: int) -> dict:
        return self._adjacency[a][b]

    def successors(self, node: int):
        return self._adjacency[node].items()


def astar_path(steps, heuristic, source: int, target: int) -> list[int]:
    """The A* path from source to target, expanded and tie-broken as networkx's `astar_path` does (CARLA's planner
    calls it), so that equal-cost paths come out the same. `steps(node)` yields (neighbour, edge cost) in the
    graph's edge order; `heuristic(node, target)` estimates the rest."""
    counter = itertools.count()
    queue = [(0, next(counter), source, 0, None)]
    enqueued: dict[int, tuple[float, float]] = {}
    explored: dict[int, int | None] = {}
    while queue:
        _, _, node, cost, parent = heapq.heappop(queue)
        if node == target:
            path = [node]
            while parent is not None:
                path.append(parent)
                parent = explored[parent]
            return path[::-1]
        if node in explored:
            if explored[node] is None or enqueued[node][0] < cost:
                continue  # the source, or a costlier copy of a node queued again
        explored[node] = parent
        for neighbour, step in steps(node):
            total = cost + step
            if neighbour in enqueued:
                queued, h = enqueued[neighbour]
                if queued <= total:
                    continue
            else:
                h = heuristic(neighbour, target)
            enqueued[neighbour] = total, h
            heapq.heappush(queue, (total + h, next(counter), neighbour, total, node))
    raise NoRouteError(f"no path on the road graph from node {source} to node {target}")


def _closest(waypoint, samples: list) -> int:
    """Index of the sample nearest the waypoint (the first of equals), by CARLA's own distance."""
    location = waypoint.transform.location
    best, index = float("inf"), -1
    for k, sample in enumerate(samples):
        distance = sample.transform.location.distance(location)
        if distance < best:
            best, index = distance, k
    return index


class TurnDecisions:
    """The RoadOption of each route step; one per route, as the planner keeps the last junction's decision
    between the legs of one route."""

    def __init__(self):
        self.previous = RoadOption.VOID
        self.junction_end = -1

    def decide(self, planner: GlobalRoutePlanner, index: int, route: list[int]) -> RoadOption:
        previous_node, node, next_node = route[index - 1], route[index], route[index + 1]
        next_edge = planner.edge(node, next_node)
        decision = None
        if index == 0:
            decision = next_edge["type"]
        elif (self.previous != RoadOption.VOID and self.junction_end > 0 and self.junction_end != previous_node
              and next_edge["type"] == RoadOption.LANEFOLLOW and next_edge["intersection"]):
            decision = self.previous  # still crossing the same junction
        else:
            self.junction_end = -1
            edge = planner.edge(previous_node, node)
            entering = (edge["type"] == RoadOption.LANEFOLLOW and not edge["intersection"]
                        and next_edge["type"] == RoadOption.LANEFOLLOW and next_edge["intersection"])
            if not entering:
                decision = next_edge["type"]
            else:
                end_node, tail = _junction_tail(planner, index, route)
                self.junction_end = end_node
                if tail is not None:
                    next_edge = tail
                cv, nv = edge["exit_vector"], next_edge["exit_vector"]
                if cv is None or nv is None:
                    return next_edge["type"]  # the planner returns here without keeping the decision
                decision = _turn(planner, cv, nv, node, route[index + 1])
        self.previous = decision
        return decision


def _junction_tail(planner: GlobalRoutePlanner, index: int, route: list[int]):
    """(last node, last edge) of the run of junction edges that starts at route[index]."""
    tail, end_node = None, None
    for a, b in zip(route[index:-1], route[index + 1:]):
        edge = planner.edge(a, b)
        if a == route[index]:
            tail = edge
        if edge["type"] == RoadOption.LANEFOLLOW and edge["intersection"]:
            tail, end_node = edge, b
        else:
            break
    return end_node, tail


def _turn(planner: GlobalRoutePlanner, cv: np.ndarray, nv: np.ndarray, node: int, taken: int) -> RoadOption | None:
    """STRAIGHT, LEFT or RIGHT for leaving a junction along `nv` having entered along `cv`, compared with the
    junction's other exits from `node`."""
    others = [np.cross(cv, edge["net_vector"])[2] for neighbour, edge in planner.successors(node)
              if edge["type"] == RoadOption.LANEFOLLOW and neighbour != taken]
    chosen = np.cross(cv, nv)[2]
    deviation = math.acos(np.clip(np.dot(cv, nv) / (np.linalg.norm(cv) * np.linalg.norm(nv)), -1.0, 1.0))
    others = others or [0]
    if deviation < TURN_THRESHOLD:
        return RoadOption.STRAIGHT
    if chosen < min(others):
        return RoadOption.LEFT
    if chosen > max(others):
        return RoadOption.RIGHT
    if chosen < 0:
        return RoadOption.LEFT
    if chosen > 0:
        return RoadOption.RIGHT
    return None


@lru_cache(maxsize=4)
def planner_for(carla_map, hop_m: float = 1.0) -> GlobalRoutePlanner:
    """The planner of a town's carla.Map, built once per process."""
    return GlobalRoutePlanner(carla_map, hop_m)


__all__ = ["GlobalRoutePlanner", "NoRouteError", "RoadOption", "TurnDecisions", "astar_path", "planner_for"]
