"""Leaderboard criteria over a closed-loop episode: the simulator's step events become Leaderboard events,
and the episode becomes a route record in the Leaderboard's layout (spec carla_eval §1.2)."""
from __future__ import annotations

import zlib

import numpy as np
import shapely

from metrics.driving_score import (
    BLOCKED_MAX_TIME_S,
    BLOCKED_MIN_SPEED_MPS,
    MIN_SPEED_CHECKPOINTS,
    ROUTE_DEVIATION_MAX_M,
    Event,
    build_route_record,
    collision_event,
    is_route_completed,
    min_speed_checkpoint_value,
    min_speed_event,
    outside_route_lanes_event,
    red_light_event,
    route_completion_percent,
    route_deviation_event,
    route_length,
    route_timeout_event,
    stop_event,
    vehicle_blocked_event,
)
from sim.envs.events import RouteProgress, StepEvents
from sim.map import RoadMap
from sim.state import AgentSlice, AgentType

# CARLA blueprint families, so the Leaderboard's collision classes apply (cyclists are vehicles there).
CARLA_TYPE_IDS = {
    "vehicle": "vehicle.w0sim.car", "bicycle": "vehicle.w0sim.bicycle", "pedestrian": "walker.pedestrian.w0sim",
    "traffic_cone": "static.prop.trafficcone", "barrier": "static.prop.barrier", "czone_sign": "static.prop.czone_sign",
    "generic_object": "static.prop.generic",
}
SAME_ACTOR_S = 5.0  # CollisionTest: MAX_ID_TIME
SAME_PLACE_M = 5.0  # CollisionTest: COLLISION_RADIUS
MIN_COLLISION_SPEED = 0.1  # CollisionTest: EPSILON


class LeaderboardMonitor:
    """Criteria state of one episode: collisions, red lights, stop signs, outside route lanes, deviation, blocked, min speed."""

    def __init__(self, road_map: RoadMap, route: list[str], progress: RouteProgress, light_ids: list[str],
                 route_points: np.ndarray | None = None):
        """`route_points`: the scene's dense route (M, 3), whose length the record reports as the Leaderboard
        measures it; without one, the length of the progress polyline from the ego's start."""
        self.progress = progress
        self._progress_length = float(progress.length - progress.s[progress.start_index])
        self.route_length = self._progress_length if route_points is None else route_length(route_points)
        lanes = shapely.union_all(road_map.lane_polygons[[road_map.lane_index[lane] for lane in route]])
        shapely.prepare(lanes)
        self.route_lanes = lanes
        self.light_index = {lid: i for i, lid in enumerate(light_ids)}
        self.light_position = {lane.traffic_light: lane.centerline[0] for lane in road_map.lanes if lane.traffic_light}
        self.stop_index = {sign.id: i for i, sign in enumerate(road_map.stop_signs)}
        self.stop_position = {sign.id: sign.position for sign in road_map.stop_signs}
        self.events: list[Event] = []
        self._last_collision: dict[str, tuple[float, np.ndarray]] = {}
        self._outside_m = 0.0
        self._still_since: float | None = None
        self._checkpoint = 1
        self._speeds: list[tuple[float, float | None]] = []
        self.ended_by: Event | None = None

    def update(self, step: StepEvents, ego: np.ndarray, agents: AgentSlice, progressed_m: float, frame: int) -> list[Event]:
        """Leaderboard events raised by one 10 Hz step (criteria order); sets `ended_by` when a criterion ends the route."""
        new: list[Event] = []
        where = (float(ego[0]), float(ego[1]), 0.0)
        speed = float(ego[3])
        for hit in step.collisions:
            last = self._last_collision.get(hit.track_id)
            repeated = last is not None and (step.time_s - last[0] < SAME_ACTOR_S
                                             or np.linalg.norm(last[1] - ego[:2]) < SAME_PLACE_M)
            if speed >= MIN_COLLISION_SPEED and not repeated:
                event = collision_event(hit.type_id or CARLA_TYPE_IDS[hit.agent_type],
                                        actor_id(hit.track_id) if hit.actor_id is None else hit.actor_id, where, frame)
                if event is not None:
                    new.append(event)
                self._last_collision[hit.track_id] = (step.time_s, ego[:2].copy())
        for light in step.red_lights:
            x, y = self.light_position.get(light, ego[:2])
            new.append(red_light_event(self.light_index.get(light, -1), (float(x), float(y), 0.0), frame))
        for sign in step.stop_signs:  # RunningStopTest: the event is located at the sign
            x, y = self.stop_position.get(sign, ego[:2])
            new.append(stop_event(self.stop_index.get(sign, -1), (float(x), float(y), 0.0), frame))
        if not self.route_lanes.contains(shapely.Point(ego[0], ego[1])):
            self._outside_m += progressed_m
        new.extend(self._min_speed(speed, agents, frame))
        if self.progress.deviation_m(ego[:2]) >= ROUTE_DEVIATION_MAX_M:
            self.ended_by = route_deviation_event(where, frame)
        self._still_since = None if speed >= BLOCKED_MIN_SPEED_MPS else (
            step.time_s if self._still_since is None else self._still_since)
        if self._still_since is not None and step.time_s - self._still_since > BLOCKED_MAX_TIME_S:
            self.ended_by = vehicle_blocked_event(where, frame)
        self.events.extend(new)
        return new

    def _min_speed(self, ego_speed: float, agents: AgentSlice, frame: int) -> list[Event]:
        """MinimumSpeedRouteTest: ego mean speed vs the surrounding vehicles', per quarter of the route."""
        vehicles = agents.valid & (agents.agent_type == AgentType.VEHICLE)
        self._speeds.append((ego_speed, float(np.mean(agents.speed[vehicles])) if vehicles.any() else None))
        if self.completion_fraction < self._checkpoint / MIN_SPEED_CHECKPOINTS:
            return []
        self._checkpoint += 1
        return self._close_checkpoint(frame)

    def _close_checkpoint(self, frame: int) -> list[Event]:
        ego = float(np.mean([e for e, _ in self._speeds])) if self._speeds else 0.0
        background = [b for _, b in self._speeds if b is not None]
        self._speeds = []
        value = min_speed_checkpoint_value(ego, float(np.mean(background)) if background else None)
        return [min_speed_event(value, frame)] if value < 100.0 else []

    @property
    def completion_m(self) -> float:
        return float(self.progress.s[self.progress.index] - self.progress.s[self.progress.start_index])

    @property
    def completion_fraction(self) -> float:
        return self.completion_m / max(self._progress_length, 1e-9)

    def completion_percent(self) -> float:
        return route_completion_percent(self.completion_m, self._progress_length)

    def route_record(self, index: int, route_id: str, duration_game: float, duration_system: float = -1.0,
                     timed_out: bool = False, frame: int | None = None, external_failure: str = "") -> dict:
        """The route's record: the events so far plus the closing ones (outside lanes, timeout, ending criterion)."""
        completion = self.completion_percent()
        completed = is_route_completed(completion, self.progress.remaining_m)
        events = list(self.events)
        if not completed and completion > 95.0 and self._speeds:  # the last, unfinished checkpoint counts then
            events.extend(self._close_checkpoint(frame))
        if self._outside_m > 0 and self.completion_m > 0:
            events.append(outside_route_lanes_event(self._outside_m, self.completion_m, frame))
        if self.ended_by is not None:
            events.append(self.ended_by)
        if timed_out and not completed:
            events.append(route_timeout_event(frame))
        return build_route_record(index, route_id, self.route_length, completion, events, completed=completed,
                                  duration_game=duration_game, duration_system=duration_system,
                                  external_failure=external_failure)


def actor_id(track_id: str) -> int:
    """A CARLA-style actor id for a track, the same in every process (str hash() is salted per process)."""
    return zlib.crc32(track_id.encode()) % 10_000
