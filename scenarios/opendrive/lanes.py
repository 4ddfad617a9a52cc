"""Driving lanes of a parsed CARLA map sampled into arrays (our frame), and the w0sim Lanes built from them."""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from scenarios.opendrive.frames import carla_to_local
from sim.map import Lane

LaneKey = tuple[int, int, int]  # (road id, section id, lane id), as CARLA numbers them
STEP_M = 1.0  # sampling interval along a lane
MIN_GAP_M = 0.05  # closer samples are merged, so no polyline segment is degenerate
MIN_HALF_WIDTH_M = 0.05  # lanes tapering to zero width keep a sliver, so their outline stays a valid polygon
DEFAULT_SPEED_LIMIT = 30.0 / 3.6  # CARLA's town default, m/s


@dataclass
class SampledLane:
    """One driving-lane segment of the topology: (K, 2) centre points, headings and widths in our frame."""

    key: LaneKey
    points: np.ndarray
    headings: np.ndarray
    widths: np.ndarray
    s_range: tuple[float, float]  # road s covered (OpenDRIVE arc length along the road reference)
    junction_id: int | None
    successors: list[LaneKey]

    @property
    def id(self) -> str:
        return lane_id(self.key)

    @property
    def lane_group(self) -> str:
        road, section, lane = self.key
        return f"{road}_{section}_{'+' if lane > 0 else '-'}"


def lane_id(key: LaneKey) -> str:
    """Our lane id of a CARLA (road, section, lane) triple."""
    return "_".join(str(v) for v in key)


def waypoint_key(wp) -> LaneKey:
    """(road, section, lane) of a carla.Waypoint."""
    return wp.road_id, wp.section_id, wp.lane_id


def _waypoint_arrays(wps: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K, 2) points, (K,) headings, widths and road s of carla waypoints, in our frame."""
    raw = np.empty((len(wps), 5))
    for i, wp in enumerate(wps):
        transform = wp.transform
        loc, yaw = transform.location, transform.rotation.yaw
        raw[i] = loc.x, loc.y, yaw, wp.lane_width, wp.s
    x, y, heading = carla_to_local(raw[:, 0], raw[:, 1], raw[:, 2])
    return np.stack([x, y], axis=1), heading, raw[:, 3], raw[:, 4]


def _thin(points: np.ndarray) -> np.ndarray:
    """Indices of the samples to keep: drop those within MIN_GAP_M of their predecessor, keep both ends."""
    gaps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = np.r_[True, gaps > MIN_GAP_M]
    keep[-1] = True
    idx = np.flatnonzero(keep)
    if len(idx) > 2 and np.linalg.norm(points[idx[-1]] - points[idx[-2]]) <= MIN_GAP_M:
        idx = np.delete(idx, -2)
    return idx


def sample_lanes(carla_map, step: float = STEP_M) -> dict[LaneKey, SampledLane]:
    """Every driving-lane segment of the map's topology, sampled about every `step` metres.

    CARLA's topology pairs (start of a segment, start of a successor segment); a segment ends exactly
    where its successor starts, so that start point closes the polyline and links stay gap-free.
    `next_until_lane_end` may run on through later sections of a junction road: cut it at the key change.
    """
    starts: dict[LaneKey, object] = {}
    successors: dict[LaneKey, list[LaneKey]] = defaultdict(list)
    for a, b in carla_map.get_topology():
        ka, kb = waypoint_key(a), waypoint_key(b)
        starts.setdefault(ka, a)
        starts.setdefault(kb, b)
        if kb != ka and kb not in successors[ka]:  # CARLA links some dead ends to themselves
            successors[ka].append(kb)
    lanes = {}
    for key, start in starts.items():
        own = [start, *itertools.takewhile(lambda wp, k=key: waypoint_key(wp) == k, start.next_until_lane_end(step))]
        nxt = successors.get(key, [])
        if nxt:
            own.append(starts[nxt[0]])
        points, headings, widths, s = _waypoint_arrays(own)
        if nxt:  # the successor's s and width belong to its road: close with this lane's own values
            s[-1], widths[-1] = s[-2], widths[-2]
        idx = _thin(points)
        junction = start.get_junction().id if start.is_junction else None
        lanes[key] = SampledLane(key, points[idx], headings[idx], widths[idx], (float(s.min()), float(s.max())),
                                 junction, list(nxt))
    return _splice_out_degenerate(lanes)


def _splice_out_degenerate(lanes: dict[LaneKey, SampledLane]) -> dict[LaneKey, SampledLane]:
    """Drop zero-length segments (Town05's junction roads have hundreds of ~2 cm sections), linking across them.

    Links then close the few centimetres dropped: a lane with one predecessor starts where that one ends,
    otherwise the predecessors' ends move onto its start.
    """
    predecessors = predecessor_map(lanes)
    for key in [k for k, lane in lanes.items() if np.linalg.norm(lane.points[-1] - lane.points[0]) <= MIN_GAP_M]:
        gone, gone_preds = lanes.pop(key), predecessors.pop(key, [])
        for pred in gone_preds:
            lane = lanes[pred]
            lane.successors.remove(key)
            lane.successors.extend(k for k in gone.successors if k != pred and k not in lane.successors)
        for nxt in gone.successors:
            predecessors[nxt] = [p for p in predecessors[nxt] if p != key] + [p for p in gone_preds if p != nxt]
    for key, preds in predecessor_map(lanes).items():
        if len(preds) == 1:
            lanes[key].points[0] = lanes[preds[0]].points[-1]
        else:
            for pred in preds:
                lanes[pred].points[-1] = lanes[key].points[0]
    return lanes


def predecessor_map(sampled: dict[LaneKey, SampledLane]) -> dict[LaneKey, list[LaneKey]]:
    """Predecessor keys of every lane (the reverse of the successor links)."""
    predecessors: dict[LaneKey, list[LaneKey]] = defaultdict(list)
    for key, lane in sampled.items():
        for nxt in lane.successors:
            predecessors[nxt].append(key)
    return predecessors


def boundaries(lane: SampledLane) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) left and right boundaries: the centre offset by half the width along the left normal.

    The inner side of a bend tighter than half a lane width is pulled in to 90 % of the turn radius
    so the outline never folds over itself.
    """
    normal = np.stack([-np.sin(lane.headings), np.cos(lane.headings)], axis=1)  # left of the driving direction
    half = np.maximum(lane.widths / 2.0, MIN_HALF_WIDTH_M)
    ds = np.linalg.norm(np.diff(lane.points, axis=0), axis=1)
    turn = np.angle(np.exp(1j * np.diff(lane.headings)))
    kappa_seg = turn / np.maximum(ds, 1e-9)  # > 0 turning left
    kappa = np.zeros(len(lane.points))
    kappa[:-1] += kappa_seg
    kappa[1:] += kappa_seg
    kappa[1:-1] /= 2.0
    limit = 0.9 / np.maximum(np.abs(kappa), 1e-9)
    left = np.where(kappa > 0, np.minimum(half, limit), half)
    right = np.where(kappa < 0, np.minimum(half, limit), half)
    return lane.points + normal * left[:, None], lane.points - normal * right[:, None]


def build_lanes(sampled: dict[LaneKey, SampledLane], speed_limits: dict[LaneKey, float],
                lights: dict[LaneKey, str]) -> list[Lane]:
    """w0sim Lanes with successor and predecessor links, speed limits and traffic-light ids."""
    predecessors = predecessor_map(sampled)
    lanes = []
    for key, lane in sampled.items():
        left, right = boundaries(lane)
        lanes.append(Lane(
            id=lane.id, centerline=lane.points, left_boundary=left, right_boundary=right,
            speed_limit=speed_limits.get(key, DEFAULT_SPEED_LIMIT), lane_group=lane.lane_group,
            successors=tuple(lane_id(k) for k in lane.successors),
            predecessors=tuple(lane_id(k) for k in predecessors[key]),
            is_connector=lane.junction_id is not None, traffic_light=lights.get(key),
        ))
    return lanes
