"""Closed-loop event detection on arrays: ego collisions, off-road, red-light crossings, route progress."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.geometry import PACIFICA, VehicleParameters, one_box_corners, rectangles_intersect
from sim.map import RoadMap
from sim.state import AgentSlice, AgentType, TrafficLightStatus

ROUTE_STEP_M = 1.0


@dataclass(frozen=True)
class Collision:
    track_id: str
    agent_type: str  # AgentType name, lower case
    ego_speed: float


@dataclass
class StepEvents:
    """What happened during one 10 Hz step. `collisions` lists contacts that began in this step."""

    time_s: float
    collisions: list[Collision] = field(default_factory=list)
    offroad: bool = False
    red_lights: list[str] = field(default_factory=list)
    route_progress_m: float = 0.0
    route_fraction: float = 0.0

    def as_dict(self) -> dict:
        return {
            "time_s": self.time_s,
            "collisions": [c.__dict__ for c in self.collisions],
            "offroad": self.offroad,
            "red_lights": list(self.red_lights),
            "route_progress_m": self.route_progress_m,
            "route_fraction": self.route_fraction,
        }


def ego_collisions(corners: np.ndarray, agents: AgentSlice) -> np.ndarray:
    """Indices of valid agents whose box overlaps the ego footprint `corners` (4, 2) (broad phase by distance)."""
    centre = 0.5 * (corners[0] + corners[2])  # front-left and rear-right are opposite corners
    ego_reach = float(np.hypot(*(corners[0] - centre)))
    reach = 0.5 * np.hypot(agents.length, agents.width) + ego_reach
    near = agents.valid & ((agents.x - centre[0]) ** 2 + (agents.y - centre[1]) ** 2 < reach * reach)
    candidates = np.flatnonzero(near)
    if candidates.size == 0:
        return candidates
    boxes = [one_box_corners(agents.x[j], agents.y[j], agents.heading[j], agents.length[j], agents.width[j])
             for j in candidates.tolist()]
    return candidates[rectangles_intersect(corners, boxes)]


def is_offroad(corners: np.ndarray, road_map: RoadMap) -> bool:
    """True when a corner of the ego footprint `corners` (4, 2) is outside the drivable area."""
    return not bool(road_map.is_drivable(corners).all())


class RouteProgress:
    """Progress along a route polyline, monotone, searched in a window ahead of the last match."""

    def __init__(self, polyline: np.ndarray, window_m: float = 30.0):
        seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.length = float(cum[-1])
        s = np.arange(0.0, self.length + 1e-9, ROUTE_STEP_M)
        self.points = np.stack([np.interp(s, cum, polyline[:, 0]), np.interp(s, cum, polyline[:, 1])], -1)
        self.s = s
        self._x, self._y = self.points[:, 0].copy(), self.points[:, 1].copy()
        self.window = int(window_m / ROUTE_STEP_M)
        self.index = 0

    def reset(self, xy: np.ndarray) -> None:
        self.index = int(np.argmin(np.linalg.norm(self.points - xy, axis=1)))
        self.start_index = self.index

    def update(self, xy: np.ndarray) -> float:
        """Metres of route covered since `reset`; the matched point never moves backwards."""
        end = self.index + self.window
        dx, dy = self._x[self.index : end] - xy[0], self._y[self.index : end] - xy[1]
        self.index += int(np.argmin(dx * dx + dy * dy))
        return self.progress_m(xy)

    def progress_m(self, xy: np.ndarray) -> float:
        """Metres covered: the matched route point plus the projection onto the segment after it."""
        i = min(self.index, len(self.s) - 2)
        seg_x, seg_y = self._x[i + 1] - self._x[i], self._y[i + 1] - self._y[i]
        along = ((xy[0] - self._x[i]) * seg_x + (xy[1] - self._y[i]) * seg_y) / max(seg_x * seg_x + seg_y * seg_y, 1e-12)
        return float(self.s[i] + min(max(along, 0.0), 1.0) * (self.s[i + 1] - self.s[i]) - self.s[self.start_index])

    def deviation_m(self, xy: np.ndarray) -> float:
        """Distance from the matched route point (InRouteTest's measure)."""
        return float(np.hypot(self._x[self.index] - xy[0], self._y[self.index] - xy[1]))

    @property
    def remaining_m(self) -> float:
        return float(self.length - self.s[self.index])


class RedLightMonitor:
    """Detects the ego entering a lane whose light was red when its front axle crossed the stop line.

    Lanes of a junction approach (straight, left, right) share one stop line, so a crossing only
    names candidates; the lane the ego actually takes is decided once it is `decide_after_m` past
    the line, by its distance to each candidate's centerline.
    """

    def __init__(self, road_map: RoadMap, light_ids: list[str], decide_after_m: float = 6.0):
        column = {lid: i for i, lid in enumerate(light_ids)}
        entries = [(lane, column[lane.traffic_light]) for lane in road_map.lanes if lane.traffic_light in column]
        self.light_ids = light_ids
        self.columns = np.array([c for _, c in entries], dtype=np.int64)
        self.centerlines = [shapely.LineString(lane.centerline) for lane, _ in entries]
        self.left = np.array([lane.left_boundary[0] for lane, _ in entries]).reshape(-1, 2)
        self.right = np.array([lane.right_boundary[0] for lane, _ in entries]).reshape(-1, 2)
        d = np.array([lane.centerline[1] - lane.centerline[0] for lane, _ in entries]).reshape(-1, 2)
        self.direction = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        self.decide_after_m = decide_after_m
        self.reported: set[str] = set()
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (entries, red at crossing, crossing point)

    def update(self, previous: np.ndarray, current: np.ndarray, status: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> list[str]:
        """Ids of red lights the ego ran, reported once per light, a few metres after the stop line."""
        if self.columns.size == 0:
            return []
        b = current[:2] + vehicle.wheel_base * np.array([np.cos(current[2]), np.sin(current[2])])
        hits = self._decide(b)
        # Only stop lines within reach of this step can be crossed (usually none).
        near = np.flatnonzero(np.abs(self.left - b).sum(axis=1) < 20.0)
        if near.size:
            a = previous[:2] + vehicle.wheel_base * np.array([np.cos(previous[2]), np.sin(previous[2])])
            crossed = near[_segments_intersect(a, b, self.left[near], self.right[near]) & (self.direction[near] @ (b - a) > 0)]
            if crossed.size:
                self._pending.append((crossed, status[self.columns[crossed]] == TrafficLightStatus.RED, b))
        return hits

    def _decide(self, front: np.ndarray) -> list[str]:
        hits, still_pending = [], []
        for entries, red, crossing in self._pending:
            if np.linalg.norm(front - crossing) < self.decide_after_m:
                still_pending.append((entries, red, crossing))
                continue
            point = shapely.Point(front)
            taken = int(np.argmin([self.centerlines[k].distance(point) for k in entries]))
            light = self.light_ids[self.columns[entries[taken]]]
            if red[taken] and light not in self.reported:
                self.reported.add(light)
                hits.append(light)
        self._pending = still_pending
        return hits


def _segments_intersect(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Segment a-b (2,) against segments c-d (R, 2): proper intersection, vectorised."""
    def cross(o, p, q):
        return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (p[..., 1] - o[..., 1]) * (q[..., 0] - o[..., 0])

    d1, d2 = cross(c, d, a), cross(c, d, b)
    d3, d4 = cross(a, b, c), cross(a, b, d)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def agent_type_name(code: int) -> str:
    return AgentType(int(code)).name.lower()
