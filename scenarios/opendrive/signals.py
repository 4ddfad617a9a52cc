"""Traffic lights, stop signs and speed limits of a CARLA town, attached to the sampled lanes."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict

import numpy as np
import shapely

from scenarios.opendrive.frames import carla_to_local
from scenarios.opendrive.lanes import LaneKey, SampledLane, predecessor_map
from sim.map import StopSign
from sim.traffic import SignalPlan

TRAFFIC_LIGHT, STOP_SIGN, SPEED_LIMIT = "1000001", "206", "274"  # OpenDRIVE signal types CARLA reads
GREEN_S, YELLOW_S, ALL_RED_S = 10.0, 3.0, 2.0  # CARLA's default traffic-light timings
MIN_INCOMING_ROADS = 4  # where a town has no signals, junctions of 4+ incoming roads get lights
S_TOLERANCE_M = 1.0  # a landmark's s may sit up to one sample beyond a segment's sampled range
STOP_TRIGGER_LENGTH_M = 3.0  # stop-sign trigger box along the approach lane, ending at the junction


def _by_road(sampled: dict[LaneKey, SampledLane]) -> dict[int, list[SampledLane]]:
    by_road: dict[int, list[SampledLane]] = defaultdict(list)
    for lane in sampled.values():
        by_road[lane.key[0]].append(lane)
    return by_road


def _referenced_lanes(landmark, by_road: dict[int, list[SampledLane]]) -> list[SampledLane]:
    """Lane segments a landmark applies to: its road, the section holding its s, its lanes.

    Its lanes are the validity ranges when given, else the driving direction of its orientation
    ('Positive' = along increasing s = right-hand lanes with negative ids).
    """
    validities = landmark.get_lane_validities()
    orientation = str(landmark.orientation)
    found = []
    for lane in by_road.get(landmark.road_id, []):
        lo, hi = lane.s_range
        if not lo - S_TOLERANCE_M <= landmark.s <= hi + S_TOLERANCE_M:
            continue
        lane_number = lane.key[2]
        if validities:
            applies = any(a <= lane_number <= b for a, b in validities)
        else:
            applies = orientation == "Both" or (lane_number < 0) == (orientation == "Positive")
        if applies:
            found.append(lane)
    return found


def _entry_connectors(lane: SampledLane, sampled: dict[LaneKey, SampledLane]) -> list[SampledLane]:
    """The junction lanes a landmark's lane leads into: itself when in a junction, else its junction successors."""
    if lane.junction_id is not None:
        return [lane]
    return [sampled[k] for k in lane.successors if sampled[k].junction_id is not None]


def _signal_plans(lights: dict[LaneKey, str], sampled: dict[LaneKey, SampledLane]) -> list[SignalPlan]:
    """One plan per junction, each light its own phase (CARLA's traffic-light groups), counter-clockwise."""
    starts: dict[int, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for key, light in lights.items():
        starts[sampled[key].junction_id][light].append(sampled[key].points[0])
    plans = []
    for junction in sorted(starts):
        by_light = {light: np.mean(points, axis=0) for light, points in starts[junction].items()}
        centre = np.mean(list(by_light.values()), axis=0)
        order = sorted(by_light, key=lambda l: np.arctan2(*(by_light[l] - centre)[::-1]))
        plans.append(SignalPlan(tuple(order), tuple((l,) for l in order), GREEN_S, YELLOW_S, ALL_RED_S))
    return plans


def landmark_lights(carla_map, sampled: dict[LaneKey, SampledLane]) -> dict[LaneKey, str]:
    """Light id ("tl_<signal id>") of each connector lane that a traffic-light landmark controls.

    CARLA's towns reference each light from the junction roads it governs, at the lane's entry.
    """
    by_road = _by_road(sampled)
    lights = {}
    for landmark in carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT):
        for lane in _referenced_lanes(landmark, by_road):
            for connector in _entry_connectors(lane, sampled):
                lights[connector.key] = f"tl_{landmark.id}"
    return lights


def synthesised_lights(sampled: dict[LaneKey, SampledLane]) -> dict[LaneKey, str]:
    """Lights for a town without signals: one per incoming road at junctions of MIN_INCOMING_ROADS or more.

    Four, i.e. crossroads: with three, Town03's motorway ramp junctions (both carriageways and a ramp)
    would get lights too; roundabout entries and merges (two incoming roads) stay free either way.
    """
    entries: dict[int, dict[int, list[LaneKey]]] = defaultdict(lambda: defaultdict(list))
    for lane in sampled.values():
        if lane.junction_id is None:
            for connector in _entry_connectors(lane, sampled):
                entries[connector.junction_id][lane.key[0]].append(connector.key)
    lights = {}
    for junction, by_road in entries.items():
        if len(by_road) >= MIN_INCOMING_ROADS:
            for road, keys in by_road.items():
                lights.update({key: f"tl_j{junction}_r{road}" for key in keys})
    return lights


def traffic_lights(carla_map, sampled: dict[LaneKey, SampledLane]) -> tuple[dict[LaneKey, str], list[SignalPlan]]:
    """Light id per controlled connector lane, and the junctions' signal plans (synthesised if the map has none)."""
    lights = landmark_lights(carla_map, sampled) or synthesised_lights(sampled)
    return lights, _signal_plans(lights, sampled)


def speed_limits(carla_map, sampled: dict[LaneKey, SampledLane]) -> dict[LaneKey, float]:
    """Speed limit (m/s) per lane from speed signs, carried downstream until the next sign.

    CARLA keeps a vehicle's limit from the last sign it passed: a signed lane takes its first sign
    in driving direction and hands its last one on; an unsigned lane takes what the nearest signed
    lane upstream (by driven distance) hands on; lanes no sign reaches keep the town default.
    The signs' values are km/h (the towns' xodr label them 'mph', CARLA reads them as km/h).
    """
    by_road = _by_road(sampled)
    signs: dict[LaneKey, list[tuple[float, float]]] = defaultdict(list)  # (position along the lane, m/s)
    for landmark in carla_map.get_all_landmarks_of_type(SPEED_LIMIT):
        for lane in _referenced_lanes(landmark, by_road):
            along = landmark.s if lane.key[2] < 0 else -landmark.s  # negative lane ids drive along increasing s
            signs[lane.key].append((along, landmark.value / 3.6))
    queue = [(0.0, key, 0.0) for key in signs]
    limits: dict[LaneKey, float] = {}
    while queue:
        dist, key, inflow = heapq.heappop(queue)
        if key in limits:
            continue
        ordered = [value for _, value in sorted(signs[key])] or [inflow]
        limits[key] = ordered[0]
        for nxt in sampled[key].successors:
            if nxt not in limits:
                length = float(np.sum(np.linalg.norm(np.diff(sampled[nxt].points, axis=0), axis=1)))
                heapq.heappush(queue, (dist + length, nxt, ordered[-1]))
    return limits


def _box(centre: np.ndarray, heading: float, length: float, width: float) -> shapely.Polygon:
    """Rectangle centred at `centre`, its length along `heading`."""
    c, s = np.cos(heading), np.sin(heading)
    corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [length / 2, width / 2]
    return shapely.Polygon(centre + corners @ np.array([[c, s], [-s, c]]))


def _stop_trigger(approach: SampledLane | None, connector: SampledLane) -> shapely.Polygon:
    """Trigger box over the last STOP_TRIGGER_LENGTH_M of the approach lane (or the connector's first metres)."""
    if approach is not None:
        end, heading, width = approach.points[-1], approach.headings[-1], approach.widths[-1]
        centre = end - STOP_TRIGGER_LENGTH_M / 2 * np.array([np.cos(heading), np.sin(heading)])
    else:
        end, heading, width = connector.points[0], connector.headings[0], connector.widths[0]
        centre = end + STOP_TRIGGER_LENGTH_M / 2 * np.array([np.cos(heading), np.sin(heading)])
    return _box(centre, float(heading), STOP_TRIGGER_LENGTH_M, max(float(width), 1.0))


def stop_signs(carla_map, sampled: dict[LaneKey, SampledLane]) -> list[StopSign]:
    """One StopSign per stop landmark and approach lane, its trigger at the approach's end.

    CARLA's towns reference a stop sign from each junction lane it governs; those leaving the same
    approach lane share one sign. `lane_ids` are the approach lane and those junction lanes.
    """
    by_road, predecessors = _by_road(sampled), predecessor_map(sampled)
    groups: dict[tuple[str, LaneKey | None], tuple[object, list[LaneKey]]] = {}
    for landmark in carla_map.get_all_landmarks_of_type(STOP_SIGN):
        for lane in _referenced_lanes(landmark, by_road):
            for connector in _entry_connectors(lane, sampled):
                approach = next((k for k in predecessors[connector.key] if sampled[k].junction_id is None), None)
                groups.setdefault((landmark.id, approach), (landmark, []))[1].append(connector.key)
    counts = Counter(landmark_id for landmark_id, _ in groups)
    signs, seen = [], Counter()
    for (landmark_id, approach), (landmark, connectors) in groups.items():
        sign_id = f"stop_{landmark_id}" if counts[landmark_id] == 1 else f"stop_{landmark_id}_{seen[landmark_id]}"
        seen[landmark_id] += 1
        loc = landmark.transform.location
        x, y, _ = carla_to_local(loc.x, loc.y, 0.0)
        keys = ([approach] if approach else []) + list(dict.fromkeys(connectors))
        trigger = _stop_trigger(sampled[approach] if approach else None, sampled[connectors[0]])
        signs.append(StopSign(sign_id, np.array([float(x), float(y)]), trigger, tuple(sampled[k].id for k in keys)))
    return signs
