"""What PDM-Closed expects the other objects to do over its horizon: one forecast for its proposals and its ranking.

NAVSIM's PDM-Closed moves every object on at constant velocity (spec §3.7 step 5): `"constant_velocity"`.
Real logs forgive that; generated junctions and curves do not, so w0sim's default `"lane_following"`
keeps the speed model but moves vehicles the way traffic moves:
- a vehicle on a lane follows it (and the straightest successors), keeping its lateral offset, instead
  of leaving a curve along its heading into the oncoming lane;
- an object that is braking (its speed fell over the last half second) keeps braking until it stands;
- objects driving along the ego's route queue behind a red stop line or behind a held object in front.
Constant velocity rear-ends such queues: the lead the ego follows keeps moving in the forecast but
stops in the log.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from metrics.observation import Observation
from sim.geometry import principal_value
from sim.map import RoadMap
from sim.state import AgentSlice, AgentType
from sim.traffic import PATH_STEP_M, AgentPaths, Obstacles

FORECASTS = ("constant_velocity", "lane_following")
QUEUE_GAP_M = 1.0  # bumper gap a queued object keeps to the one in front
ON_PATH_M = 2.0  # an object's centre this close to a lane centreline (heading within 45 deg) follows it
LANE_FOLLOWING_MIN_SPEED = 0.5  # m/s; slower objects stay where constant velocity puts them
HORIZON_S = 5.0  # PDM-Closed's proposal horizon: lane paths are built this far ahead (plus slack)


def braking_between(now: AgentSlice, before: AgentSlice, seconds: float) -> np.ndarray:
    """(N,) deceleration of each track (m/s^2, <= 0) from its speed change between two slices of the same
    tracks `seconds` apart; 0 where the track is accelerating or is not seen in both."""
    rate = (now.speed - before.speed) / seconds
    return np.where(now.valid & before.valid, np.minimum(rate, 0.0), 0.0)


@dataclass
class ObjectForecast:
    """Valid objects (M,) of one time step and where they go: `at(t)` gives (x, y, heading, speed) t seconds on."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    direction: np.ndarray  # (M, 2) unit direction of travel (the velocity's, heading when standing)
    braking: np.ndarray  # (M,) m/s^2 <= 0
    length: np.ndarray
    width: np.ndarray
    agent_type: np.ndarray
    track_ids: list[str]
    path_points: np.ndarray | None = None  # (K, 2) route centreline at PATH_STEP_M spacing, for queues
    path_heading: np.ndarray | None = None
    s_on_path: np.ndarray | None = None  # (M,) arc length of the queued objects' projections
    queue_limit: np.ndarray | None = None  # (M,) how far along the path each object may go (inf: free)
    lane_paths: AgentPaths | None = None  # one lane-graph path per lane-following object
    lane_rows: np.ndarray | None = None  # (M,) row in lane_paths, -1 for objects not following a lane
    lane_s0: np.ndarray | None = None  # (M,) arc length of the object on its lane path
    lane_offset: np.ndarray | None = None  # (M,) signed lateral offset from the lane path (left positive)

    @classmethod
    def build(cls, agents: AgentSlice | None, mode: str = "lane_following", braking: np.ndarray | None = None,
              centre_path: tuple[np.ndarray, np.ndarray] | None = None, red_stops: np.ndarray = np.zeros(0),
              road_map: RoadMap | None = None) -> "ObjectForecast":
        """From the objects now; `braking` (N,) aligned with `agents` (see `braking_between`); `centre_path` =
        (points, heading) of the ego's route centreline and `red_stops` the red stop lines' arc lengths on it;
        `road_map` for lane following."""
        if mode not in FORECASTS:
            raise ValueError(f"unknown forecast {mode!r}; expected one of {FORECASTS}")
        if agents is None:
            z = np.zeros(0)
            return cls(z, z, z, z, np.zeros((0, 2)), z, z, z, np.zeros(0, dtype=np.int8), [])
        keep = np.asarray(agents.valid, dtype=bool)
        vx, vy = agents.vx[keep], agents.vy[keep]
        speed, heading = np.hypot(vx, vy), agents.heading[keep]
        moving = speed > 1e-6
        direction = np.where(moving[:, None], np.stack([vx, vy], -1) / np.where(moving, speed, 1.0)[:, None],
                             np.stack([np.cos(heading), np.sin(heading)], -1))
        rates = np.zeros(int(keep.sum()))
        if mode == "lane_following" and braking is not None:
            rates = np.minimum(np.asarray(braking, dtype=np.float64)[keep], 0.0)
        forecast = cls(agents.x[keep], agents.y[keep], heading, speed, direction, rates, agents.length[keep],
                       agents.width[keep], agents.agent_type[keep],
                       [i for i, k in zip(agents.track_ids, keep) if k])
        if mode == "lane_following" and keep.any():
            if road_map is not None:
                forecast._follow_lanes(road_map)
            if centre_path is not None:
                forecast.path_points, forecast.path_heading = centre_path
                forecast.s_on_path, forecast.queue_limit = forecast._queue_limits(np.sort(np.asarray(red_stops)))
        return forecast

    def _follow_lanes(self, road_map: RoadMap) -> None:
        """Lane-graph paths for the moving vehicles and cyclists that sit on a lane in its direction."""
        vehicles = (self.agent_type == int(AgentType.VEHICLE)) | (self.agent_type == int(AgentType.BICYCLE))
        candidates = np.flatnonzero(vehicles & (self.speed > LANE_FOLLOWING_MIN_SPEED))
        if candidates.size == 0:
            return
        poses = np.stack([self.x[candidates], self.y[candidates], self.heading[candidates]], -1)
        lanes = road_map.nearest_lanes(poses)
        s = road_map.project(lanes, poses[:, :2])
        lane_heading = road_map.heading_at(lanes, s)
        dist = shapely.distance(road_map.lane_centerlines[lanes], shapely.points(poses[:, :2]))
        aligned = np.abs(principal_value(poses[:, 2] - lane_heading)) < np.pi / 4
        on_lane = (dist < ON_PATH_M) & aligned
        if not on_lane.any():
            return
        rows, lanes, s = candidates[on_lane], lanes[on_lane], s[on_lane]
        reach = s + self.speed[rows] * HORIZON_S + 10.0
        chains = [_straightest_chain(road_map, road_map.lanes[k].id, need) for k, need in zip(lanes, reach)]
        self.lane_paths = AgentPaths.build(road_map, chains)
        self.lane_rows = np.full(len(self), -1)
        self.lane_rows[rows] = np.arange(len(rows))
        self.lane_s0 = np.zeros(len(self))
        self.lane_s0[rows] = s
        px, py, ph = self.lane_paths.pose_at(s)
        self.lane_offset = np.zeros(len(self))
        self.lane_offset[rows] = -np.sin(ph) * (self.x[rows] - px) + np.cos(ph) * (self.y[rows] - py)

    def __len__(self) -> int:
        return len(self.x)

    def travel(self, t) -> np.ndarray:
        """(..., M) distance each object covers in t seconds (scalar or (T, 1)): constant speed, or braking
        until it stands."""
        v, a = self.speed, self.braking
        stop_t = np.where(a < 0, v / np.where(a < 0, -a, 1.0), np.inf)
        tt = np.minimum(t, stop_t)
        return v * tt + 0.5 * a * tt ** 2

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Box centres, headings and speeds (M,) t seconds from now."""
        return tuple(values[0] for values in self.over(np.array([t])))

    def over(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Box centres, headings and speeds (T, M) at `times` (T,) seconds from now."""
        t = np.asarray(times, dtype=np.float64)[:, None]
        d = self.travel(t)
        x, y = self.x + d * self.direction[:, 0], self.y + d * self.direction[:, 1]
        heading = np.broadcast_to(self.heading, d.shape).copy()
        speed = np.maximum(self.speed + self.braking * t, 0.0)
        if self.lane_paths is not None:
            on = np.flatnonzero(self.lane_rows >= 0)
            s = self.lane_s0[on] + d[:, on]
            rows = np.broadcast_to(self.lane_rows[on], s.shape).ravel()
            px, py, ph = (v.reshape(s.shape) for v in self.lane_paths.pose_at(s.ravel(), rows))
            beyond = np.maximum(s - self.lane_paths.length[self.lane_rows[on]], 0.0)  # past the lanes: straight on
            normal = self.lane_offset[on]
            x[:, on] = px + beyond * np.cos(ph) - normal * np.sin(ph)
            y[:, on] = py + beyond * np.sin(ph) + normal * np.cos(ph)
            heading[:, on] = ph
        if self.queue_limit is not None:
            queued = np.flatnonzero(np.isfinite(self.queue_limit))
            if queued.size:
                limit = self.queue_limit[queued]
                s_t = np.minimum(self.s_on_path[queued] + d[:, queued], limit)
                # A long queue's limits can fall behind the path's start: those cars stay at its start.
                k = np.clip((s_t / PATH_STEP_M).astype(int), 0, len(self.path_points) - 1)
                x[:, queued], y[:, queued] = self.path_points[k, 0], self.path_points[k, 1]
                heading[:, queued] = self.path_heading[k]
                speed[:, queued] = np.where(s_t >= limit, 0.0, speed[:, queued])
        return x, y, heading, speed

    def obstacles(self, times: np.ndarray) -> list[Obstacles]:
        """The objects at each of `times` (T,) as obstacles for the IDM proposals."""
        if len(self) == 0:
            return [Obstacles.none()] * len(times)
        x, y, heading, speed = self.over(times)
        return [Obstacles(x[k], y[k], heading[k], speed[k], self.length, self.width) for k in range(len(times))]

    def observation(self, steps: int, dt: float = 0.1) -> Observation:
        """The forecast as a scorer observation over `steps` steps of `dt` (what the proposals are ranked on)."""
        x, y, heading, speed = self.over(np.arange(steps) * dt)
        if self.lane_paths is None and self.queue_limit is None:
            vx, vy = speed * self.direction[:, 0], speed * self.direction[:, 1]  # NAVSIM: the logged velocity
        else:
            vx, vy = speed * np.cos(heading), speed * np.sin(heading)
        return Observation(x, y, heading, vx, vy, np.ones((steps, len(self)), dtype=bool), self.length, self.width,
                           self.agent_type, list(self.track_ids))

    def _queue_limits(self, red_stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length on the path (M,) of objects following it, and how far each may go (inf: free).

        Walking the queue from its front: an object stops at a red stop line ahead of it, or behind the
        object in front of it when that one stands still or is itself held (a queue discharges slowly).
        """
        points, path_heading = self.path_points, self.path_heading
        m = len(self)
        limit = np.full(m, np.inf)
        d2 = (self.x[:, None] - points[:, 0]) ** 2 + (self.y[:, None] - points[:, 1]) ** 2
        nearest = np.argmin(d2, axis=1)
        s_obj = nearest * PATH_STEP_M
        aligned = np.abs(principal_value(self.heading - path_heading[nearest])) < np.pi / 4
        following = np.flatnonzero((np.sqrt(d2[np.arange(m), nearest]) < ON_PATH_M) & aligned)
        ahead_end = np.inf  # where the back of the held object in front will stand
        for i in following[np.argsort(-s_obj[following])]:  # front of the queue first
            half = 0.5 * self.length[i]
            line = red_stops[red_stops > s_obj[i]]
            bounds = [line[0] - half] if line.size else []
            if np.isfinite(ahead_end):
                bounds.append(ahead_end - half - QUEUE_GAP_M)
            limit[i] = min(bounds) if bounds else np.inf
            braking = self.braking[i] < 0
            held = np.isfinite(limit[i]) or self.speed[i] < 0.5 or braking
            stands_at = s_obj[i] + (self.speed[i] ** 2 / (-2 * self.braking[i]) if braking else 0.0)
            ahead_end = (min(limit[i], stands_at) - half) if held else np.inf
        return s_obj, limit


def _straightest_chain(road_map: RoadMap, lane_id: str, length: float) -> list[str]:
    """The lane and its successors, taking the one that turns least at each fork, until `length` m."""
    chain, total = [lane_id], road_map.lane(lane_id).length
    while total < length:
        successors = [nxt for nxt in road_map.successors(chain[-1]) if nxt not in chain]
        if not successors:
            break
        end = road_map.lane(chain[-1]).centerline
        out = np.arctan2(*(end[-1] - end[-2])[::-1])
        turn = [abs(np.angle(np.exp(1j * (np.arctan2(*(line[-1] - line[0])[::-1]) - out))))
                for line in (road_map.lane(n).centerline for n in successors)]
        chain.append(successors[int(np.argmin(turn))])
        total += road_map.lane(chain[-1]).length
    return chain


__all__ = ["FORECASTS", "ObjectForecast", "braking_between"]
