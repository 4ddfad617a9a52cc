"""Closed-loop event detection on arrays: ego collisions, off-road, red-light crossings, stop signs run, route progress."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
import shapely.affinity

from sim.geometry import PACIFICA, VehicleParameters, one_box_corners, rectangles_intersect
from sim.map import RoadMap
from sim.state import AgentSlice, AgentType, TrafficLightStatus

ROUTE_STEP_M = 1.0


@dataclass(frozen=True)
class Collision:
    """A contact that began. A server backend also names the CARLA actor hit (`type_id`, `actor_id`)."""

    track_id: str
    agent_type: str  # AgentType name, lower case
    ego_speed: float
    type_id: str = ""
    actor_id: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("type_id", "actor_id") or v not in ("", None)}


@dataclass
class StepEvents:
    """What happened during one 10 Hz step. `collisions` lists contacts that began in this step."""

    time_s: float
    collisions: list[Collision] = field(default_factory=list)
    offroad: bool = False
    red_lights: list[str] = field(default_factory=list)
    stop_signs: list[str] = field(default_factory=list)  # ids of stop signs run (left without stopping)
    route_progress_m: float = 0.0
    route_fraction: float = 0.0

    def as_dict(self) -> dict:
        return {
            "time_s": self.time_s,
            "collisions": [c.as_dict() for c in self.collisions],
            "offroad": self.offroad,
            "red_lights": list(self.red_lights),
            "stop_signs": list(self.stop_signs),
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

    def update(self, previous: np.ndarray, current: np.ndarray, status: np.ndarray,
               vehicle: VehicleParameters = PACIFICA) -> list[str]:
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


class MapCriteria:
    """What each 0.1 s step is judged on against the scene's map, whichever backend moves the world: off-road, red
    lights run, stop signs run, and progress along `route`."""

    def __init__(self, road_map: RoadMap, light_ids: list[str], route: RouteProgress):
        self.map = road_map
        self.route = route
        self.red_lights = RedLightMonitor(road_map, light_ids)
        self.stop_signs = StopSignMonitor(road_map)

    def judge(self, events: StepEvents, previous: np.ndarray, ego: np.ndarray, corners: np.ndarray, lights: np.ndarray,
              vehicle: VehicleParameters) -> None:
        """Fill `events` for the step from `previous` to `ego` (rear-axle states; `corners` the ego's footprint now,
        `lights` the light states now)."""
        events.offroad = is_offroad(corners, self.map)
        events.red_lights = self.red_lights.update(previous, ego, lights, vehicle)
        events.stop_signs = self.stop_signs.update(ego, vehicle)
        route = self.route
        events.route_progress_m = route.update(0.5 * (corners[0] + corners[2]))
        events.route_fraction = float(events.route_progress_m / max(route.length - route.s[route.start_index], 1e-9))


# RunningStopTest (scenario_runner, Leaderboard 2.x) constants.
STOP_PROXIMITY_M = 4.0  # PROXIMITY_THRESHOLD: trigger centre to the ego's lane waypoint
STOP_WAYPOINT_STEP_M = 0.5  # WAYPOINT_STEP: lane waypoints 0..4 m ahead
STOP_SPEED_MPS = 0.1  # SPEED_THRESHOLD: below it the ego has stopped
STOP_TRIGGER_SCALE = 1.2  # point_inside_boundingbox multiplier on the trigger extent
STOP_MIN_DOT = -0.17  # about 100 degrees: reversing / driving against the lane
# Cheap pre-filter on the ego centre before any lane query: a sign can only affect an ego whose lane
# waypoint is within 4 m of the trigger centre, so an ego within 7 m of its lane centreline is covered.
_STOP_SCAN_M = STOP_PROXIMITY_M + 7.0


class StopSignMonitor:
    """RunningStopTest: the ego must be below 0.1 m/s at some step while a stop sign affects it.

    A sign affects the ego when its trigger centre is within 4 m of the ego's lane waypoint (the
    ego centre projected onto its lane) and its trigger footprint, enlarged 1.2 x about its centre,
    strictly contains one of the lane waypoints 0, 0.5, .., 4 m ahead (continuing onto the first
    successor lane). Signs are only looked for when the ego is not reversing (forward speed above
    -0.17 m/s) nor facing against its lane (heading . lane direction >= -0.17). One sign is the
    target at a time; when it stops affecting the ego without the ego having stopped, the sign's
    id is reported (not twice in a row for the same sign, as `_last_failed_stop`). Free when the
    map has no stop signs.
    """

    def __init__(self, road_map: RoadMap):
        self.map = road_map
        signs = road_map.stop_signs
        self.sign_ids = [sign.id for sign in signs]
        self.triggers = [shapely.affinity.scale(sign.trigger, STOP_TRIGGER_SCALE, STOP_TRIGGER_SCALE, origin="centroid")
                         for sign in signs]
        for trigger in self.triggers:
            shapely.prepare(trigger)
        self.centres = np.array([[c.x, c.y] for c in (sign.trigger.centroid for sign in signs)]).reshape(-1, 2)
        self._offsets = np.arange(0.0, STOP_PROXIMITY_M + 1e-9, STOP_WAYPOINT_STEP_M)
        self.target: int | None = None
        self.stopped = False
        self.last_failed: int | None = None

    def update(self, ego: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> list[str]:
        """Ids of stop signs the ego ran in this step (ego: rear-axle state row, vx at column 3)."""
        if not self.sign_ids:
            return []
        centre = ego[:2] + vehicle.rear_axle_to_center * np.array([np.cos(ego[2]), np.sin(ego[2])])
        if self.target is None:
            d2 = ((self.centres - centre) ** 2).sum(axis=1)
            near = np.flatnonzero(d2 < _STOP_SCAN_M * _STOP_SCAN_M)
            if near.size == 0:
                return []
            waypoints, lane_heading = self._waypoints(ego, centre)
            if ego[3] < STOP_MIN_DOT or np.cos(ego[2] - lane_heading) < STOP_MIN_DOT:
                return []
            for k in near.tolist():
                if self._affects(k, waypoints):
                    self.target = k
                    break
            return []
        if not self.stopped and float(np.hypot(ego[3], ego[4])) < STOP_SPEED_MPS:
            self.stopped = True
        waypoints, _ = self._waypoints(ego, centre)
        if self._affects(self.target, waypoints):
            return []
        hits = []
        if not self.stopped and self.last_failed != self.target:
            hits.append(self.sign_ids[self.target])
            self.last_failed = self.target
        self.target, self.stopped = None, False
        return hits

    def _affects(self, k: int, waypoints: np.ndarray) -> bool:
        if np.hypot(*(self.centres[k] - waypoints[0])) > STOP_PROXIMITY_M:
            return False
        return bool(shapely.contains_xy(self.triggers[k], waypoints[:, 0], waypoints[:, 1]).any())

    def _waypoints(self, ego: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, float]:
        """(K, 2) points of the ego's lane centreline 0..4 m ahead of the ego centre's projection, and the lane heading there."""
        road = self.map
        lane = int(road.nearest_lanes(np.array([[centre[0], centre[1], ego[2]]]))[0])
        s0 = float(road.project([lane], centre[None])[0])
        heading = float(road.heading_at([lane], [s0])[0])
        remaining = s0 + self._offsets
        out = np.empty((remaining.size, 2))
        done = np.zeros(remaining.size, dtype=bool)
        for _ in range(8):  # the lane, then first successors (as CARLA's waypoint.next()[0])
            length = road.lane_lengths[lane]
            take = ~done & (remaining <= length + 1e-9)
            if take.any():
                points = shapely.line_interpolate_point(road.lane_centerlines[lane], remaining[take])
                out[take] = shapely.get_coordinates(points)
                done |= take
            successors = road.lanes[lane].successors
            if done.all() or not successors:
                break
            remaining = remaining - length
            lane = road.lane_index[successors[0]]
        # Waypoints stop where the lane graph ends; they are consecutive from the first.
        return out[: int(np.argmin(done)) if not done.all() else done.size], heading


def _segments_intersect(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Segment a-b (2,) against segments c-d (R, 2): proper intersection, vectorised."""
    def cross(o, p, q):
        return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (p[..., 1] - o[..., 1]) * (q[..., 0] - o[..., 0])

    d1, d2 = cross(c, d, a), cross(c, d, b)
    d3, d4 = cross(a, b, c), cross(a, b, d)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def agent_type_name(code: int) -> str:
    return AgentType(int(code)).name.lower()
