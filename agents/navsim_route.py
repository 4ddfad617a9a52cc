"""NAVSIM's PDM-Closed route handling on a RoadMap: the roadblock graph, route correction, starting lane, centerline.

A roadblock is a lane group (nuPlan: roadblock, or roadblock connector when it holds lane connectors). Written
from NAVSIM's behaviour (spec navsim_pdm.md §3.7 steps 1-3, NAVSIM's `route_utils`, breadth-first roadblock search
and lane Dijkstra): ties resolve as NAVSIM's lists do, first in map order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import shapely

from agents.navsim_path import discrete_path
from sim.map import RoadMap

CANDIDATE_RADIUS_M = 1.0  # roadblocks within this box half-size of the rear axle are start candidates
MAX_HEADING_ERROR = np.pi / 4
MAX_DISPLACEMENT_M = 3.0
BACKWARD_SEARCH_DEPTH, FORWARD_SEARCH_DEPTH = 15, 30
CENTERLINE_ROADBLOCKS = 30  # Dijkstra targets the last of this many route roadblocks from the start lane's
LOOP_OVERLAP_M2 = 1.0  # a roadblock connector overlapping an earlier one by more than this closes a loop


def normalize_angle(angle):
    return np.arctan2(np.sin(angle), np.cos(angle))


@dataclass
class Roadblock:
    id: str
    is_connector: bool
    lanes: list[str]  # interior lanes in map order
    polygon: shapely.Geometry
    outgoing: list[str]
    incoming: list[str]


class RoadblockGraph:
    """The lane groups of a RoadMap as nuPlan's roadblock graph (built once per map, see `roadblock_graph`).

    Order (NAVSIM's lists follow the map file's fid order): roadblocks with an area polygon in area order, other
    roadblocks in lane order, then roadblock connectors in lane order. A group without its own polygon gets the
    union of its lanes' polygons, as w0sim's nuPlan writer stores it.
    """

    def __init__(self, road_map: RoadMap):
        self.map = road_map
        members: dict[str, list[str]] = {}
        for lane in road_map.lanes:
            members.setdefault(lane.lane_group, []).append(lane.id)
        areas = {a.id: a.polygon for a in road_map.areas if a.kind == "roadblock"}
        connector = {g: road_map.lane(ids[0]).is_connector for g, ids in members.items()}
        order = [a for a in areas if a in members and not connector[a]]
        order += [g for g in members if not connector[g] and g not in areas]
        order += [g for g in members if connector[g]]
        self.blocks: dict[str, Roadblock] = {}
        for group in order:
            lanes = members[group]
            polygon = areas.get(group) if not connector[group] else None
            if polygon is None:
                polygon = shapely.union_all(shapely.make_valid(
                    np.array([road_map.lane_polygons[road_map.lane_index[i]] for i in lanes], dtype=object)))
            self.blocks[group] = Roadblock(group, connector[group], lanes, polygon,
                                           self._linked(lanes, "successors"), self._linked(lanes, "predecessors"))
        self.ids = list(self.blocks)
        self._polygons = np.array([b.polygon for b in self.blocks.values()], dtype=object)
        self._is_connector = np.array([b.is_connector for b in self.blocks.values()], dtype=bool)
        self._tree = shapely.STRtree(self._polygons)
        self.lane_paths = {lane.id: discrete_path(lane.centerline) for lane in road_map.lanes}

    def _linked(self, lanes: list[str], direction: str) -> list[str]:
        road_map, group = self.map, self.map.lane(lanes[0]).lane_group
        linked = sorted({road_map.lane_index[n] for lane in lanes for n in getattr(road_map.lane(lane), direction)})
        out: list[str] = []
        for index in linked:
            other = road_map.lanes[index].lane_group
            if other != group and other not in out:
                out.append(other)
        return out

    def near(self, point: np.ndarray, radius: float) -> list[str]:
        """Roadblocks, then roadblock connectors, whose polygon meets the square of half size `radius`."""
        box = shapely.box(point[0] - radius, point[1] - radius, point[0] + radius, point[1] + radius)
        hits = np.sort(self._tree.query(box, predicate="intersects"))
        return [self.ids[i] for i in hits[~self._is_connector[hits]]] + [self.ids[i] for i in hits[self._is_connector[hits]]]

    def nearest(self, point: np.ndarray, connectors: bool) -> str | None:
        """The roadblock (or connector) nearest a point."""
        indices = np.flatnonzero(self._is_connector == connectors)
        if not len(indices):
            return None
        distance = shapely.distance(self._polygons[indices], shapely.Point(point))
        return self.ids[indices[int(np.argmin(distance))]]

    def lane_roadblock(self, lane_id: str) -> str:
        return self.map.lane(lane_id).lane_group

    def successors(self, lane_id: str) -> list[str]:
        """A lane's outgoing lanes in map order."""
        road_map = self.map
        return [road_map.lanes[i].id for i in sorted(road_map.lane_index[n] for n in road_map.lane(lane_id).successors)]


def roadblock_graph(road_map: RoadMap) -> RoadblockGraph:
    """The map's roadblock graph, built on first use and kept with the map."""
    graph = road_map.__dict__.get("_navsim_roadblock_graph")
    if graph is None:
        graph = RoadblockGraph(road_map)
        road_map.__dict__["_navsim_roadblock_graph"] = graph
    return graph


def _start_candidates(graph: RoadblockGraph, pose: np.ndarray, route: list[str]) -> tuple[str, list[str]]:
    """The most likely roadblock under the rear axle, and the candidates it was chosen from."""
    candidates = graph.near(pose[:2], CANDIDATE_RADIUS_M)
    if not candidates:
        candidates = [b for b in (graph.nearest(pose[:2], False), graph.nearest(pose[:2], True)) if b is not None]
    on_route, on_route_errors, others, other_errors, block_errors = [], [], [], [], []
    for block in candidates:
        best_displacement = np.inf
        for lane in graph.blocks[block].lanes:
            path = graph.lane_paths[lane]
            distance = ((path[:, :2] - pose[None, :2]) ** 2.0).sum(axis=-1) ** 0.5
            k = int(np.argmin(distance))
            heading_error = np.abs(normalize_angle(path[k, 2] - pose[2]))
            best_displacement = min(best_displacement, distance[k])
            if heading_error < MAX_HEADING_ERROR and distance[k] < MAX_DISPLACEMENT_M:
                if block in route:
                    on_route.append(block), on_route_errors.append(distance[k])
                else:
                    others.append(block), other_errors.append(distance[k])
        block_errors.append(best_displacement)
    if on_route:
        return on_route[int(np.argmin(on_route_errors))], on_route
    if others:
        return others[int(np.argmin(other_errors))], others
    return candidates[int(np.argmin(block_errors))], candidates


def _breadth_first(graph: RoadblockGraph, start: str, targets: list[str], max_depth: int,
                   forward: bool = True) -> tuple[list[str], bool]:
    """NAVSIM's roadblock BFS (no visited set; depth-limited): the path start -> target (backward: target -> start)."""
    queue: deque = deque([start, None])
    parent: dict[tuple[str, int], str | None] = {(start, 1): None}
    end, end_depth, depth, found = start, 1, 1, False
    while queue:
        current = queue.popleft()
        if depth > max_depth:
            break
        if current is None:
            depth += 1
            queue.append(None)
            if queue[0] is None:
                break
            continue
        if current in targets:
            end, end_depth, found = current, depth, True
            break
        block = graph.blocks[current]
        for neighbour in block.outgoing if forward else block.incoming:
            queue.append(neighbour)
            parent[(neighbour, depth + 1)] = current
            end, end_depth = neighbour, depth + 1
    path = [end]
    while parent[(end, end_depth)] is not None:
        end = parent[(end, end_depth)]
        end_depth -= 1
        path.append(end)
    if forward:
        path.reverse()
    return path, found


def correct_route(graph: RoadblockGraph, rear_axle: np.ndarray, route: list[str]) -> list[str]:
    """NAVSIM's route correction: splice in the start roadblock, fill gaps between route roadblocks, cut loops."""
    route = list(dict.fromkeys(route))
    start, candidates = _start_candidates(graph, rear_axle, route)
    if start not in route:
        path, found = _breadth_first(graph, route[0], candidates, BACKWARD_SEARCH_DEPTH, forward=False)
        if found:
            route[:0] = path[:-1]
        else:
            path, found = _breadth_first(graph, start, route[:3], FORWARD_SEARCH_DEPTH)
            if found:
                route = path + route[route.index(path[-1]) + 1:]
    gaps = {}
    for i in range(len(route) - 1):
        if route[i] in graph.blocks[route[i + 1]].incoming:
            continue
        path, found = _breadth_first(graph, route[i], [route[i + 1]], FORWARD_SEARCH_DEPTH)
        if found and len(path) >= 3:
            gaps[i] = path[1:-1]
    offset = 1
    for i, path in gaps.items():
        route[i + offset : i + offset] = path
        offset += len(path)
    return _cut_loops(graph, route)


def _cut_loops(graph: RoadblockGraph, route: list[str]) -> list[str]:
    """The route up to the first roadblock connector that overlaps an earlier one (a loop through a junction)."""
    seen: list[shapely.Geometry] = []
    for index, block_id in enumerate(route):
        block = graph.blocks[block_id]
        if not block.is_connector:
            continue
        if seen and index > 0:
            tree = shapely.STRtree(seen)
            if any(shapely.intersection(seen[k], block.polygon).area > LOOP_OVERLAP_M2 for k in tree.query(block.polygon)):
                return route[:index]
        seen.append(block.polygon)
    return route


def route_lanes(graph: RoadblockGraph, route: list[str]) -> list[str]:
    """Every interior lane of every route roadblock (NAVSIM's route lane dict)."""
    return list(dict.fromkeys(lane for block in dict.fromkeys(route) for lane in graph.blocks[block].lanes))


def starting_lane(graph: RoadblockGraph, lanes: list[str], at_rear_axle: list[str], rear_axle: np.ndarray,
                  footprint: shapely.Polygon, center: np.ndarray) -> str:
    """The route lane to plan from: of the route lanes under the rear axle (`at_rear_axle`, from the drivable map)
    the one whose nearest vertex heads most like the ego; else the first route lane holding the box centre, else
    the one nearest the footprint."""
    route = set(lanes)
    candidates = [lane for lane in at_rear_axle if lane in route]
    if candidates:
        errors = []
        for lane in candidates:
            path = graph.lane_paths[lane]
            distance = ((rear_axle[None, :2] - path[:, :2]) ** 2).sum(axis=-1) ** 0.5
            errors.append(np.abs(normalize_angle(path[int(np.argmin(distance)), 2] - rear_axle[2])))
        return candidates[int(np.argmin(np.abs(errors)))]
    road_map, best, closest = graph.map, None, np.inf
    for lane in lanes:
        polygon = road_map.lane_polygons[road_map.lane_index[lane]]
        if polygon.contains(shapely.Point(center)):
            return lane
        distance = polygon.distance(footprint)
        if distance < closest:
            best, closest = lane, distance
    return best


def _dijkstra(graph: RoadblockGraph, start: str, allowed: set[str], target: str) -> list[str]:
    """NAVSIM's lane Dijkstra (cost: lane length; a list queue, ties to the earliest entry); when the target
    roadblock is unreachable, the cheapest of the deepest lanes expanded."""
    road_map = graph.map
    queue, dist, depth, parent = [start], [1.0], [1], {start: None}
    expanded, expanded_dist, expanded_depth = [], [], []
    end = start
    found = False
    while queue:
        d, k = min((value, idx) for idx, value in enumerate(dist))
        current, current_depth = queue[k], depth[k]
        del dist[k], queue[k], depth[k]
        if graph.lane_roadblock(current) == target:
            end, found = current, True
            break
        expanded.append(current), expanded_dist.append(d), expanded_depth.append(current_depth)
        for nxt in graph.successors(current):
            if nxt not in allowed:
                continue
            alt = d + float(road_map.lane_centerlines[road_map.lane_index[nxt]].length)
            if nxt not in expanded and nxt not in queue:
                parent[nxt] = current
                queue.append(nxt), dist.append(alt), depth.append(current_depth + 1)
            elif nxt in queue:
                j = queue.index(nxt)
                if alt < dist[j]:
                    parent[nxt], dist[j], depth[j] = current, alt, current_depth + 1
    if not found:
        deepest = max(expanded_depth)
        _, best = min((expanded_dist[i], i) for i in range(len(expanded)) if expanded_depth[i] == deepest)
        end = expanded[best]
    path = [end]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]


def centerline_lanes(graph: RoadblockGraph, route: list[str], lanes: list[str], start: str) -> list[str]:
    """The lanes of the centerline: Dijkstra from the start lane over route lanes to the last roadblock of the
    window of CENTERLINE_ROADBLOCKS route roadblocks that begins at the start lane's roadblock."""
    route = list(dict.fromkeys(route))
    block = graph.lane_roadblock(start)
    first = route.index(block) if block in route else 0
    window = route[first : first + CENTERLINE_ROADBLOCKS]
    return _dijkstra(graph, start, set(lanes), window[-1])


def centerline_poses(graph: RoadblockGraph, lanes: list[str]) -> np.ndarray:
    """(K, 3) the lanes' discrete paths one after another (shared end points kept, as NAVSIM concatenates them)."""
    return np.concatenate([graph.lane_paths[lane] for lane in lanes])


__all__ = ["RoadblockGraph", "centerline_lanes", "centerline_poses", "correct_route", "roadblock_graph",
           "route_lanes", "starting_lane"]
