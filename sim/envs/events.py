"""Closed-loop event detection on arrays: ego collisions, off-road, red-light crossings, route progress."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.geometry import PACIFICA, VehicleParameters, box_corners
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
    """What happened during one 10 Hz step."""

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
    boxes = shapely.polygons(box_corners(agents.x[candidates], agents.y[candidates], agents.heading[candidates],
                                         agents.length[candidates], agents.width[candidates]))
    return candidates[shapely.intersects(shapely.Polygon(corners), boxes)]


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
        return float(self.s[self.index] - self.s[self.start_index])

    @property
    def remaining_m(self) -> float:
        return float(self.length - self.s[self.index])


class RedLightMonitor:
    """Detects the ego's front axle crossing the entry line of a lane whose light is red."""

    def __init__(self, road_map: RoadMap, light_ids: list[str]):
        column = {lid: i for i, lid in enumerate(light_ids)}
        entries = [(lane, column[lane.traffic_light]) for lane in road_map.lanes if lane.traffic_light in column]
        self.light_ids = light_ids
        self.columns = np.array([c for _, c in entries], dtype=np.int64)
        self.left = np.array([lane.left_boundary[0] for lane, _ in entries]).reshape(-1, 2)
        self.right = np.array([lane.right_boundary[0] for lane, _ in entries]).reshape(-1, 2)
        d = np.array([lane.centerline[1] - lane.centerline[0] for lane, _ in entries]).reshape(-1, 2)
        self.direction = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        self.reported: set[str] = set()

    def update(self, previous: np.ndarray, current: np.ndarray, status: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> list[str]:
        """Ids of red lights whose stop line the ego's front crossed between two states (once per light)."""
        if self.columns.size == 0:
            return []
        b = current[:2] + vehicle.wheel_base * np.array([np.cos(current[2]), np.sin(current[2])])
        # Only stop lines within reach of this step can be crossed (usually none).
        near = np.flatnonzero(np.abs(self.left - b).sum(axis=1) < 20.0)
        if near.size == 0:
            return []
        a = previous[:2] + vehicle.wheel_base * np.array([np.cos(previous[2]), np.sin(previous[2])])
        crossed = _segments_intersect(a, b, self.left[near], self.right[near]) & (self.direction[near] @ (b - a) > 0)
        red = status[self.columns[near]] == TrafficLightStatus.RED
        hits = []
        for k in near[crossed & red]:
            light = self.light_ids[self.columns[k]]
            if light not in self.reported:
                self.reported.add(light)
                hits.append(light)
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
